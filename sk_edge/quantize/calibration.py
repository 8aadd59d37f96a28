"""Calibration stage: the INT8 range of every tensor that will be quantized.

Runs the FP32 graph with ONNX Runtime on sample images, taps only the tensors the Q/DQ
plan quantizes, and merges their |x| histograms batch by batch (memory does not grow
with the number of images). Writes ``calib.json`` (per-tensor amax, every method's
amax, the histograms, provenance) and ``calib.cache`` (TensorRT's calibration-cache
format, for legacy TensorRT flows).

Changing only the method re-derives amax from the stored histograms; the images run
again only when the model, the image set or the histogram settings change.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from .. import artifacts
from ..backends.onnxruntime import OnnxRuntimeRunner, available_providers
from ..errors import UsageError
from ..images import ImageStream, find_images, sample_paths
from ..preprocess import Preprocess
from ..workdir import CALIB_CACHE, CALIB_JSON, FP32_ONNX, load_export
from .cache import DEFAULT_TRT_VERSION, write_cache
from .histogram import DEFAULT_BINS, StreamingHistogram
from .methods import METHODS, compute_amax
from .plan import QuantPlan, plan_quantization

# Chosen by measurement on the reference model: see the README, "Calibration methods".
DEFAULT_METHOD = "entropy"


@dataclass(frozen=True)
class CalibrationOptions:
    method: str = DEFAULT_METHOD
    percentile: float = 99.99
    num_images: int = 512
    batch: int = 4  # peak memory grows with it; 4 runs as fast as 8 on 2 cores
    bins: int = DEFAULT_BINS
    trt_version: str = DEFAULT_TRT_VERSION

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.num_images < 1:
            raise UsageError(f"--num-images must be at least 1, got {self.num_images}")
        if self.batch < 1:
            raise UsageError(f"--batch must be at least 1, got {self.batch}")


def _providers() -> list[str]:
    # Calibration statistics do not need bit-exactness: use a GPU when ONNX Runtime has one.
    avail = available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


def tapped_model(model: onnx.ModelProto, names: list[str]) -> bytes:
    """``model`` with the tensors ``names`` added as graph outputs."""
    graph = gs.import_onnx(shape_inference.infer_shapes(model))
    tensors = graph.tensors()
    inputs = {t.name for t in graph.inputs}
    for name in names:
        if name in inputs or any(o.name == name for o in graph.outputs):
            continue
        tensor = tensors[name]
        tensor.dtype = tensor.dtype or np.float32
        graph.outputs.append(tensor)
    return gs.export_onnx(graph).SerializeToString()


def collect_histograms(
    model: onnx.ModelProto,
    names: list[str],
    stream: ImageStream,
    bins: int,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[dict[str, StreamingHistogram], str]:
    """Histograms of the tensors ``names`` over every batch of ``stream``."""
    # Every tapped tensor is a graph output held at once; without the arena their memory
    # goes back after each batch (SKNet-50 at 224, batch 8: peak RSS 2.7 -> 2.0 GB).
    runner = OnnxRuntimeRunner(tapped_model(model, names), providers=_providers(), dynamic_batch=True, memory_arena=False)
    session = runner.session
    input_name = session.get_inputs()[0].name
    fetch = [n for n in names if n != input_name]
    histograms = {name: StreamingHistogram(bins) for name in names}
    for batch, batch_names in stream:
        outputs = session.run(fetch, {input_name: batch})
        for name in reversed(fetch):  # popping frees each tensor once it is counted
            histograms[name].update(outputs.pop())
        if input_name in histograms:
            histograms[input_name].update(batch)
        progress(len(batch_names))
    return histograms, session.get_providers()[0]


def amax_by_method(hist: StreamingHistogram, percentile: float) -> dict[str, float]:
    return {m: compute_amax(hist, m, percentile) for m in METHODS}


def clipped_fraction(hist: StreamingHistogram, amax: float) -> float:
    if hist.total == 0 or hist.range == 0:
        return 0.0
    first_clipped = int(np.ceil(amax / hist.bin_width))
    return float(hist.counts[first_clipped:].sum() / hist.total)


def spread_summary(tensors: dict[str, dict], method: str) -> dict:
    """How far each method's amax sits below max, over all tensors; the most clipped ones."""
    ratios = {
        m: [t["amax_by_method"][m] / t["amax_by_method"]["max"] for t in tensors.values() if t["amax_by_method"]["max"] > 0]
        for m in METHODS
    }
    summary = {
        m: {"median_of_max": round(statistics.median(r), 4), "min_of_max": round(min(r), 4)}
        for m, r in ratios.items()
        if r
    }
    worst = sorted(tensors.items(), key=lambda kv: -kv[1]["clipped_fraction"])[:5]
    summary["most_clipped"] = [
        {"tensor": name, "clipped_fraction": t["clipped_fraction"], "amax": t["amax"], "max": t["amax_by_method"]["max"]}
        for name, t in worst
    ]
    summary["method"] = method
    return summary


def _images_fingerprint(paths: list[Path], root: Path) -> str:
    # Names, sizes and modification times: cheap to take for thousands of images, and
    # any edit changes it. The content hash of the images actually used is recorded too.
    return artifacts.stage_key(
        {"images": [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]}
    )


def calibrate(
    workdir: str | Path,
    images_dir: str | Path,
    options: CalibrationOptions = CalibrationOptions(),
    force: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> dict:
    """Calibrate ``workdir``'s FP32 graph on ``images_dir``; return the calib.json document.

    ``progress(total, ...)`` may return a callback that is told how many images each
    batch held.
    """
    options.validate()
    workdir, images_dir = Path(workdir), Path(images_dir)
    export = load_export(workdir)
    model = onnx.load(str(workdir / FP32_ONNX))
    plan = plan_quantization(model)
    names = list(plan.activations)
    paths = sample_paths(find_images(images_dir))
    hist_key = artifacts.stage_key(
        {
            "stage": "calibration-histograms",
            "model_sha256": export["outputs"][FP32_ONNX]["sha256"],
            "images": _images_fingerprint(paths, images_dir),
            "num_images": options.num_images,
            "bins": options.bins,
            "tensors": names,
        }
    )
    key = artifacts.stage_key({"stage": "calibration", "histograms": hist_key, **asdict(options)})
    calib_path = workdir / CALIB_JSON
    if not force and artifacts.is_up_to_date(calib_path, key):
        log(f"{calib_path} is up to date (same model, images and settings); --force recalibrates")
        return artifacts.read_json(calib_path)

    previous = artifacts.read_json(calib_path)
    t0 = time.perf_counter()
    if not force and previous and previous.get("histogram_key") == hist_key:
        log(f"reusing the histograms in {calib_path} (same model and images); choosing amax with '{options.method}'")
        histograms = {n: StreamingHistogram.from_dict(t["histogram"]) for n, t in previous["tensors"].items()}
        images_doc, provider = previous["inputs"]["images"], previous["settings"]["provider"]
    else:
        count = min(options.num_images, len(paths))
        stream = ImageStream(paths, Preprocess.from_dict(export["preprocess"]), options.batch, options.num_images, root=images_dir)
        log(
            f"calibrating {len(names)} tensors on {options.num_images} images from '{images_dir}' "
            f"({len(paths)} found), batch {options.batch} ..."
        )
        tick = progress(count) if progress else (lambda n: None)
        histograms, provider = collect_histograms(model, names, stream, options.bins, tick)
        for name, why in stream.skipped:
            log(f"  skipped unreadable image {name}: {why}")
        images_doc = {
            "dir": str(images_dir),
            "found": len(paths),
            "used": len(stream.used),
            "content_sha256": stream.digest,
            "skipped": [{"file": n, "reason": why} for n, why in stream.skipped],
        }
        log(f"  {len(stream.used)} images in {time.perf_counter() - t0:.1f}s on {provider}")

    tensors = {}
    for name in names:
        hist = histograms[name]
        by_method = amax_by_method(hist, options.percentile)
        amax = by_method[options.method]
        tensors[name] = {
            "amax": amax,
            "scale": amax / 127.0,
            "amax_by_method": by_method,
            "clipped_fraction": clipped_fraction(hist, amax),
            "roles": plan.activations[name],
            "histogram": hist.to_dict(),
        }
    write_cache(workdir / CALIB_CACHE, {n: t["amax"] for n, t in tensors.items()}, options.trt_version)
    doc = artifacts.sidecar(
        "calibration",
        key,
        {CALIB_CACHE: workdir / CALIB_CACHE},
        histogram_key=hist_key,
        inputs={"model": {"path": FP32_ONNX, "sha256": export["outputs"][FP32_ONNX]["sha256"]}, "images": images_doc},
        settings={**asdict(options), "provider": provider},
        method=options.method,
        plan=plan.summary(),
        summary=spread_summary(tensors, options.method),
        tensors=tensors,
    )
    artifacts.write_json(calib_path, doc)
    log(f"wrote {calib_path} and {workdir / CALIB_CACHE} in {time.perf_counter() - t0:.1f}s")
    return doc


def plan_for(workdir: Path) -> QuantPlan:
    return plan_quantization(onnx.load(str(Path(workdir) / FP32_ONNX)))
