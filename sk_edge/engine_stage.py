"""The engine stage of ``sk-edge build``: a TensorRT engine from the work directory's graph.

:mod:`sk_edge.pipeline` runs the stages in order (export -> calibrate -> quantize -> this ->
verify). The stage skips itself when its inputs are unchanged. Where TensorRT (or a GPU) is absent, it stops,
says so, and leaves ``on_device.sh`` in the work directory: the ``sk-edge build --from``
command and the equivalent trtexec line to run on the Jetson or desktop GPU; verify then
judges the precision graph on ONNX Runtime instead of the engine.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import artifacts
from .backends import tensorrt as trt_backend
from .backends.onnxruntime import OnnxRuntimeRunner
from .errors import SkEdgeError, UsageError
from .sidecars import ExportInfo
from .workdir import CALIB_CACHE, CALIB_JSON, FP32_ONNX, GRAPH_NAMES, engine_name, load_export, read_view

PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_SCRIPT = "on_device.sh"
LAYERS_JSON = "layers.json"
DLA_JSON = "dla.json"
DLA_GRAPH = "model.fp32.dla.onnx"


def timing_cache_path(trt_version: str, gpu: dict | None) -> Path:
    """One timing cache per TensorRT version and GPU, shared by every build on the machine."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sk-edge" / "timing-caches"
    name = re.sub(r"[^A-Za-z0-9.]+", "-", f"{(gpu or {}).get('name', 'gpu')}-sm{(gpu or {}).get('compute_capability', 'x')}")
    return root / f"trt-{trt_version}_{name}.cache"


@dataclass
class BuildResult:
    precision: str
    graph: Path
    backend: str  # "tensorrt" or "onnxruntime"
    engine: Path | None = None
    fallback_reason: str | None = None
    layers: dict = field(default_factory=dict)


def trtexec_lines(workdir: Path, precision: str, options: trt_backend.BuildOptions) -> list[str]:
    """Commented trtexec lines for every TensorRT family a device may have, each valid for its release."""
    export = load_export(workdir)
    shape = tuple(export.input.shape)
    input_name = export.input.name
    options = _with_profile(options, export)
    lines = []
    for label, version in trt_backend.DEVICE_TARGETS:
        features = trt_backend.TrtFeatures(version)
        if options.dla_core is not None:
            if features.dla_legacy:
                graph, legacy = DLA_GRAPH, True
            elif features.dla_strongly_typed:
                graph, legacy = GRAPH_NAMES[precision], False
            else:
                lines.append(f"# {label}: no DLA on Jetson; build for the GPU without --dla-core")
                continue
        elif features.strongly_typed:
            graph, legacy = GRAPH_NAMES[precision], False
        else:  # 8.5/8.6: no strongly typed networks, a weakly typed GPU build from the FP32 graph
            graph, legacy = FP32_ONNX, True
        if options.hardware_compatible and not features.hardware_compatibility:
            lines.append(f"# {label}: no hardware-compatible engines; build without --hardware-compatible")
            continue
        lines.append(f"# {label}:")
        if legacy and precision == "int8":
            # TensorRT skips a cache whose header names another release: write the device's own.
            lines.append(f"#   sed -i '1s/.*/{features.calib_cache_header}/' calib.cache   (the header of your exact release: 8.5.2 -> 8502, "
                         "8.6.2 -> 8602, 10.3.0 -> 100300)")
        lines.append("#   " + trt_backend.trtexec_command(graph, engine_name(precision, options.dla_core), input_name, shape,
                                                           options, legacy, features, precision))
    return lines


def device_script(workdir: Path, precision: str, options: trt_backend.BuildOptions, legacy: bool,
                  verdict_flags: tuple[str, ...] = ()) -> str:
    """on_device.sh; ``verdict_flags`` are the host build's gates (--min-agreement ...), so that the device
    judges its engine by the same thresholds."""
    flags = [f"--precision {precision}", f"--workspace {options.workspace_mib}", f"--opt-level {options.opt_level}"]
    if options.dla_core is not None:
        flags.append(f"--dla-core {options.dla_core}")
    if options.hardware_compatible:
        flags.append("--hardware-compatible")
    flags += list(verdict_flags)
    return "\n".join([
        "#!/bin/sh",
        "# Written by sk-edge build on a machine without TensorRT. Copy this work directory to the",
        "# Jetson or GPU machine (with sk-edge and TensorRT installed) and run this script there.",
        "set -e",
        'cd "$(dirname "$0")"',
        f"sk-edge build --from . {' '.join(flags)}",
        "",
        "# The same engine with NVIDIA's trtexec, for devices without Python (no sidecar, no",
        "# stale-engine check, no layer summary). Pick the line of the TensorRT on the device:",
        *trtexec_lines(workdir, precision, options),
        "",
    ])


def _with_profile(options: trt_backend.BuildOptions, export: ExportInfo) -> trt_backend.BuildOptions:
    """``options`` with the optimisation profile the exported graph needs (dynamic batch)."""
    max_batch = export.dynamic_batch
    if options.dynamic_batch and not max_batch:
        raise UsageError("--dynamic-batch needs a graph exported with a dynamic batch; re-export with `sk-edge export --dynamic-batch MAX`")
    if options.dynamic_batch and options.dynamic_batch > max_batch:
        raise UsageError(f"--dynamic-batch {options.dynamic_batch} exceeds the exported graph's {max_batch}; re-export with a larger MAX")
    if max_batch and not options.dynamic_batch:
        options = trt_backend.BuildOptions(**{**options.__dict__, "dynamic_batch": max_batch})
    return options


def write_device_script(workdir: Path, text: str) -> Path:
    path = workdir / DEVICE_SCRIPT
    with artifacts.atomic_output(path) as tmp:
        tmp.write_text(text)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_dla_graph(workdir: Path) -> tuple[Path, dict]:
    """``model.fp32.dla.onnx``: the FP32 graph with global pools chained to DLA-sized windows.

    Checked against the FP32 graph on ONNX Runtime before it is written: a chain of equal
    averages is the global average, up to float rounding.
    """
    import onnx

    from .backends.dla import chain_global_pools
    from .export.parity import parity_inputs

    export = load_export(workdir)
    path = workdir / DLA_GRAPH
    model, report = chain_global_pools(onnx.load(str(workdir / FP32_ONNX)))
    data = model.SerializeToString()
    x = parity_inputs(tuple(export.input_shape), samples=1)
    diff = float(np.abs(OnnxRuntimeRunner(data, dynamic_batch=True)(x) - OnnxRuntimeRunner(workdir / FP32_ONNX, dynamic_batch=True)(x)).max())
    if diff > 1e-4:
        raise SkEdgeError(f"the DLA pooling rewrite changed the logits by {diff:.3g}; report this as a bug")
    with artifacts.atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path, {**report.as_dict(), "max_abs_logit_diff": diff}


def build_engine_stage(
    workdir: Path,
    precision: str,
    options: trt_backend.BuildOptions,
    legacy: bool = False,
    force: bool = False,
    trt=None,
    gpu: dict | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> BuildResult:
    """Build ``model.<precision>.engine`` (+ sidecar, layers.json) from the work directory.

    ``trt`` and ``gpu`` default to the installed TensorRT and CUDA device 0.

    Raises :class:`~sk_edge.backends.tensorrt.TensorRTUnavailable` when TensorRT cannot be
    imported; every other failure is an :class:`SkEdgeError` with the fix in its message.
    """
    trt = trt or trt_backend.import_tensorrt()
    options.validate()
    # Which path is the running TensorRT's call (TrtFeatures): for the DLA, weakly typed up to
    # 10.7 and strongly typed (the precision graph itself) from 11.4.1, build_engine refusing the
    # releases between; for the GPU, weakly typed on 8.5/8.6 (JetPack 5.1/6.0), which have no
    # strongly typed networks, and the main path from 10.3.
    features = trt_backend.TrtFeatures.of(trt)
    legacy = features.dla_legacy if options.dla_core is not None else not features.strongly_typed
    export = load_export(workdir)
    if options.dla_core is not None and export.dynamic_batch:
        # NVIDIA's "DLA Supported Layers and Restrictions": no dynamic dimensions on the DLA.
        raise UsageError("the DLA needs static shapes; re-export with `sk-edge export --batch N` (no --dynamic-batch)")
    options = _with_profile(options, export)
    graph_info = check_inputs(workdir, precision, legacy)
    graph = workdir / GRAPH_NAMES[precision]
    dla_pooling = None
    if legacy:  # the FP32 graph, with the DLA-sized pools when the DLA runs it
        graph, dla_pooling = write_dla_graph(workdir) if options.dla_core is not None else (workdir / FP32_ONNX, None)
    calib_cache = None
    if legacy and precision == "int8":
        calib_cache = legacy_calib_cache(workdir, dla_pooling, log)
    gpu = gpu or trt_backend.gpu_identity()
    if gpu is None:
        raise trt_backend.TensorRTUnavailable("TensorRT is installed but no CUDA GPU is visible")
    from .environment import jetson_info

    jetson = jetson_info()
    input_name = export.input.name
    shape = tuple(export.input.shape)
    engine_path = workdir / engine_name(precision, options.dla_core)
    sidecar_path = trt_backend.engine_sidecar_path(engine_path)
    inputs = {
        "onnx": {"name": graph.name, "sha256": artifacts.sha256_file(graph)},
        "calib_cache_sha256": artifacts.sha256_file(workdir / CALIB_CACHE) if calib_cache else None,
    }
    settings = {"precision": precision, "legacy_weakly_typed": legacy, **options.settings()}
    key = artifacts.stage_key({"stage": "engine", **inputs, **settings, "tensorrt": trt.__version__, "gpu": gpu})
    if not force and artifacts.is_up_to_date(sidecar_path, key):
        log(f"{engine_path} is up to date; --force rebuilds it")
        return BuildResult(precision, graph, "tensorrt", engine_path, layers=read_view(workdir, sidecar_path.name).layers_summary)
    if engine_path.is_file():
        log(f"rebuilding {engine_path.name}: {_why_stale(engine_path, sidecar_path, inputs, trt.__version__, gpu)}")

    cache_path = options.timing_cache or timing_cache_path(trt.__version__, gpu)
    options.timing_cache = cache_path
    built = trt_backend.build_engine(graph, input_name, shape, options, calib_cache, legacy, trt=trt, log=log,
                                     precision=precision)
    with artifacts.atomic_output(engine_path) as tmp:
        tmp.write_bytes(built.plan)
    # build_engine has written the timing cache itself, merged under a lock with concurrent builds.
    artifacts.write_json(workdir / LAYERS_JSON, built.layers)
    dla_summary = None
    if built.dla_layers:
        on_dla = [l for l in built.dla_layers if l["dla"]]
        dla_summary = {"layers": len(built.dla_layers), "dla_eligible": len(on_dla),
                       "gpu_fallback": [l["layer"] for l in built.dla_layers if not l["dla"]], "pooling": dla_pooling}
        artifacts.write_json(workdir / DLA_JSON, {"summary": dla_summary, "layers": built.dla_layers})
        log(f"  DLA: {len(on_dla)} of {len(built.dla_layers)} layers eligible, {len(dla_summary['gpu_fallback'])} fall back to the GPU (dla.json)")
    # The Q/DQ plan's float layers describe the strongly typed engine only: a weakly typed build
    # runs every layer calib.cache has ranges for in INT8.
    float_nodes = getattr(graph_info, "float_nodes", {}) if not legacy else {}
    summary = trt_backend.summarize_layers(built.layers, float_nodes)
    artifacts.write_json(
        sidecar_path,
        artifacts.sidecar(
            "engine",
            key,
            {engine_path.name: engine_path},
            inputs=inputs,
            settings=settings,
            tensorrt={"version": built.trt_version},
            gpu=gpu,
            jetson=jetson,
            platform=trt_backend.host_platform(),
            model={"input": export.input.to_dict(), "output": export.output.to_dict()},
            preprocess=export.preprocess_record,
            class_names=export.class_names,
            timing_cache=str(cache_path),
            layers_summary=summary,
            dla=dla_summary,
        ),
    )
    return BuildResult(precision, graph, "tensorrt", engine_path, layers=summary)


def legacy_calib_cache(workdir: Path, dla_pooling: dict | None, log: Callable[[str], None]) -> bytes:
    """calib.cache for a weakly typed INT8 build, with the DLA pool chain's tensors added.

    Each intermediate of a pooling chain averages part of the pool's input, so the input's range
    bounds it exactly as max calibration would. A cache without the other activations' ranges
    (calibrated without --legacy-ranges) is used, but the log says what it costs.
    """
    import onnx

    from .quantize.cache import encode_scale, read_cache

    cache_path = workdir / CALIB_CACHE
    data = cache_path.read_bytes()
    _, scales = read_cache(cache_path)
    calib = read_view(workdir, CALIB_JSON)  # checked by check_inputs before the build
    if not calib.legacy_ranges:
        total = len(calib.tensors)
        log(f"  calib.cache has ranges for the {total} tensors the Q/DQ plan quantizes only: TensorRT runs every layer "
            "that touches another tensor in floating point. Re-calibrate on the host with `sk-edge calibrate "
            "--legacy-ranges` (or `sk-edge build --dla-core N`) for INT8 everywhere the DLA allows")
    extra = []
    if dla_pooling and dla_pooling.get("rewritten"):
        inputs = {n.name: n.input[0] for n in onnx.load(str(workdir / FP32_ONNX), load_external_data=False).graph.node}
        for node, windows in dla_pooling["rewritten"].items():
            scale = scales.get(inputs.get(node, ""))
            if scale:
                extra += [f"{node}_dla_pool{i}: {encode_scale(scale)}" for i in range(len(windows) - 1)]
    return data.rstrip(b"\n") + b"".join(b"\n" + line.encode() for line in extra) + b"\n"


def _why_stale(engine_path: Path, sidecar_path: Path, inputs: dict, trt_version: str, gpu: dict) -> str:
    """Why an existing engine cannot stand for this build, in words for the log."""
    try:
        old = read_view(engine_path.parent, sidecar_path.name)
    except SkEdgeError:
        return "it has no readable sidecar"
    if old.tensorrt_version != trt_version:
        return f"it was built by TensorRT {old.tensorrt_version}, this is {trt_version}"
    if (old.gpu or {}).get("name") != gpu.get("name"):
        return f"it was built for {(old.gpu or {}).get('name')}, this GPU is {gpu.get('name')}"
    if {"name": old.onnx_name, "sha256": old.onnx_sha256} != inputs["onnx"]:
        return f"it was built from another {inputs['onnx']['name']}"
    return "its settings or bytes differ from this build's"


def build_without_tensorrt(
    workdir: Path,
    precision: str,
    options: trt_backend.BuildOptions,
    reason: str,
    legacy: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    verdict_flags: tuple[str, ...] = (),
) -> BuildResult:
    """What ``build`` does when TensorRT is absent: leave the device script (verify follows)."""
    graph = workdir / GRAPH_NAMES[precision]
    log(f"no engine built: {reason}.")
    engine = workdir / engine_name(precision, options.dla_core)
    if engine.is_file():
        from .workdir import load_engine

        try:
            load_engine(workdir, precision, options.dla_core)
        except SkEdgeError as exc:
            log(f"  {engine.name} here is stale and will be refused by verify and bench until on_device.sh rebuilds it ({exc})")
    if legacy:  # the trtexec line in on_device.sh reads it
        write_dla_graph(workdir)
    script = write_device_script(workdir, device_script(workdir, precision, options, legacy, verdict_flags))
    log(f"on the device, run {script} (sk-edge build --from, or the trtexec line in it)")
    return BuildResult(precision, graph, "onnxruntime", fallback_reason=reason)


def check_inputs(workdir: Path, precision: str, legacy: bool):
    """Every artifact the engine stage will read, checked against its sidecar and its own inputs.

    The legacy (weakly typed) path builds from the FP32 graph and, for INT8, calib.cache; the
    main path from the precision's graph and the chain it came from. Returns the view of the
    graph the build reads (GraphInfo, or ExportInfo for FP32 and the legacy path).
    """
    from .workdir import load_calibration, load_graph

    if legacy:
        export = load_export(workdir)
        if precision == "int8":
            load_calibration(workdir, export)
        return export
    return load_graph(workdir, precision)


def validate(precision: str, options: trt_backend.BuildOptions) -> bool:
    """Check the build request; True when it takes the legacy (weakly typed, DLA) path."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    options.validate()
    if options.dla_core is not None and precision == "fp32":
        raise UsageError("the DLA computes in FP16 or INT8; use --precision fp16 or int8 with --dla-core")
    # INT8 on the DLA goes through implicit quantization (calib.cache); FP16 DLA builds use
    # the same legacy path, so one DLA route is maintained, not two.
    return options.dla_core is not None
