"""Invariants of an exported sk-edge graph, checked on every export and by the tests.

A clean FP32 graph has:
- no Softmax (a ``softmax4d`` select form may keep one, over the last axis of a 4-D
  tensor only, when asked for), and therefore no cross-branch Softmax TensorRT would
  have to transpose for;
- no tensor of rank 5 or more, and every tensor's rank known to shape inference;
- no BatchNormalization (folded), no Identity, no Constant node (initializers instead);
- nothing dangling: every node output, initializer and graph input is used.
"""

from __future__ import annotations

import onnx
from onnx import shape_inference

FORBIDDEN_OPS = {
    "BatchNormalization": "BatchNorm must be folded into the convolution before it",
    "Identity": "Identity nodes must be removed",
    "Constant": "constants must be initializers",
}


def _ranks(model: onnx.ModelProto) -> dict[str, int | None]:
    ranks: dict[str, int | None] = {}
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        t = vi.type.tensor_type
        ranks[vi.name] = len(t.shape.dim) if t.HasField("shape") else None
    for init in model.graph.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def graph_problems(model: onnx.ModelProto, allow_last_axis_softmax: bool = False) -> list[str]:
    """Every violated invariant, one line each (empty when the graph is clean)."""
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        problems.append(f"onnx.checker: {str(exc).strip().splitlines()[0]}")
    inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    ranks = _ranks(inferred)
    graph = inferred.graph

    used = {name for node in graph.node for name in node.input if name}
    used |= {o.name for o in graph.output}
    for node in graph.node:
        label = f"{node.op_type} '{node.name}'"
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"{label}: {FORBIDDEN_OPS[node.op_type]}")
        if node.op_type == "Softmax":
            rank = ranks.get(node.input[0])
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            last = rank is not None and axis in (-1, rank - 1)
            if not (allow_last_axis_softmax and rank == 4 and last):
                problems.append(
                    f"{label}: Softmax over axis {axis} of a rank-{rank} tensor; the SK select step "
                    "was not rewritten (an SK unit the rewrite does not recognise?)"
                )
        if not any(o in used for o in node.output if o):
            problems.append(f"{label}: dangling, none of its outputs is used")
        for name in list(node.input) + list(node.output):
            if not name:
                continue
            rank = ranks.get(name)
            if rank is None:
                problems.append(f"{label}: shape inference cannot tell the rank of '{name}'")
            elif rank >= 5:
                problems.append(f"{label}: tensor '{name}' has rank {rank}; 5-D tensors are not allowed")
    for init in graph.initializer:
        if init.name not in used:
            problems.append(f"initializer '{init.name}' is never used")
    for inp in graph.input:
        if inp.name not in used:
            problems.append(f"graph input '{inp.name}' is never used")
    # A name listed twice (a node input seen from two nodes) would repeat its rank problem.
    return list(dict.fromkeys(problems))
