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
from .sidecars import EngineInfo, ExportInfo
from .workdir import CALIB_CACHE, CALIB_JSON, FP32_ONNX, GRAPH_NAMES, engine_name, layers_name, load_export, read_view

PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_SCRIPT = "on_device.sh"
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
    layers: dict = field(default_factory=dict)  # the engine plan's summary (layer_plan.summarize)
    cannot_run: str | None = None  # why this machine cannot run the engine (verify and bench then cannot judge it here)


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
            lines.append(
                f"#   sed -i '1s/.*/{features.calib_cache_header}/' calib.cache   (the header of your exact release: 8.5.2 -> 8502, "
                "8.6.2 -> 8602, 10.3.0 -> 100300)"
            )
        lines.append(
            "#   "
            + trt_backend.trtexec_command(
                graph, engine_name(precision, options.dla_core), input_name, shape, options, legacy, features, precision
            )
        )
    return lines


def device_script(
    workdir: Path, precision: str, options: trt_backend.BuildOptions, legacy: bool, verdict_flags: tuple[str, ...] = ()
) -> str:
    """on_device.sh; ``verdict_flags`` are the host build's gates (--min-agreement ...), so that the device
    judges its engine by the same thresholds."""
    flags = [f"--precision {precision}", f"--workspace {options.workspace_mib}", f"--opt-level {options.opt_level}"]
    if options.dla_core is not None:
        flags.append(f"--dla-core {options.dla_core}")
    if options.hardware_compatible:
        flags.append("--hardware-compatible")
    if options.target == "rtx":
        flags.append("--target rtx" + (f" --rtx-sm {','.join(options.rtx_sms)}" if options.rtx_sms else ""))
    flags += list(verdict_flags)
    head = [
        "#!/bin/sh",
        "# Written by sk-edge build on a machine without TensorRT. Copy this work directory to the",
        "# Jetson or GPU machine (with sk-edge and TensorRT installed) and run this script there.",
        "set -e",
        'cd "$(dirname "$0")"',
        f"sk-edge build --from . {' '.join(flags)}",
        "",
    ]
    if options.target == "rtx":  # TensorRT-RTX builds on any machine: no trtexec lines per release
        return "\n".join(
            head
            + [
                "# TensorRT-RTX: pip install 'sk-edge[rtx]' builds this engine on any machine, GPU or not;",
                "# the RTX machine then runs it (sk-edge verify / bench, or the C++ runtime).",
                "",
            ]
        )
    return "\n".join(
        head
        + [
            "# The same engine with NVIDIA's trtexec, for devices without Python (no sidecar, no",
            "# stale-engine check, no layer summary). Pick the line of the TensorRT on the device:",
            *trtexec_lines(workdir, precision, options),
            "",
        ]
    )


def _with_profile(options: trt_backend.BuildOptions, export: ExportInfo) -> trt_backend.BuildOptions:
    """``options`` with the optimisation profile the exported graph needs (dynamic batch)."""
    max_batch = export.dynamic_batch
    if options.dynamic_batch and not max_batch:
        raise UsageError(
            "--dynamic-batch needs a graph exported with a dynamic batch; re-export with `sk-edge export --dynamic-batch MAX`"
        )
    if options.dynamic_batch and max_batch and options.dynamic_batch > max_batch:
        raise UsageError(
            f"--dynamic-batch {options.dynamic_batch} exceeds the exported graph's {max_batch}; re-export with a larger MAX"
        )
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
    with (
        OnnxRuntimeRunner(data, dynamic_batch=True) as rewritten,
        OnnxRuntimeRunner(workdir / FP32_ONNX, dynamic_batch=True) as original,
    ):
        diff = float(np.abs(rewritten(x) - original(x)).max())
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
    """Build ``model.<precision>[.dla|.rtx].engine`` (+ its sidecar and layer plan) from the work directory.

    ``trt`` and ``gpu`` default to the installed TensorRT (TensorRT-RTX for ``options.target ==
    "rtx"``) and CUDA device 0. A TensorRT-RTX build needs no GPU: it targets compute capabilities.

    Raises :class:`~sk_edge.backends.tensorrt.TensorRTUnavailable` when TensorRT cannot be
    imported; every other failure is an :class:`SkEdgeError` with the fix in its message.
    """
    options.validate()
    trt = trt or trt_backend.import_tensorrt(options.target)
    # Which path is the running TensorRT's call (TrtFeatures): for the DLA, weakly typed up to
    # 10.7 and strongly typed (the precision graph itself) from 11.4.1, build_engine refusing the
    # releases between; for the GPU, weakly typed on 8.5/8.6 (JetPack 5.1/6.0), which have no
    # strongly typed networks, and the main path from 10.3 and on TensorRT-RTX.
    features = trt_backend.TrtFeatures.of(trt)
    legacy = features.dla_legacy if options.dla_core is not None else not features.strongly_typed
    export = load_export(workdir)
    if options.dla_core is not None and export.dynamic_batch:
        # NVIDIA's "DLA Supported Layers and Restrictions": no dynamic dimensions on the DLA.
        raise UsageError("the DLA needs static shapes; re-export with `sk-edge export --batch N` (no --dynamic-batch)")
    options = _with_profile(options, export)
    graph_info = check_inputs(workdir, precision, legacy)
    graph, dla_pooling, calib_cache = _graph_to_parse(workdir, precision, options, legacy, log)
    gpu = gpu or trt_backend.gpu_identity()
    if gpu is None and features.needs_gpu_to_build:
        raise trt_backend.TensorRTUnavailable("TensorRT is installed but no CUDA GPU is visible")
    engine_path = workdir / engine_name(precision, options.dla_core, options.target)
    sidecar_path = trt_backend.engine_sidecar_path(engine_path)
    inputs = {
        "onnx": {"name": graph.name, "sha256": artifacts.sha256_file(graph)},
        "calib_cache_sha256": artifacts.sha256_file(workdir / CALIB_CACHE) if calib_cache else None,
    }
    settings = {"precision": precision, "legacy_weakly_typed": legacy, **options.settings()}
    # A TensorRT-RTX engine is made for its targets, not for the GPU (if any) of the machine that builds it.
    built_for = gpu if features.needs_gpu_to_build else {"compute_capabilities": list(options.compute_capabilities)}
    key = artifacts.stage_key(
        {"stage": "engine", **inputs, **settings, "tensorrt": trt.__version__, "flavour": features.flavour, "gpu": built_for}
    )
    if not force and artifacts.up_to_date(sidecar_path, key) is not None:
        log(f"{engine_path} is up to date; --force rebuilds it")
        view = read_view(workdir, sidecar_path.name)
        return _result(precision, graph, engine_path, view.layers_summary, view, trt, gpu)
    if engine_path.is_file():
        log(f"rebuilding {engine_path.name}: {_why_stale(engine_path, sidecar_path, inputs, trt.__version__, gpu)}")

    if features.timing_cache:
        options.timing_cache = options.timing_cache or timing_cache_path(trt.__version__, gpu)
    built = trt_backend.build_engine(
        graph, export.input.name, tuple(export.input.shape), options, calib_cache, legacy, trt=trt, log=log, precision=precision
    )
    for warning in built.warnings[:5]:
        log(f"  {features.name}: {warning}")
    plan_summary = check_plan(workdir, engine_path, built, graph, graph_info, precision, legacy)
    with artifacts.atomic_output(engine_path) as tmp:
        tmp.write_bytes(built.plan)
    # build_engine has written the timing cache itself, merged under a lock with concurrent builds.
    dla_summary = _write_dla_report(workdir, built, dla_pooling, log)
    view = _write_engine_sidecar(
        sidecar_path, engine_path, key, inputs, settings, built, features, options, gpu, export, plan_summary, dla_summary
    )
    return _result(precision, graph, engine_path, plan_summary, view, trt, gpu)


def _graph_to_parse(
    workdir: Path, precision: str, options: trt_backend.BuildOptions, legacy: bool, log: Callable[[str], None]
) -> tuple[Path, dict | None, bytes | None]:
    """(the ONNX file TensorRT parses, the DLA pool rewrite, the calibration cache): the precision graph on the
    strongly typed path; on the weakly typed one the FP32 graph (with DLA-sized pools on the DLA) and, for INT8,
    calib.cache."""
    if not legacy:
        return workdir / GRAPH_NAMES[precision], None, None
    graph, dla_pooling = write_dla_graph(workdir) if options.dla_core is not None else (workdir / FP32_ONNX, None)
    return graph, dla_pooling, legacy_calib_cache(workdir, dla_pooling, log) if precision == "int8" else None


def _result(precision: str, graph: Path, engine_path: Path, layers: dict, view, trt, gpu: dict | None) -> BuildResult:
    """The stage's result for an engine built or reused, with why it cannot run here (if it cannot)."""
    return BuildResult(
        precision,
        graph,
        "tensorrt",
        engine_path,
        layers=layers,
        cannot_run=trt_backend.engine_mismatch(view, trt.__version__, gpu),
    )


def check_plan(
    workdir: Path, engine_path: Path, built: trt_backend.BuiltEngine, graph: Path, graph_info, precision: str, legacy: bool
) -> dict:
    """Write the engine's layer plan beside it and hold it to the graph's claims; returns its summary.

    For a strongly typed build every Conv/Gemm must be computed in the precision the graph gives it
    (a layer the Q/DQ graph quantized: INT8 inputs and INT8 weights), or the build fails naming the
    layers (the engine is not written). A plan without ONNX metadata (TensorRT before 10.x) cannot
    be checked, and its summary says so (``mapped_to_onnx: false``).
    """
    import onnx

    from .backends import layer_plan
    from .quantize.macs import graph_facts

    facts = graph_facts(onnx.load(str(graph)))
    # The Q/DQ plan's float layers describe the strongly typed engine only: a weakly typed build
    # runs every layer calib.cache has ranges for in INT8.
    float_nodes = getattr(graph_info, "float_nodes", {}) if not legacy else {}
    summary = layer_plan.summarize(built.layers, facts, float_nodes)
    # A weakly typed build takes its precisions from calib.cache and TensorRT's choices: nothing to hold it to.
    summary["precision_checked"] = not legacy and summary["mapped_to_onnx"]
    layers_path = workdir / layers_name(engine_path.name)
    artifacts.write_json(
        layers_path,
        {
            "engine": engine_path.name,
            "graph": graph.name,
            "source": "engine inspector" if built.flavour == "tensorrt" else "TensorRT-RTX builder log (Layers:)",
            "tensorrt": {"version": built.trt_version, "flavour": built.flavour},
            "summary": summary,
            "layers": [
                {**layer.as_dict(), "sk_units": sorted({layer_plan.sk_unit(n) for n in layer.onnx_nodes if "/sk/" in n})}
                for layer in built.layers
            ],
            "report": built.report,
        },
    )
    if summary["precision_checked"]:
        wrong = layer_plan.precision_violations(built.layers, facts)
        if wrong:
            raise SkEdgeError(
                f"the engine computes {len(wrong)} of the {len(facts.macs)} Conv/Gemm layers of {graph.name} in another "
                f"precision than the graph gives them: {'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} "
                f"(all in {layers_path}); no engine written" + (f"; {built.int8_hint}" if built.int8_hint else "")
            )
    return summary


def _write_dla_report(
    workdir: Path, built: trt_backend.BuiltEngine, dla_pooling: dict | None, log: Callable[[str], None]
) -> dict | None:
    if not built.dla_layers:
        return None
    on_dla = [layer for layer in built.dla_layers if layer["dla"]]
    gpu_fallback = [layer["layer"] for layer in built.dla_layers if not layer["dla"]]
    summary = {"layers": len(built.dla_layers), "dla_eligible": len(on_dla), "gpu_fallback": gpu_fallback, "pooling": dla_pooling}
    artifacts.write_json(workdir / DLA_JSON, {"summary": summary, "layers": built.dla_layers})
    log(f"  DLA: {len(on_dla)} of {len(built.dla_layers)} layers eligible, {len(gpu_fallback)} fall back to the GPU (dla.json)")
    return summary


def _write_engine_sidecar(
    sidecar_path: Path,
    engine_path: Path,
    key: str,
    inputs: dict,
    settings: dict,
    built: trt_backend.BuiltEngine,
    features: trt_backend.TrtFeatures,
    options: trt_backend.BuildOptions,
    gpu: dict | None,
    export: ExportInfo,
    plan_summary: dict,
    dla_summary: dict | None,
) -> EngineInfo:
    from .environment import jetson_info

    layers_path = engine_path.parent / layers_name(engine_path.name)
    rtx = None
    if features.rtx:
        rtx = {
            "compute_capabilities": list(options.compute_capabilities),
            "default_targets": not options.rtx_sms,
            "engine_header": trt_backend.rtx_engine_header(built.plan, built.trt_version),
        }
    return EngineInfo.write(
        sidecar_path,
        key,
        engine_path,
        inputs=inputs,
        settings=settings,
        tensorrt={"version": built.trt_version, "flavour": built.flavour},
        gpu=gpu if features.needs_gpu_to_build else None,
        jetson=jetson_info(),
        platform=trt_backend.host_platform(),
        model={"input": export.input.to_dict(), "output": export.output.to_dict()},
        preprocess=export.preprocess_record,
        class_names=export.class_names,
        timing_cache=str(options.timing_cache) if options.timing_cache else None,
        layers={"name": layers_path.name, "sha256": artifacts.sha256_file(layers_path)},
        layers_summary=plan_summary,
        dla=dla_summary,
        rtx=rtx,
    )


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
        log(
            f"  calib.cache has ranges for the {total} tensors the Q/DQ plan quantizes only: TensorRT runs every layer "
            "that touches another tensor in floating point. Re-calibrate on the host with `sk-edge calibrate "
            "--legacy-ranges` (or `sk-edge build --dla-core N`) for INT8 everywhere the DLA allows"
        )
    extra = []
    if dla_pooling and dla_pooling.get("rewritten"):
        inputs = {n.name: n.input[0] for n in onnx.load(str(workdir / FP32_ONNX), load_external_data=False).graph.node}
        for node, windows in dla_pooling["rewritten"].items():
            scale = scales.get(inputs.get(node, ""))
            if scale:
                extra += [f"{node}_dla_pool{i}: {encode_scale(scale)}" for i in range(len(windows) - 1)]
    return data.rstrip(b"\n") + b"".join(b"\n" + line.encode() for line in extra) + b"\n"


def _why_stale(engine_path: Path, sidecar_path: Path, inputs: dict, trt_version: str, gpu: dict | None) -> str:
    """Why an existing engine cannot stand for this build, in words for the log."""
    try:
        old = read_view(engine_path.parent, sidecar_path.name)
    except SkEdgeError:
        return "it has no readable sidecar"
    if old.tensorrt_version != trt_version:
        return f"it was built by TensorRT {old.tensorrt_version}, this is {trt_version}"
    if old.gpu and gpu and old.gpu.get("name") != gpu.get("name"):
        return f"it was built for {old.gpu.get('name')}, this GPU is {gpu.get('name')}"
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
    on_device: bool = False,
) -> BuildResult:
    """What ``build`` does when TensorRT is absent: leave the device script (verify follows).

    ``on_device`` (``build --from``): this is the device, so no script that would run this same command.
    """
    graph = workdir / GRAPH_NAMES[precision]
    log(f"no engine built: {reason}.")
    engine = workdir / engine_name(precision, options.dla_core, options.target)
    if engine.is_file():
        from .workdir import load_engine

        try:
            load_engine(workdir, precision, name=engine.name)
        except SkEdgeError as exc:
            log(f"  {engine.name} here is stale and will be refused by verify and bench until on_device.sh rebuilds it ({exc})")
    if on_device:
        return BuildResult(precision, graph, "onnxruntime", fallback_reason=reason)
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
