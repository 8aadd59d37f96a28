"""Write precision into the graph: Q/DQ pairs for INT8, casts and FP16 tensors for FP16.

TensorRT's strongly typed mode (the only mode in TensorRT 11) runs each layer in the
type its inputs have in the graph, so these passes decide what TensorRT will do:

- :func:`insert_qdq`: per-channel INT8 weights (stored as INT8 with a DequantizeLinear,
  4x smaller than FP32 weights) and per-tensor Quantize/DequantizeLinear pairs on the
  activations of a :class:`~sk_edge.quantize.plan.QuantPlan`; zero points are 0.
- :func:`convert_float_precision`: every float tensor and weight to FP16 except for the
  ops kept in FP32 by rule, with a Cast after the FP32 graph input and before the FP32
  graph output, so callers never see FP16.

Q/DQ scales take the type of the tensors they act on (FP16 in a mixed INT8/FP16 graph),
which needs opset 19; an FP32 scale would need a Cast after every DequantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference, version_converter

from .plan import QuantPlan

QDQ_MIN_OPSET = 13  # per-channel DequantizeLinear
FP16_QDQ_MIN_OPSET = 19  # Quantize/DequantizeLinear with FP16 scales
FLOAT_TYPES = (np.float32, np.float16)
INT8_MAX = 127


def _is_float(dtype) -> bool:
    return dtype is not None and np.dtype(dtype) in FLOAT_TYPES


def ensure_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` converted up to ``opset`` when it is older (ONNX's version converter)."""
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return version_converter.convert_version(model, opset) if current < opset else model


def quantize_weight(weight: np.ndarray, axis: int, scale_dtype) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel INT8: (int8 values, scales of ``scale_dtype``) along ``axis``.

    The values are rounded with the scale as stored, so DequantizeLinear reproduces
    exactly what was intended. An all-zero channel gets scale 1 (any positive scale
    represents it exactly). FP16 scales are clamped to FP16's smallest normal number: a
    channel whose max |w| is below ~3.8e-6 would otherwise get a scale that rounds to 0,
    which TensorRT's parser rejects ("Scale coefficients must all be positive"); below it,
    subnormal scales lose precision of their own. Such a channel uses fewer than 127 levels.
    """
    w = weight.astype(np.float64)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0)
    if scale_dtype == np.float16:
        scale = np.maximum(scale, float(np.finfo(np.float16).tiny))
    scale = scale.astype(scale_dtype)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.astype(np.float64).reshape(shape)), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8), scale


@dataclass
class PrecisionReport:
    quantized_weights: int = 0
    quantized_activations: int = 0
    casts: int = 0
    fp32_nodes: dict[str, str] = field(default_factory=dict)
    small_scales: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def insert_qdq(graph: gs.Graph, plan: QuantPlan, amax: dict[str, float], scale_dtype, report: PrecisionReport) -> None:
    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    fp16_normal_min = float(np.finfo(np.float16).tiny)
    for node_name, axis in plan.weights.items():
        node = nodes[node_name]
        weight = node.inputs[1]
        q, scale = quantize_weight(weight.values, axis, scale_dtype)
        if scale_dtype == np.float16 and float(scale.min()) <= fp16_normal_min:
            report.small_scales.append(weight.name)
        dequantized = gs.Variable(f"{weight.name}_dequantized", dtype=scale_dtype, shape=list(weight.shape))
        graph.nodes.append(
            gs.Node(
                "DequantizeLinear",
                f"{node_name}_weight_dq",
                attrs={"axis": axis},
                inputs=[
                    gs.Constant(f"{weight.name}_int8", q),
                    gs.Constant(f"{weight.name}_scale", scale),
                    gs.Constant(f"{weight.name}_zero_point", np.zeros(len(scale), dtype=np.int8)),
                ],
                outputs=[dequantized],
            )
        )
        node.inputs[1] = dequantized
        report.quantized_weights += 1
    for name, consumers in plan.consumers.items():
        tensor = tensors[name]
        scale = gs.Constant(f"{name}_scale", np.array(amax[name] / INT8_MAX, dtype=scale_dtype))
        zero = gs.Constant(f"{name}_zero_point", np.array(0, dtype=np.int8))
        quantized = gs.Variable(f"{name}_quantized", dtype=np.int8, shape=tensor.shape)
        dequantized = gs.Variable(f"{name}_dequantized", dtype=scale_dtype, shape=tensor.shape)
        graph.nodes.append(gs.Node("QuantizeLinear", f"{name}_q", inputs=[tensor, scale, zero], outputs=[quantized]))
        graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_dq", inputs=[quantized, scale, zero], outputs=[dequantized]))
        for consumer in consumers:
            inputs = nodes[consumer].inputs
            for i, t in enumerate(inputs):
                if t is tensor:
                    inputs[i] = dequantized
        report.quantized_activations += 1


def convert_float_precision(graph: gs.Graph, keep_fp32: Callable[[gs.Node], str | None], report: PrecisionReport) -> None:
    """Run every node in FP16 except those ``keep_fp32`` names a reason for.

    Graph inputs and outputs stay FP32 (a Cast after each input, one before each output).
    """
    node_type = {}
    for node in graph.nodes:
        reason = keep_fp32(node)
        node_type[id(node)] = np.float32 if reason else np.float16
        if reason:
            report.fp32_nodes[node.name] = reason
    casts: dict[tuple[str, type], gs.Variable] = {}
    constants: dict[tuple[str, type], gs.Constant] = {}

    def cast(tensor: gs.Variable, to) -> gs.Variable:
        key = (tensor.name, to)
        if key not in casts:
            out = gs.Variable(f"{tensor.name}_as_{np.dtype(to).name}", dtype=to, shape=tensor.shape)
            graph.nodes.append(
                gs.Node(
                    "Cast",
                    f"{tensor.name}_cast_{np.dtype(to).name}",
                    attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(np.dtype(to))},
                    inputs=[tensor],
                    outputs=[out],
                )
            )
            casts[key] = out
            report.casts += 1
        return casts[key]

    def constant(c: gs.Constant, to) -> gs.Constant:
        key = (c.name, to)
        if key not in constants:
            constants[key] = gs.Constant(f"{c.name}_{np.dtype(to).name}", c.values.astype(to))
        return constants[key]

    original_nodes = list(graph.nodes)
    # Output types first, so that inputs can be compared against their producers' types.
    for node in original_nodes:
        want = node_type[id(node)]
        for out in node.outputs:
            if node.op == "QuantizeLinear":
                continue
            if _is_float(out.dtype):
                out.dtype = want
    for node in original_nodes:
        want = node_type[id(node)]
        for i, t in enumerate(node.inputs):
            if t is None or not t.name:
                continue
            if isinstance(t, gs.Constant):
                if _is_float(t.values.dtype) and t.values.dtype != want:
                    node.inputs[i] = constant(t, want)
            elif _is_float(t.dtype) and np.dtype(t.dtype) != np.dtype(want):
                node.inputs[i] = cast(t, want)
    # Graph outputs back to FP32 under their original names.
    for _k, out in enumerate(list(graph.outputs)):
        if _is_float(out.dtype) and np.dtype(out.dtype) != np.float32:
            producer = out.inputs[0]
            inner = gs.Variable(f"{out.name}_fp16", dtype=out.dtype, shape=out.shape)
            for j, t in enumerate(producer.outputs):
                if t is out:
                    producer.outputs[j] = inner
            for consumer in list(out.outputs):
                for j, t in enumerate(consumer.inputs):
                    if t is out:
                        consumer.inputs[j] = inner
            out.dtype = np.float32
            graph.nodes.append(
                gs.Node("Cast", f"{out.name}_cast_float32", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[inner], outputs=[out])
            )
            report.casts += 1


def export_graph(graph: gs.Graph, opset: int) -> onnx.ModelProto:
    graph.cleanup().toposort()
    graph.opset = opset
    model = gs.export_onnx(graph)
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model, strict_mode=True)
