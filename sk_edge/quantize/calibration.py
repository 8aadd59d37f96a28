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

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import shape_inference

from .. import artifacts
from ..backends.onnxruntime import available_providers
from ..errors import SkEdgeError, UsageError
from ..evaluation import HOLDOUT_RULE, split_paths
from ..images import ImageStream, find_images, sample_paths
from ..sidecars import CalibrationInfo
from ..workdir import CALIB_CACHE, CALIB_JSON, FP32_ONNX, load_export, read_view
from .bin_counting import counted_with, counting_pool
from .cache import write_cache
from .histogram import NonFiniteValues, StreamingHistogram, finite_top
from .methods import METHODS, compute_amax
from .options import DEFAULT_METHOD, CalibrationOptions  # noqa: F401 - re-exported
from .plan import QuantPlan, plan_quantization
from .tapping import TappedRun, tapped_session


def _providers() -> list[str]:
    # Calibration statistics do not need bit-exactness: use a GPU when ONNX Runtime has one.
    avail = available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


# Float initializers above this many values are weights, not shapes or scales shape inference could read.
_WEIGHT_VALUES = 1024


def with_inferred_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, changed in place, with the value_info ONNX shape inference gives it. Inferred on a copy without
    its weights (dims and types kept): shape inference serialises the whole model twice, 0.4 s for SKNet-50's
    100 MB against 0.06 s for the copy (tests/test_calibration.py checks the value_info is the same)."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for weight in light.graph.initializer:
        if weight.data_type == onnx.TensorProto.FLOAT and math.prod(weight.dims) > _WEIGHT_VALUES:
            weight.ClearField("raw_data")
            weight.ClearField("float_data")
    inferred = shape_inference.infer_shapes(light)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def tapped_model(model: onnx.ModelProto, names: list[str]) -> bytes:
    """``model`` with the tensors ``names`` added as graph outputs."""
    return _with_outputs(shape_inference.infer_shapes(model), names).SerializeToString()


def _with_outputs(inferred: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """tapped_model of a model shape inference has already run on, as a new ModelProto. Outputs are added to the
    protobuf directly, each with the type inference gave it (float32 where it gave none): a graph-surgeon round
    trip of SKNet-50 took 0.3 s for the same."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(inferred)
    graph = tapped.graph
    inferred_types = {v.name: v for v in [*graph.value_info, *graph.output]}
    present = {v.name for v in [*graph.input, *graph.output]}
    for name in dict.fromkeys(names):
        if name in present:
            continue
        output = graph.output.add()
        if name in inferred_types:
            output.CopyFrom(inferred_types[name])
        else:
            output.name = name
        if output.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
            output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return tapped


# ONNX Runtime's memory arena keeps its allocations for the next run, so the tapped tensors (graph outputs, held at
# once) are not allocated afresh every batch, which cost a fifth of calibration's time (SKNet-50 at 224, batch 4,
# 512 images: 100 -> 79 ms per image, interleaved runs of benchmarks/calibration.py's worker). Its chunks grow by
# doubling, so what it holds beyond the live tensors grows with them: +120 MB of peak RSS with 212 MB of tapped
# tensors per batch, +1.0 GB with 1.4 GB (every activation: --legacy-ranges at batch 8). Up to this many bytes of
# tapped tensors per batch the arena is on; above, each batch's memory goes back when it is counted.
ARENA_MAX_TAPPED_BYTES = 1 << 30


# ONNX Runtime's threads spin inside a run (as in the floor's session) but stop when it returns: spinning on after
# the run, they busy-waited on the cores the histograms count on (24-34 -> 21-23 ms of counting per SKNet-50 image
# when spinning was turned off); no spinning at all cost the run itself: 256 images, three alternating fresh runs,
# 18.2, 19.7, 18.6 s without spinning against 18.1, 18.6, 18.0 s with it stopped at each run's end.
COUNTING_BESIDE_RUNS = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


def tapped_bytes_per_image(inferred: onnx.ModelProto, names: list[str]) -> int | None:
    """The bytes of the tensors ``names`` for one image (a batch dimension counts as 1), read from a model shape
    inference has run on; None where one of them has no static shape or type."""
    infos = {v.name: v.type.tensor_type for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    total = 0
    for name in names:
        info = infos.get(name)
        if info is None or info.elem_type == 0 or not all(d.HasField("dim_value") for d in info.shape.dim[1:]):
            return None
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(info.elem_type)).itemsize
        total += math.prod(d.dim_value for d in info.shape.dim[1:]) * itemsize
    return total


def arena_fits(per_image: int | None, batch: int) -> bool:
    """Whether calibration's session keeps ONNX Runtime's memory arena (ARENA_MAX_TAPPED_BYTES says why)."""
    return per_image is not None and per_image * batch <= ARENA_MAX_TAPPED_BYTES


def legacy_tensor_names(model: onnx.ModelProto, planned: list[str], shapes_inferred: bool = False) -> list[str]:
    """Every float activation of ``model`` (node outputs and the input) not in ``planned``."""
    inferred = model if shapes_inferred else shape_inference.infer_shapes(model)
    floats = {
        v.name
        for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
        if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    }
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    seen = set(planned)
    return [n for n in dict.fromkeys(names) if n in floats and n not in seen]


def collect_histograms(
    model: onnx.ModelProto,
    names: list[str],
    stream: ImageStream,
    bins: int,
    progress: Callable[[int], None] = lambda n: None,
    maxima: dict[str, float] | None = None,
    shapes_inferred: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, StreamingHistogram], str]:
    """Histograms of the tensors ``names`` over every batch of ``stream``; with ``maxima`` (a
    dict of tensor name -> 0.0), also the running max |x| of those tensors, in place.
    ``shapes_inferred``: ONNX shape inference has already run on ``model``."""
    maxima = {} if maxima is None else maxima
    extra = list(maxima)
    inferred = model if shapes_inferred else shape_inference.infer_shapes(model)  # for the arena and the tapped graph
    per_image = tapped_bytes_per_image(inferred, names + extra)
    options = {"providers": _providers(), "memory_arena": arena_fits(per_image, stream.batch), "config": COUNTING_BESIDE_RUNS}
    tapped = _with_outputs(inferred, names + extra)
    graph_inputs = {i.name for i in model.graph.input}  # fed, not fetched
    fetch = [n for n in dict.fromkeys(names + extra) if n not in graph_inputs]
    with counting_pool() as pool, tapped_session(tapped, fetch, options, log) as run:  # the pool loads numba meanwhile
        if run.blocked:
            log(f"  {len(run.blocked)} of {len(fetch)} tapped tensors read in ONNX Runtime's blocked layout, without a reorder")
        return _count_batches(run, pool, names, maxima, stream, bins, progress)


def _count_batches(
    run: TappedRun,
    pool: ThreadPoolExecutor,
    names: list[str],
    maxima: dict[str, float],
    stream: ImageStream,
    bins: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, StreamingHistogram], str]:
    """The histograms of ``names`` (and the running max of ``maxima``'s tensors) over every batch of ``stream``."""
    histograms = {name: StreamingHistogram(bins) for name in names}
    for batch, batch_names in stream:
        tapped = run.run(batch)
        if run.input_name in names or run.input_name in maxima:
            tapped[run.input_name] = batch.copy()  # counting uses every tensor of `tapped` as scratch
        _count_in_parallel(pool, tapped, histograms, maxima, batch_names)
        progress(len(batch_names))
    return histograms, run.session.get_providers()[0]


def _count_in_parallel(
    pool: ThreadPoolExecutor,
    tapped: dict[str, np.ndarray],
    histograms: dict[str, StreamingHistogram],
    maxima: dict[str, float],
    images: list[str],
) -> None:
    """Count one batch's tensors on the pool's threads, one tensor per thread at a time, the largest first (so the
    threads finish together). ``tapped`` is emptied: each tensor is freed as soon as it is counted."""
    order = sorted(tapped, key=lambda name: -tapped[name].size)
    counting = [pool.submit(_count_tensor, name, tapped.pop(name), histograms, maxima) for name in order]
    for name, done in zip(order, counting):
        try:
            done.result()
        except NonFiniteValues as exc:
            shown = ", ".join(images[:3]) + (f" and {len(images) - 3} more" if len(images) > 3 else "")
            raise SkEdgeError(
                f"tensor '{name}' of the FP32 graph {exc} on the calibration images {shown}: the model overflows on "
                "them; check its weights and its preprocessing (mean/std) before calibrating"
            ) from None


def _count_tensor(name: str, values: np.ndarray, histograms: dict[str, StreamingHistogram], maxima: dict[str, float]) -> None:
    if name in histograms:
        histograms[name].update(values, consume=True)  # nothing else reads it: its memory is the NumPy path's scratch
    else:
        maxima[name] = max(maxima[name], finite_top(float(np.abs(values).max(initial=0.0))))


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
    summary: dict[str, Any] = {
        m: {"median_of_max": round(statistics.median(r), 4), "min_of_max": round(min(r), 4)} for m, r in ratios.items() if r
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
    return artifacts.stage_key({"images": [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]})


def calibrate(
    workdir: str | Path,
    images_dir: str | Path,
    options: CalibrationOptions = CalibrationOptions(),
    force: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> dict:
    """Calibrate ``workdir``'s FP32 graph on ``images_dir``; return the calib.json document.

    ``progress(total)`` may return a callback that is told how many images each
    batch held.
    """
    options.validate()
    workdir, images_dir = Path(workdir), Path(images_dir)
    export = load_export(workdir)
    model = with_inferred_shapes(onnx.load(str(workdir / FP32_ONNX)))  # once: plan, legacy names, taps
    plan = plan_quantization(model, shapes_inferred=True)
    names = list(plan.activations)
    legacy = legacy_tensor_names(model, names, shapes_inferred=True) if options.legacy_ranges else []
    paths, held_out = _calibration_paths(images_dir, options)
    hist_key = _histogram_key(export, paths, images_dir, options, names, legacy)
    key = artifacts.stage_key({"stage": "calibration", "histograms": hist_key, **asdict(options)})
    calib_path = workdir / CALIB_JSON
    current = None if force else artifacts.up_to_date(calib_path, key)
    if current is not None:
        log(f"{calib_path} is up to date (same model, images and settings); --force recalibrates")
        return current

    previous = None if force else _same_histograms(workdir, hist_key)
    t0 = time.perf_counter()
    if previous is not None:
        log(f"reusing the histograms in {calib_path} (same model and images); choosing amax with '{options.method}'")
        histograms = {n: StreamingHistogram.from_dict(t["histogram"]) for n, t in previous.tensors.items()}
        maxima, images_doc, provider = dict(previous.legacy_ranges or {}), previous.images, previous.provider
        counting = str(previous.settings.get("bin_counting", "?"))
    else:
        histograms, maxima, images_doc, provider = _measure(
            model, names, legacy, paths, held_out, images_dir, export, options, log, progress
        )
        counting = counted_with(histograms.values())
        log(f"  bins counted with {counting}")
    tensors = _tensor_records(names, histograms, options, plan)
    _write_calib_cache(workdir / CALIB_CACHE, tensors, maxima, options.trt_version)
    written = CalibrationInfo.write(
        calib_path,
        workdir / CALIB_CACHE,
        key,
        hist_key,
        export.fp32_sha256,
        images_doc,
        {**asdict(options), "provider": provider, "bin_counting": counting},
        options.method,
        tensors,
        maxima,
        plan=plan.summary(),
        summary=spread_summary(tensors, options.method),
    )
    log(f"wrote {calib_path} and {workdir / CALIB_CACHE} in {time.perf_counter() - t0:.1f}s")
    return written.doc


def _write_calib_cache(path: Path, tensors: dict[str, dict], maxima: dict[str, float], trt_version: str) -> None:
    """The cache: the planned tensors at the chosen method's range, then (for weakly typed builds) every other
    activation at its max; a tensor whose max is 0 (all zeros) gets no line."""
    ranges = {**{n: v for n, v in maxima.items() if v > 0}, **{n: t["amax"] for n, t in tensors.items()}}
    write_cache(path, ranges, trt_version)


def _same_histograms(workdir: Path, hist_key: str) -> CalibrationInfo | None:
    """The calib.json whose histograms were measured on this model and these images: another method reuses them."""
    try:
        previous = read_view(workdir, CALIB_JSON)
    except SkEdgeError:
        return None  # none, or one this sk-edge cannot read: the histograms are measured again
    return previous if previous.histogram_key == hist_key else None


def _calibration_paths(images_dir: Path, options: CalibrationOptions) -> tuple[list[Path], list[Path]]:
    """(the images calibration samples from, the ones held out to judge the build)."""
    found = find_images(images_dir)
    held_out: list[Path] = []
    if options.holdout is not None:
        found, held_out = split_paths(found, images_dir, options.holdout)
        if not found:
            raise UsageError(
                f"every image in '{images_dir}' falls in the part held out to judge the build; add images, "
                "or pass --eval-images DIR with held-out images"
            )
    return sample_paths(found), held_out


def _histogram_key(
    export, paths: list[Path], images_dir: Path, options: CalibrationOptions, names: list[str], legacy: list[str]
) -> str:
    """What the histograms depend on: while it is unchanged, another method reuses them."""
    return artifacts.stage_key(
        {
            "stage": "calibration-histograms",
            "model_sha256": export.fp32_sha256,
            # The pixels the ranges are measured on depend on the preprocessing as much as on the graph: a
            # re-export with another mean/std leaves the graph byte-identical and must still recalibrate.
            "preprocess": export.preprocess_record,
            "images": _images_fingerprint(paths, images_dir),
            "num_images": options.num_images,
            "bins": options.bins,
            "tensors": names,
            **({"legacy_tensors": legacy} if legacy else {}),
        }
    )


def _measure(
    model: onnx.ModelProto,
    names: list[str],
    legacy: list[str],
    paths: list[Path],
    held_out: list[Path],
    images_dir: Path,
    export,
    options: CalibrationOptions,
    log: Callable[[str], None],
    progress: Callable[[int], Callable[[int], None]] | None,
) -> tuple[dict[str, StreamingHistogram], dict[str, float], dict, str]:
    """One pass over the images: (histograms, the legacy tensors' max, the images' record, the ORT provider)."""
    from ..preprocess import upsampling_caution

    t0 = time.perf_counter()
    stream = ImageStream(paths, export.preprocess, options.batch, options.num_images, root=images_dir)
    stream.refuse_if_too_few()  # before the sessions are built
    log(
        f"calibrating {len(names)} tensors on {options.num_images} images from '{images_dir}' "
        f"({len(paths)} found), batch {options.batch}"
        + (f", and the max of {len(legacy)} more for weakly typed TensorRT builds" if legacy else "")
        + " ..."
    )
    tick = progress(min(options.num_images, len(paths))) if progress else (lambda n: None)
    maxima = dict.fromkeys(legacy, 0.0)
    histograms, provider = collect_histograms(model, names, stream, options.bins, tick, maxima, shapes_inferred=True, log=log)
    caution = upsampling_caution(stream.short_sides, export.preprocess, "calibration images")
    if caution:
        log(f"  caution: {caution}")
    for name, why in stream.skipped:
        log(f"  skipped unreadable image {name}: {why}")
    images_doc: dict[str, Any] = {
        "dir": str(images_dir),
        "found": len(paths),
        "used": len(stream.used),
        "content_sha256": stream.digest,
        # Each image by content, so that verify can refuse to judge on an image calibration saw.
        "content_ids": sorted(stream.content_ids),
        "skipped": [{"file": n, "reason": why} for n, why in stream.skipped],
    }
    if options.holdout is not None:
        images_doc["holdout"] = {
            "fraction": options.holdout,
            "rule": HOLDOUT_RULE,
            "held_out": len(held_out),
            "not_calibrated_on": "the held-out files judge the build",
        }
    log(f"  {len(stream.used)} images in {time.perf_counter() - t0:.1f}s on {provider}")
    return histograms, maxima, images_doc, provider


def _tensor_records(
    names: list[str], histograms: dict[str, StreamingHistogram], options: CalibrationOptions, plan: QuantPlan
) -> dict[str, dict]:
    """calib.json's record of each planned tensor: its amax by the chosen method and by every other, its histogram."""
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
    return tensors


def plan_for(workdir: Path) -> QuantPlan:
    return plan_quantization(onnx.load(str(Path(workdir) / FP32_ONNX)))
