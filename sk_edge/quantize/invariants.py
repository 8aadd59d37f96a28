"""What every INT8 graph sk-edge writes must satisfy; checked before it is written."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .plan import QuantPlan


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def int8_graph_problems(model: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """Violations, one line each: scales finite and > 0, zero points INT8 zeros, weight
    scales per output channel on the plan's axis, no dequantized value feeding the
    attention path, FP32 graph input and output."""
    problems: list[str] = []
    inits = _initializers(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weight_axes = plan.weights
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = f"{node.op_type} '{node.name}'"
        scale = inits.get(node.input[1])
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None:
            problems.append(f"{label}: scale is not an initializer")
            continue
        if not np.all(np.isfinite(scale.astype(np.float64))) or not np.all(scale > 0):
            problems.append(f"{label}: scale not finite and positive")
        if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
            problems.append(f"{label}: zero point must be an INT8 zero")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
            weight = inits[node.input[0]]
            users = consumers.get(node.output[0], [])
            for user in users:
                want = weight_axes.get(user.name)
                if want is None:
                    problems.append(f"{label}: feeds '{user.name}', which the plan does not quantize")
                elif axis != want or scale.shape != (weight.shape[want],):
                    problems.append(f"{label}: weight scales must be per channel on axis {want}")
        elif scale.ndim != 0:
            problems.append(f"{label}: activation scale must be per tensor")
        # The SK unit's output (made by the branch weighting) is quantized for the next
        # Conv; what must never happen is a quantized value flowing *into* the path.
        if node.op_type == "DequantizeLinear":
            for user in consumers.get(node.output[0], []):
                if user.name in plan.float_nodes:
                    problems.append(f"{label}: feeds attention node '{user.name}'")
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"graph I/O '{value.name}' must stay FP32")
    return problems
