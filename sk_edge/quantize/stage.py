"""The quantize stage: INT8 Q/DQ insertion and FP16 conversion, written into the graph.

TensorRT 11 no longer calibrates or picks precisions; the ONNX graph carries them. This
stage turns ``model.fp32.onnx`` into ``model.int8.onnx`` (explicit Q/DQ, the rest FP16
or FP32) and ``model.fp16.onnx``, each with a JSON sidecar; the calibration itself is in
``calib.json`` / ``calib.cache`` (:mod:`.calibration`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from .. import artifacts
from ..backends.onnxruntime import OnnxRuntimeRunner
from ..errors import SkEdgeError, UsageError
from ..export.parity import parity_inputs
from ..sidecars import GraphInfo
from ..workdir import FP32_ONNX, GRAPH_NAMES, GRAPH_SIDECARS, load_calibration, load_export
from .calibration import CALIB_JSON
from .invariants import int8_graph_problems
from .options import DEFAULT_MIXED, MIXED, PRECISIONS
from .macs import macs_by_node, precision_mix
from .plan import QuantPlan, plan_quantization
from .precision import (
    FP16_QDQ_MIN_OPSET,
    QDQ_MIN_OPSET,
    PrecisionReport,
    convert_float_precision,
    ensure_opset,
    export_graph,
    insert_qdq,
)

OUTPUT_NAMES = {p: GRAPH_NAMES[p] for p in PRECISIONS}
SIDECAR_NAMES = {p: GRAPH_SIDECARS[p] for p in PRECISIONS}

# Ops kept in FP32 when the rest of the graph runs in FP16, and why. A rule, not a
# measurement: on the reference model (64x64 input, pools of at most 16x16 = 256 terms)
# FP16 global pooling measured the same as FP32 (README, "FP16"). The rule is for the
# large inputs: an SK unit's fuse step pools 56x56 = 3136 terms at 224x224, and a sum
# kept in FP16 drops low bits once it passes 2048 (11-bit mantissa) and overflows at
# 65504. A pool reads its input once and writes C values, so FP32 costs one cast.
FP32_OPS = {
    "GlobalAveragePool": "long reduction: an FP16 sum of H*W terms loses precision and can overflow",
}


def fp32_rule(node: gs.Node) -> str | None:
    return FP32_OPS.get(node.op)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def int8_opset(model: onnx.ModelProto, mixed: str = DEFAULT_MIXED) -> int:
    """The opset of ``model``'s INT8 graph: its own, or the first with the Q/DQ it needs (FP16 scales: 19).

    A caller that builds many INT8 graphs from one model converts it once (``ensure_opset``), and
    :func:`build_int8_graph` then has nothing to convert.
    """
    return max(_opset(model), FP16_QDQ_MIN_OPSET if mixed == "fp16" else QDQ_MIN_OPSET)


def build_int8_graph(
    model: onnx.ModelProto,
    plan: QuantPlan,
    amax: dict[str, float],
    mixed: str = DEFAULT_MIXED,
    keep_fp32: Callable[[gs.Node], str | None] = fp32_rule,
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """``model`` with the Q/DQ of ``plan`` at the ranges ``amax``; the rest in ``mixed``."""
    report = PrecisionReport()
    low_precision = mixed == "fp16"
    opset = int8_opset(model, mixed)
    graph = gs.import_onnx(shape_inference.infer_shapes(ensure_opset(model, opset)))
    insert_qdq(graph, plan, amax, np.float16 if low_precision else np.float32, report)
    if low_precision:
        convert_float_precision(graph, keep_fp32, report)
    return export_graph(graph, opset), report


def build_fp16_graph(
    model: onnx.ModelProto, keep_fp32: Callable[[gs.Node], str | None] = fp32_rule
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """``model`` in FP16 with FP32 I/O, the ``keep_fp32`` ops in FP32."""
    report = PrecisionReport()
    opset = _opset(model)
    graph = gs.import_onnx(shape_inference.infer_shapes(model))
    convert_float_precision(graph, keep_fp32, report)
    return export_graph(graph, opset), report


def quantize_model(
    workdir: str | Path,
    precision: str,
    mixed: str = DEFAULT_MIXED,
    force: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    keep_float: Iterable[str] = (),
) -> dict:
    """Write ``model.<precision>.onnx`` and its sidecar into ``workdir``; return the sidecar.

    ``keep_float``: INT8 only, layers (node names) to leave in floating point, as chosen by
    :mod:`sk_edge.sensitivity` to meet an accuracy budget.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if mixed not in MIXED:
        raise UsageError(f"--mixed must be one of {', '.join(MIXED)}, got '{mixed}'")
    workdir = Path(workdir)
    export = load_export(workdir)
    fp32_sha = export.fp32_sha256
    calib = load_calibration(workdir, export) if precision == "int8" else None
    out_name, sidecar_name = OUTPUT_NAMES[precision], SIDECAR_NAMES[precision]
    keep_float = sorted(set(keep_float)) if precision == "int8" else []
    settings = {
        "precision": precision,
        "mixed": mixed if precision == "int8" else None,
        "fp32_ops": FP32_OPS,
        "keep_float": keep_float,
    }
    key = artifacts.stage_key(
        {"stage": "quantize", "model_sha256": fp32_sha, "calibration": calib.key if calib else None, **settings}
    )
    current = None if force else artifacts.up_to_date(workdir / sidecar_name, key)
    if current is not None:
        log(f"{workdir / out_name} is up to date; --force rewrites it")
        return current

    t0 = time.perf_counter()
    model = onnx.load(str(workdir / FP32_ONNX))
    plan = plan_quantization(model)
    unknown = sorted(set(keep_float) - set(plan.layers()))
    if unknown:
        raise UsageError(f"'{unknown[0]}' is not a quantized layer of this graph ({len(unknown)} unknown)")
    plan = plan.without(set(keep_float))
    out, report, mix = _precision_graph(model, plan, calib, mixed, workdir)
    opset = _opset(out)
    serialized = _checked(out, precision, plan, export)
    for name in report.small_scales:
        log(
            f"  warning: weight '{name}' has channels with max |w| below 7.8e-3, whose FP16 scale is clamped to "
            "FP16's smallest normal number (they use fewer than 127 INT8 levels)"
        )

    with artifacts.atomic_output(workdir / out_name) as tmp:
        tmp.write_bytes(serialized)
    written = GraphInfo.write(
        workdir / sidecar_name,
        precision,
        key,
        workdir / out_name,
        inputs={
            "model": {"path": FP32_ONNX, "sha256": fp32_sha},
            "calibration": {"path": CALIB_JSON, "key": calib.key, "method": calib.method} if calib else None,
        },
        settings=settings,
        preprocess=export.preprocess_record,
        model=export.model_record,  # copied whole into the graph's sidecar
        graph={"opset": opset, "nodes": len(out.graph.node)},
        plan={**plan.summary(), "activations": plan.activations, "float_nodes": plan.float_nodes}
        if precision == "int8"
        else None,
        precision_report=report.as_dict(),
        precision_mix=mix,
    )
    log(_wrote_line(workdir / out_name, report, mix, opset, time.perf_counter() - t0))
    return written.doc


def _wrote_line(path: Path, report, mix: dict | None, opset: int, seconds: float) -> str:
    """What quantize says of the graph it wrote."""
    int8 = ""
    if mix is not None:
        int8 = (
            f"{report.quantized_weights} INT8 weights, {report.quantized_activations} quantized tensors, "
            f"{mix['int8_mac_share']:.1%} of the MACs in INT8, "
        )
    return (
        f"wrote {path}: {int8}{len(report.fp32_nodes)} nodes kept in FP32, {report.casts} casts, opset {opset} ({seconds:.1f}s)"
    )


def _precision_graph(model: onnx.ModelProto, plan, calib, mixed: str, workdir: Path) -> tuple[onnx.ModelProto, Any, dict | None]:
    """The graph with its precision written in, its precision report, and (INT8) the share of MACs in each precision.

    ``calib`` is the checked calibration for INT8 and None for FP16, which places no ranges.
    """
    if calib is None:
        out, report = build_fp16_graph(model)
        return out, report, None
    missing = [n for n in plan.activations if n not in calib.tensors]
    if missing:
        raise SkEdgeError(
            f"calib.json has no range for '{missing[0]}' ({len(missing)} missing); "
            f"re-run `sk-edge calibrate -w {workdir} --images DIR --force`"
        )
    out, report = build_int8_graph(model, plan, calib.amax(plan.activations), mixed)
    return out, report, precision_mix(macs_by_node(model), plan)


def _checked(out: onnx.ModelProto, precision: str, plan, export) -> bytes:
    """``out`` serialised, once onnx.checker, the INT8 invariants and ONNX Runtime's CPU provider accept it."""
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise SkEdgeError(f"the {precision} graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    if precision == "int8":
        problems = int8_graph_problems(out, plan)
        if problems:
            raise SkEdgeError(f"the INT8 graph breaks {len(problems)} invariants, first: {problems[0]}")
    serialized = out.SerializeToString()
    # The graph must run on ONNX Runtime's CPU provider: that is where drift is measured.
    shape = list(export.input.shape)
    batch = 1 if isinstance(shape[0], str) else shape[0]
    with OnnxRuntimeRunner(serialized) as runner:
        runner(parity_inputs(tuple(shape[1:]), samples=batch))
    return serialized
