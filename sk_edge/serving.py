"""Hand a build to a server or a camera pipeline: a Triton model repository, a DeepStream config.

Both read the work directory's engine when there is one (TensorRT ran here or on the
device) and say what they used. Without an engine, the Triton repository serves the
precision's ONNX graph with Triton's ONNX Runtime backend, so the repository is usable and
testable anywhere; DeepStream's nvinfer always needs TensorRT, so its config names the
engine file the device build will write (``on_device.sh``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from . import artifacts, shipped_verdict
from .errors import SkEdgeError, UsageError
from .workdir import GRAPH_NAMES, built_engines, engine_name, engine_target, load_engine, load_export, load_graph

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
# nvinfer's network-mode values.
_NVINFER_MODES = {"fp32": 0, "int8": 1, "fp16": 2}


def _tensorrt_engines(workdir: Path, precision: str) -> list[tuple[str, str]]:
    """``precision``'s TensorRT engines: Triton's TensorRT backend and DeepStream's nvinfer run TensorRT, not
    TensorRT-RTX, so a ``.rtx.engine`` is never published to them."""
    return [(p, name) for p, name in built_engines(workdir, (precision,)) if engine_target(name) == "tensorrt"]


def _pick_precision(workdir: Path, precision: str | None) -> str:
    built = (p for p, graph in GRAPH_NAMES.items() if _tensorrt_engines(workdir, p) or (workdir / graph).is_file())
    return precision or next(built, "fp32")


def _engine(workdir: Path, precision: str):
    """The checked sidecar (EngineInfo) of ``precision``'s engine, the GPU one before a DLA one; None without."""
    engines = _tensorrt_engines(workdir, precision)
    if not engines:
        return None
    return load_engine(workdir, precision, name=engines[0][1])  # a stale engine is never published


def _io(export) -> tuple:
    return export.input, export.output, export.dynamic_batch


def _dims(shape: list, dynamic: bool) -> list:
    return [int(d) for d in (shape[1:] if dynamic else shape)]


LABELS_FILE = "labels.txt"
DEEPSTREAM_LABELS = "deepstream_labels.txt"


def triton_config(name: str, platform: str, export) -> str:
    """config.pbtxt for one model (Triton's ModelConfig text format)."""
    inp, out, max_batch = _io(export)
    dynamic = bool(max_batch)
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch if dynamic else 0}"]
    for kind, t in (("input", inp), ("output", out)):
        lines += [
            f"{kind} [",
            "  {",
            f'    name: "{t.name}"',
            f"    data_type: {_TRITON_TYPES[t.dtype]}",
            f"    dims: [ {', '.join(map(str, _dims(list(t.shape), dynamic)))} ]",
            "  }",
            "]",
        ]
    if dynamic:
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {max_batch} ]", "  max_queue_delay_microseconds: 100", "}"]
    lines += [
        "instance_group [",
        "  {",
        "    count: 1",
        f"    kind: {'KIND_GPU' if platform == 'tensorrt_plan' else 'KIND_AUTO'}",
        "  }",
        "]",
    ]
    if export.class_names:
        # Triton's classification extension reads the names from this file, one per line (class order).
        output_end = next(i for i, line in enumerate(lines) if line.startswith("output [")) + 5
        lines.insert(output_end, f'    label_filename: "{LABELS_FILE}"')
    return "\n".join(lines) + "\n"


def export_triton(
    workdir: str | Path,
    repo: str | Path,
    name: str | None = None,
    precision: str | None = None,
    log: Callable[[str], None] = lambda msg: None,
    unverified: bool = False,
) -> Path:
    """Write ``repo/<name>/config.pbtxt`` and ``repo/<name>/<version>/model.plan`` (or ``model.onnx``).

    Only a file with a passing verdict of its own (or an engine built from a graph that passed) is
    published, unless ``unverified`` (sk_edge.shipped_verdict)."""
    workdir, repo = Path(workdir), Path(repo)
    export = load_export(workdir)
    precision = _pick_precision(workdir, precision)
    name = name or export.model.replace(":", "_")
    engine = workdir / engine_name(precision)
    built_from = None
    if engine.is_file():
        info = load_engine(workdir, precision)  # a stale engine is never published
        source, platform, target = engine, "tensorrt_plan", "model.plan"
        built_from = (info.onnx_name, info.onnx_sha256)
    else:
        source, platform, target = workdir / GRAPH_NAMES[precision], "onnxruntime_onnx", "model.onnx"
        if not source.is_file():
            raise SkEdgeError(
                f"no {engine.name} or {source.name} in '{workdir}'; run `sk-edge build -w {workdir} --precision {precision}` first"
            )
        load_graph(workdir, precision)
        log(
            f"no {engine.name} in '{workdir}': the repository serves {source.name} with Triton's ONNX Runtime backend; "
            "rerun after building the engine on the device for the TensorRT backend"
        )
    verdict = shipped_verdict.check(workdir, source, built_from, unverified)
    model_dir = repo / _model_name(name)
    version = _next_version(model_dir)
    with artifacts.atomic_output(model_dir / str(version) / target) as tmp:
        shutil.copyfile(source, tmp)
    if export.class_names:
        with artifacts.atomic_output(model_dir / LABELS_FILE) as tmp:
            tmp.write_text("\n".join(export.class_names) + "\n")
    with artifacts.atomic_output(model_dir / "config.pbtxt") as tmp:
        tmp.write_text(triton_config(name, platform, export))
    artifacts.write_json(
        model_dir / TRITON_MARKER,
        {
            "written_by": "sk-edge",
            "workdir": str(workdir.resolve()),
            "latest_version": version,
            "source": source.name,
            "verdict": verdict.to_dict(),
        },
    )
    log(
        f"wrote {model_dir} version {version}: {platform} from {source.name}; {verdict.line}"
        + (f", class names in {LABELS_FILE}" if export.class_names else "")
        + ("" if version == 1 else f" (Triton's default version policy serves the newest: {version})")
    )
    return model_dir


# Marks a Triton model directory sk-edge wrote: only such a directory gets a new version from it.
TRITON_MARKER = ".sk-edge-model.json"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _model_name(name: str) -> str:
    """A Triton model name that is one folder inside the repository (never "..", a path or a separator)."""
    if not _MODEL_NAME.match(name) or name in (".", ".."):
        raise UsageError(f"--name '{name}' is not a model name (letters, digits, '_', '-', '.'; one folder inside --repo)")
    return name


def _next_version(model_dir: Path) -> int:
    """1 for a new model directory; the next version in one sk-edge wrote before, so no earlier version (which
    Triton may be serving) is overwritten. Another tool's or the user's model directory is refused."""
    if not model_dir.exists():
        return 1
    if not (model_dir / TRITON_MARKER).is_file():
        raise UsageError(
            f"'{model_dir}' exists and sk-edge did not write it (no {TRITON_MARKER}): it is left as it is; "
            "pass another --name or --repo"
        )
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def nvinfer_scaling(preprocess: dict) -> tuple[float, list[float], float]:
    """(net-scale-factor, offsets, worst relative error) for nvinfer's y = s * (x - offset).

    nvinfer takes one scale for all channels; sk-edge normalises with a per-channel std.
    The scale uses the mean std; the error says how far that is from the exact per-channel
    normalisation, relative to the normalised value's range.
    """
    mean, std = np.asarray(preprocess["mean"]), np.asarray(preprocess["std"])
    scale = 1.0 / (255.0 * float(std.mean()))
    offsets = [float(v) for v in mean * 255.0]
    pixels = np.arange(256.0)[:, None]
    exact = (pixels / 255.0 - mean) / std
    approx = scale * (pixels - mean * 255.0)
    worst = float(np.max(np.abs(exact - approx)) / np.max(np.abs(exact)))
    return scale, offsets, worst


def deepstream_config(workdir: Path, export, precision: str, batch: int, engine=None) -> tuple[str, float]:
    """nvinfer's config; ``engine`` is the engine's EngineInfo when built, a DLA engine taking nvinfer to its core."""
    pre = export.preprocess_record
    inp, out, _ = _io(export)
    scale, offsets, worst = nvinfer_scaling(pre)
    dla_core = engine.dla_core if engine else None
    engine_file = engine.engine_name if engine else engine_name(precision)
    lines = [
        "# nvinfer configuration written by sk-edge export-deepstream",
        f"# model {export.model}, {precision.upper()}, input {list(inp.shape)} ({pre['resize']}, {pre.get('channel_order', 'RGB')})",
        f"# nvinfer has one scale for all channels: per-channel std approximated by its mean, worst error {worst:.2%} of the input range",
        *(
            {
                "crop": ["# nvinfer scales the whole object keeping its aspect ratio; it does not take sk-edge's central crop"],
                "letterbox": ["# nvinfer pads with black; sk-edge pads with the mean colour (zero after normalisation)"],
            }.get(pre["resize"], [])
        ),
        "[property]",
        "gpu-id=0",
        f"net-scale-factor={scale:.10f}",
        f"offsets={';'.join(f'{o:.4f}' for o in offsets)}",
        f"model-color-format={0 if export.preprocess.channel_order == 'RGB' else 1}",
        f"model-engine-file={engine_file}",
        f"onnx-file={GRAPH_NAMES[precision]}",
    ]
    if dla_core is not None:
        lines += ["enable-dla=1", f"use-dla-core={dla_core}"]
    if precision == "int8" and (workdir / "calib.cache").is_file():
        lines.append("int8-calib-file=calib.cache")
    lines += [
        f"batch-size={batch}",
        f"network-mode={_NVINFER_MODES[precision]}",
        "network-type=1",
        "process-mode=1",
        f"infer-dims={';'.join(str(d) for d in inp.shape[1:])}",
        f"maintain-aspect-ratio={0 if pre['resize'] == 'resize' else 1}",
        *(["symmetric-padding=1"] if pre["resize"] == "letterbox" else []),
        "scaling-filter=1",
        f"output-blob-names={out.name}",
        *([f"labelfile-path={DEEPSTREAM_LABELS}"] if export.class_names else []),
        "classifier-threshold=0.0",
        "classifier-async-mode=0",
        "",
    ]
    return "\n".join(lines), worst


def export_deepstream(
    workdir: str | Path,
    out: str | Path | None = None,
    precision: str | None = None,
    log: Callable[[str], None] = lambda msg: None,
    unverified: bool = False,
) -> Path:
    """nvinfer's config for the engine (or the graph nvinfer builds one from); only for a file with a passing
    verdict, unless ``unverified`` (sk_edge.shipped_verdict)."""
    workdir = Path(workdir)
    export = load_export(workdir)
    precision = _pick_precision(workdir, precision)
    batch = export.max_batch
    engine = _engine(workdir, precision)
    if engine is None:
        load_graph(workdir, precision)
        verdict = shipped_verdict.check(workdir, workdir / GRAPH_NAMES[precision], None, unverified)
    else:
        verdict = shipped_verdict.check(workdir, workdir / engine.engine_name, (engine.onnx_name, engine.onnx_sha256), unverified)
    text, worst = deepstream_config(workdir, export, precision, batch, engine)
    text = f"# {verdict.line}\n" + text
    path = Path(out) if out else workdir / "deepstream_nvinfer.txt"
    if export.class_names:
        # nvinfer's classifier label file: one line per output layer, the class names separated by ';'.
        with artifacts.atomic_output(path.parent / DEEPSTREAM_LABELS) as tmp:
            tmp.write_text(";".join(export.class_names) + "\n")
    with artifacts.atomic_output(path) as tmp:
        tmp.write_text(text)
    if engine is None:
        log(f"note: model.{precision}.engine is not built yet; run on_device.sh on the device first")
    log(f"wrote {path} (per-channel std approximated: worst error {worst:.2%}); {verdict.line}")
    return path
