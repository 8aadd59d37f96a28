"""Where the multiply-accumulates are, and how many of them a Q/DQ plan runs in INT8.

The INT8 share of MACs is what "INT8" means to a user: a graph that kept most of its
convolutions in floating point is not an INT8 model, whatever its file is called. Build
prints it, model.int8.json records it, verify.md shows it, and the accuracy budget may not
push the floating-point share past ``--max-float-share``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import shape_inference

from .options import DEFAULT_MAX_FLOAT_SHARE  # noqa: F401 - re-exported
from .plan import WEIGHTED_OPS, QuantPlan


# Nodes a constant weight passes through on its way to a Conv/Gemm in sk-edge's graphs:
# DequantizeLinear (INT8 weights), Cast (FP16 weights with FP32 compute kept).
_WEIGHT_PATH_OPS = ("DequantizeLinear", "Cast")


def _weight_initializer(name: str, inits: dict, producers: dict) -> str | None:
    """The initializer behind a weight input, through DequantizeLinear / Cast nodes."""
    while name not in inits:
        node = producers.get(name)
        if node is None or node.op_type not in _WEIGHT_PATH_OPS:
            return None
        name = node.input[0]
    return name


def macs_by_node(model: onnx.ModelProto) -> dict[str, float]:
    """Multiply-accumulates of every Conv and Gemm with constant weights, from inferred shapes.

    Works on the FP32 graph and on the precision graphs (weights behind DequantizeLinear or Cast).
    """
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    }
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    macs = {}
    for n in model.graph.node:
        weight = _weight_initializer(n.input[1], inits, producers) if n.op_type in WEIGHTED_OPS and len(n.input) > 1 else None
        if weight is not None:
            out = shapes.get(n.output[0], [])
            spatial = int(np.prod(out[2:])) if len(out) > 2 else 1
            macs[n.name] = float(np.prod(inits[weight])) * spatial
    return macs


def graph_int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Conv/Gemm nodes the graph itself runs in INT8: the input and the weights both come out of a
    DequantizeLinear of INT8 data. Read from the graph, not from any sidecar's account of it."""
    producers = {o: n for n in model.graph.node for o in n.output}
    int8_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}

    def dequantized_int8(name: str, weight: bool) -> bool:
        node = producers.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return False
        source = node.input[0]
        if weight:
            return source in int8_inits
        q = producers.get(source)  # activations: QuantizeLinear to INT8 (its zero point's type)
        return q is not None and q.op_type == "QuantizeLinear" and (len(q.input) < 3 or q.input[2] in int8_inits)

    return {
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHTED_OPS
        and len(n.input) > 1
        and dequantized_int8(n.input[0], False)
        and dequantized_int8(n.input[1], True)
    }


_FLOAT_NAMES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


def weighted_node_precisions(model: onnx.ModelProto, weighted: Iterable[str]) -> dict[str, str]:
    """int8 / fp16 / fp32 for each of the ``weighted`` nodes, as the graph types it: INT8 when its input and
    weights are dequantized INT8, else the type its weights reach it in (an initializer's, or a Cast's ``to``)."""
    int8 = graph_int8_nodes(model)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    out = {}
    for name in weighted:
        if name in int8:
            out[name] = "int8"
            continue
        tensor, dtype = nodes[name].input[1], None
        while dtype is None:
            producer = producers.get(tensor)
            if tensor in inits:
                dtype = inits[tensor]
            elif producer is not None and producer.op_type == "Cast":
                dtype = next(a.i for a in producer.attribute if a.name == "to")
            elif producer is not None and producer.op_type == "DequantizeLinear":
                tensor = producer.input[0]
                continue
            else:
                break
        out[name] = _FLOAT_NAMES.get(dtype, "other") if dtype is not None else "other"
    return out


def graph_facts(model: onnx.ModelProto):
    """What an engine's plan is checked against (:class:`~sk_edge.backends.layer_plan.GraphFacts`)."""
    from ..backends.layer_plan import GraphFacts

    macs = macs_by_node(model)
    return GraphFacts(
        op_types={n.name: n.op_type for n in model.graph.node}, macs=macs, precisions=weighted_node_precisions(model, macs)
    )


def int8_nodes(plan: QuantPlan) -> set[str]:
    """Weighted nodes that run in INT8 under ``plan``: INT8 weights and a quantized input."""
    reads_quantized = {node for consumers in plan.consumers.values() for node in consumers}
    return set(plan.weights) & reads_quantized


def precision_mix(macs: dict[str, float], plan: QuantPlan) -> dict:
    """The INT8 and floating-point shares of the MACs under ``plan``."""
    total = sum(macs.values())
    int8 = sum(m for name, m in macs.items() if name in int8_nodes(plan))
    share = int8 / total if total else 0.0
    return {
        "macs": total,
        "int8_mac_share": share,
        "float_mac_share": 1.0 - share,
        "int8_layers": len(int8_nodes(plan)),
        "weighted_layers": len(macs),
    }


def graph_precision_mix(model: onnx.ModelProto) -> dict:
    """The INT8 and floating-point shares of the MACs of ``model`` as the graph itself types them (the keys of
    :func:`precision_mix`): what a verdict reports, read from the graph it judged, never from a sidecar."""
    macs = macs_by_node(model)
    int8 = graph_int8_nodes(model) & set(macs)
    total = sum(macs.values())
    share = sum(macs[n] for n in int8) / total if total else 0.0
    return {
        "macs": total,
        "int8_mac_share": share,
        "float_mac_share": 1.0 - share,
        "int8_layers": len(int8),
        "weighted_layers": len(macs),
    }
