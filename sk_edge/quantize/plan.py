"""Where the Q/DQ pairs go in an exported SKNet graph, following TensorRT's placement rules.

TensorRT's explicit-quantization guide ("Q/DQ Layer-Placement Recommendations") asks to:

1. quantize all inputs of weighted operations (Conv, Gemm): the activation per-tensor,
   the weights per output channel;
2. not quantize the outputs of weighted operations (the next consumer's input Q/DQ does);
3. quantize the residual input of a skip-connection Add, so that the Conv producing the
   other input fuses with the Add (and its ReLU) and runs entirely in INT8;
4. give a tensor that fans out one scale, whatever consumes it.

sk-edge adds one rule of its own: the **SK attention path stays in floating point** -
the global pooling of the branches, the fuse and select FCs, the gate and the branch
weighting. These tensors are tiny ((B, C, 1, 1): no speed to gain) and they steer which
kernel the unit selects; an INT8 error there changes every output channel of the unit.

The attention path is found structurally, not by node name: a tensor is *pooled* when
it comes from a GlobalAveragePool through ops whose other inputs are constants or pooled
too. Pooled nodes that lead to a node mixing a pooled with a spatial tensor (the gate
``Mul``) are the attention path; that mixing node and every op after it up to the next
Conv/Gemm are the branch weighting. The classifier (GlobalAveragePool -> Flatten -> Gemm)
is pooled but never mixes, so it is quantized like any other Gemm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

WEIGHTED_OPS = ("Conv", "Gemm")


@dataclass
class QuantPlan:
    """The Q/DQ placement for one graph.

    Attributes:
        activations: tensor name -> why it is quantized (e.g. ["input of Conv 'x'"]); one
            tensor may have several roles and always gets a single scale.
        consumers: tensor name -> the nodes that read it through its Q/DQ pair (other
            consumers, such as the attention path, keep reading the float tensor).
        weights: weighted node name -> output-channel axis of its weight.
        float_nodes: node name -> why it stays in floating point (attention path).
        notes: anything the planner chose not to do, for the report.
    """

    activations: dict[str, list[str]] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    float_nodes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def layers(self) -> list[str]:
        """The nodes that run in INT8 under this plan: weighted ops and fused residual Adds."""
        names = dict.fromkeys(self.weights)
        for consumers in self.consumers.values():
            names.update(dict.fromkeys(consumers))
        return list(names)

    def without(self, nodes: set[str]) -> "QuantPlan":
        """This plan with ``nodes`` left in floating point: no Q/DQ on their inputs or weights.

        A tensor keeps its Q/DQ pair while any other consumer still reads it quantized.
        """
        consumers = {t: [c for c in cs if c not in nodes] for t, cs in self.consumers.items()}
        consumers = {t: cs for t, cs in consumers.items() if cs}
        return QuantPlan(
            activations={t: self.activations[t] for t in consumers},
            consumers=consumers,
            weights={n: a for n, a in self.weights.items() if n not in nodes},
            float_nodes=dict(self.float_nodes),
            notes=self.notes + [f"kept in floating point by request: {', '.join(sorted(nodes))}"] if nodes else list(self.notes),
        )

    def summary(self) -> dict:
        return {
            "quantized_activations": len(self.activations),
            "quantized_weights": len(self.weights),
            "float_attention_nodes": len(self.float_nodes),
            "notes": self.notes,
        }


def _constant(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Constant)


def _producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if t.inputs else None


def _pooled_tensors(graph: gs.Graph) -> set[str]:
    """Names of tensors derived from a GlobalAveragePool only (plus constants)."""
    pooled: set[str] = set()
    for node in graph.nodes:  # graph is topologically sorted
        variables = [t for t in node.inputs if t is not None and not _constant(t) and t.name]
        if node.op == "GlobalAveragePool" or (variables and all(t.name in pooled for t in variables)):
            pooled.update(o.name for o in node.outputs)
    return pooled


def _reaches(start: list[gs.Node], targets: set[int]) -> set[int]:
    """ids of nodes among ``start`` from which some node in ``targets`` can be reached."""
    memo: dict[int, bool] = {}

    def visit(node: gs.Node) -> bool:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = False  # cycle guard; ONNX graphs are acyclic
        result = key in targets or any(visit(c) for o in node.outputs for c in o.outputs)
        memo[key] = result
        return result

    return {id(n) for n in start if visit(n)}


def _ancestors(t: gs.Tensor) -> set[str]:
    seen: set[str] = set()
    stack = [t]
    while stack:
        cur = stack.pop()
        for node in cur.inputs:
            for inp in node.inputs:
                if inp is not None and inp.name and inp.name not in seen and not _constant(inp):
                    seen.add(inp.name)
                    stack.append(inp)
    return seen


def _shortcut_input(add: gs.Node) -> gs.Tensor | None:
    """The skip-connection input of a residual Add, or None when there is none to tell."""
    a, b = add.inputs[0], add.inputs[1]
    pa, pb = _producer(a), _producer(b)
    a_conv, b_conv = pa is not None and pa.op == "Conv", pb is not None and pb.op == "Conv"
    if a_conv and not b_conv:
        return b
    if b_conv and not a_conv:
        return a
    if a_conv and b_conv and pa is not None and pb is not None:
        # Projection shortcut: its Conv reads the block input, an ancestor of the main path.
        if pa.inputs[0].name in _ancestors(b):
            return a
        if pb.inputs[0].name in _ancestors(a):
            return b
    return None


def _weight_axis(node: gs.Node) -> int:
    if node.op == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return 0


def plan_quantization(model: onnx.ModelProto, quantize_attention: bool = False, shapes_inferred: bool = False) -> QuantPlan:
    """Decide which tensors and weights of ``model`` (an sk-edge FP32 graph) get Q/DQ.

    ``quantize_attention=True`` drops sk-edge's own rule and quantizes the attention path
    like the rest (its FCs, and both inputs of the gate); it exists to measure what that
    rule protects (``benchmarks/precision_study.py``). ``shapes_inferred``: ONNX shape inference
    has already run on ``model`` (it costs 0.4 s on SKNet-50; calibration runs it once for all).
    """
    graph = gs.import_onnx(model if shapes_inferred else shape_inference.infer_shapes(model))
    graph.toposort()
    plan = QuantPlan()
    pooled = _pooled_tensors(graph)

    def is_pooled(t: gs.Tensor) -> bool:
        return t.name in pooled

    mixing = [
        n
        for n in graph.nodes
        if any(is_pooled(t) for t in n.inputs if t is not None and not _constant(t))
        and any(not is_pooled(t) for t in n.inputs if t is not None and not _constant(t))
    ]
    mixing_ids = {id(n) for n in mixing}
    pooled_nodes = [n for n in graph.nodes if n.outputs and all(is_pooled(o) for o in n.outputs)]
    attention_ids = _reaches(pooled_nodes, mixing_ids) - mixing_ids
    # Branch weighting: the mixing nodes and what follows them up to the next weighted op.
    weighting_ids: set[int] = set()
    stack = list(mixing)
    while stack:
        node = stack.pop()
        if id(node) in weighting_ids or node.op in WEIGHTED_OPS:
            continue
        weighting_ids.add(id(node))
        stack.extend(c for o in node.outputs for c in o.outputs)

    def quantize(t: gs.Tensor, consumer: gs.Node, why: str) -> None:
        plan.activations.setdefault(t.name, []).append(why)
        plan.consumers.setdefault(t.name, []).append(consumer.name)

    if quantize_attention:
        attention_ids = set()
        for node in mixing:
            for t in node.inputs:
                if t is not None and not _constant(t):
                    quantize(t, node, f"input of SK gate {node.op} '{node.name}'")
    else:
        for n in pooled_nodes:
            if id(n) in attention_ids:
                plan.float_nodes[n.name] = "SK attention path (pooled descriptor, FCs, gate)"
        for n in graph.nodes:
            if id(n) in weighting_ids:
                plan.float_nodes[n.name] = "SK branch weighting"

    for node in graph.nodes:
        if node.op in WEIGHTED_OPS and id(node) not in attention_ids:
            quantize(node.inputs[0], node, f"input of {node.op} '{node.name}'")
            if _constant(node.inputs[1]):
                plan.weights[node.name] = _weight_axis(node)
            else:
                plan.notes.append(f"{node.op} '{node.name}' has a non-constant weight; left unquantized")
        elif node.op == "Add" and id(node) not in weighting_ids and len(node.inputs) == 2:
            if any(_constant(t) or is_pooled(t) for t in node.inputs):
                continue
            shortcut = _shortcut_input(node)
            if shortcut is None:
                plan.notes.append(f"Add '{node.name}': no Conv input to fuse with; residual left unquantized")
            else:
                quantize(shortcut, node, f"residual input of Add '{node.name}'")
    return plan
