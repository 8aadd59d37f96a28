"""Where the multiply-accumulates are, and how many of them a Q/DQ plan runs in INT8.

The INT8 share of MACs is what "INT8" means to a user: a graph that kept most of its
convolutions in floating point is not an INT8 model, whatever its file is called. Build
prints it, model.int8.json records it, verify.md shows it, and the accuracy budget may not
push the floating-point share past ``--max-float-share``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

from .plan import WEIGHTED_OPS, QuantPlan

# The accuracy budget may keep at most this share of the MACs in floating point before the
# build fails: past it the engine is mostly FP16, and the likely cause is calibration images
# unlike the evaluation images, which more floating point only hides.
DEFAULT_MAX_FLOAT_SHARE = 0.25


def macs_by_node(model: onnx.ModelProto) -> dict[str, float]:
    """Multiply-accumulates of every Conv and Gemm with constant weights, from inferred shapes."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = {}
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits:
            out = shapes.get(n.output[0], [])
            spatial = int(np.prod(out[2:])) if len(out) > 2 else 1
            macs[n.name] = float(np.prod(inits[n.input[1]])) * spatial
    return macs


def int8_nodes(plan: QuantPlan) -> set[str]:
    """Weighted nodes that run in INT8 under ``plan``: INT8 weights and a quantized input."""
    reads_quantized = {node for consumers in plan.consumers.values() for node in consumers}
    return set(plan.weights) & reads_quantized


def precision_mix(macs: dict[str, float], plan: QuantPlan) -> dict:
    """The INT8 and floating-point shares of the MACs under ``plan``."""
    total = sum(macs.values())
    int8 = sum(m for name, m in macs.items() if name in int8_nodes(plan))
    share = int8 / total if total else 0.0
    return {"macs": total, "int8_mac_share": share, "float_mac_share": 1.0 - share,
            "int8_layers": len(int8_nodes(plan)), "weighted_layers": len(macs)}
