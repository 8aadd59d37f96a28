"""An engine's fused layer plan, read from what TensorRT itself reports, and checked against the graph's claims.

Two sources, one shape (:class:`PlanLayer`):

- TensorRT-RTX: with ``ProfilingVerbosity.DETAILED`` its builder logs one VERBOSE message that starts
  ``Layers:`` and has one line per fused layer: ``Name: ..., LayerType: ..., Inputs: [ {...} ],
  Constants: [ {...} ], Outputs: [ {...} ], TacticName: ..., StreamId: ..., Metadata: [ONNX Layer:
  a][ONNX Layer: b]``, each tensor with its ``Datatype`` (Int8 / Half / Float ...). Read on a
  machine without a GPU: the engine inspector would need a deserialized engine, which needs one.
- TensorRT: the engine inspector's JSON (``LayerInformationFormat.JSON``), whose layers give
  ``Format/Datatype`` per tensor, ``Weights.Type`` and, from 10.x, the same ``Metadata``.

The plan is then mapped back to the ONNX graph the engine was built from: each Conv/Gemm with
constant weights to the engine layer that computes it. :func:`precision_violations` names every
layer the engine computes in another precision than the graph gives it (above all: a layer the
Q/DQ graph quantized that the engine does not run with INT8 inputs and INT8 weights), so the
build never claims a precision the engine does not honour.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

# Engine layer types that compute a convolution or matrix product: TensorRT-RTX's ("correlation",
# "gemm"), the inspector's ("CaskConvolution", "CaskGemm", "Convolution", "MatrixMultiply", ...).
_COMPUTE_WORDS = ("conv", "correlation", "gemm", "matrixmultiply", "matmul", "fullyconnected", "deconvolution")
# ONNX ops that only move a tensor between precisions: a layer made of nothing else is a reformat.
CONVERT_OPS = frozenset({"Cast", "QuantizeLinear", "DequantizeLinear", "Identity"})
WEIGHTED_OPS = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})

# Datatype spellings in the two reports -> sk-edge's names.
_DTYPE_WORDS = (
    ("int8", "int8"),
    ("half", "fp16"),
    ("fp16", "fp16"),
    ("bf16", "bf16"),
    ("float", "fp32"),
    ("fp32", "fp32"),
    ("int32", "int32"),
    ("int64", "int64"),
    ("bool", "bool"),
    ("fp8", "fp8"),
)


def dtype_name(text: str) -> str:
    """'Int8' / 'Half' / 'Float' / 'Row major linear FP16 format' -> int8 / fp16 / fp32 ('other' when unknown)."""
    low = str(text).lower()
    for word, name in _DTYPE_WORDS:
        if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", low):
            return name
    return "other"


@dataclass(frozen=True)
class PlanLayer:
    """One layer of the fused plan."""

    name: str
    layer_type: str
    inputs: tuple[str, ...]  # datatypes of the activation inputs
    weights: str | None  # datatype of the weights (the first constant of two or more dimensions), if any
    outputs: tuple[str, ...]
    onnx_nodes: tuple[str, ...]  # the ONNX nodes TensorRT says the layer absorbed

    @property
    def computes(self) -> bool:
        low = self.layer_type.lower()
        return any(word in low for word in _COMPUTE_WORDS)

    @property
    def precision(self) -> str:
        """The layer's output precision (what the summary counts)."""
        return self.outputs[0] if self.outputs else "other"

    @property
    def int8(self) -> bool:
        """INT8 inputs and INT8 weights: the layer computes in INT8."""
        return bool(self.inputs) and self.inputs[0] == "int8" and self.weights == "int8"

    @property
    def compute_precision(self) -> str:
        """int8 for INT8 inputs and weights; else the weights' type (a strongly typed engine casts the input to it)."""
        if self.int8:
            return "int8"
        return self.weights or (self.inputs[0] if self.inputs else "other")

    def as_dict(self) -> dict:
        return {**asdict(self), "inputs": list(self.inputs), "outputs": list(self.outputs), "onnx_nodes": list(self.onnx_nodes)}

    @classmethod
    def from_dict(cls, d: dict) -> "PlanLayer":
        return cls(
            str(d["name"]),
            str(d["layer_type"]),
            tuple(d["inputs"]),
            d.get("weights"),
            tuple(d["outputs"]),
            tuple(d["onnx_nodes"]),
        )


# --- TensorRT-RTX: the builder's "Layers:" message -----------------------------------------------

_FIELD = re.compile(r"(?:^|, )(Name|LayerType|TacticName|StreamId): ([^,]*)")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
_DATATYPE = re.compile(r"Datatype: ([A-Za-z0-9]+)")
_DIMS = re.compile(r"Dimensions: \[([^\]]*)\]")


def is_layers_message(message: str) -> bool:
    return message.startswith("Layers:")


def _section(line: str, key: str) -> str:
    """The text of ``key: [ ... ]`` in one layer line (brackets nest one level: the tensors' dimensions)."""
    start = line.find(f"{key}: [")
    if start < 0:
        return ""
    depth, i = 0, start + len(key) + 2
    for j in range(i, len(line)):
        depth += {"[": 1, "]": -1}.get(line[j], 0)
        if depth == 0:
            return line[i + 1 : j]
    return line[i + 1 :]


def _tensors(section: str) -> list[tuple[str, int]]:
    """(datatype, number of dimensions) of each tensor ``{ ... }`` in a section."""
    out = []
    for tensor in re.findall(r"\{([^{}]*)\}", section):
        dtype = _DATATYPE.search(tensor)
        dims = _DIMS.search(tensor)
        rank = len([d for d in dims.group(1).split(",") if d.strip()]) if dims else 0
        out.append((dtype_name(dtype.group(1)) if dtype else "other", rank))
    return out


def parse_builder_layers(message: str) -> list[PlanLayer]:
    """The layers of TensorRT-RTX's ``Layers:`` message, in plan order."""
    layers = []
    for line in message.splitlines():
        if not line.startswith("Name: "):
            continue
        fields = dict(_FIELD.findall(line.split(", Inputs: [")[0]))
        constants = [dtype for dtype, rank in _tensors(_section(line, "Constants")) if rank >= 2]
        layers.append(
            PlanLayer(
                name=fields.get("Name", "").strip(),
                layer_type=fields.get("LayerType", "").strip(),
                inputs=tuple(d for d, _ in _tensors(_section(line, "Inputs"))),
                weights=constants[0] if constants else None,
                outputs=tuple(d for d, _ in _tensors(_section(line, "Outputs"))),
                onnx_nodes=tuple(n.strip() for n in _ONNX_LAYER.findall(line)),
            )
        )
    return layers


# --- TensorRT: the engine inspector's JSON --------------------------------------------------------


def parse_inspector_layers(report: dict) -> list[PlanLayer]:
    """The layers of an engine inspector report (``{"Layers": [...]}``); a layer given as a bare name has no detail."""
    layers = []
    for entry in report.get("Layers", []):
        if not isinstance(entry, dict):
            layers.append(PlanLayer(str(entry), "", (), None, (), ()))
            continue
        weights = entry.get("Weights")
        layers.append(
            PlanLayer(
                name=str(entry.get("Name", "")),
                layer_type=str(entry.get("LayerType", "")),
                inputs=tuple(dtype_name(t.get("Format/Datatype", "")) for t in entry.get("Inputs", []) if isinstance(t, dict)),
                weights=dtype_name(weights.get("Type", "")) if isinstance(weights, dict) and weights.get("Count", 1) else None,
                outputs=tuple(dtype_name(t.get("Format/Datatype", "")) for t in entry.get("Outputs", []) if isinstance(t, dict)),
                onnx_nodes=tuple(n.strip() for n in _ONNX_LAYER.findall(str(entry.get("Metadata", "")))),
            )
        )
    return layers


# --- the plan against the graph -------------------------------------------------------------------


@dataclass(frozen=True)
class GraphFacts:
    """What the plan is checked against, read from the ONNX graph the engine was built from."""

    op_types: dict[str, str]  # node name -> op type
    macs: dict[str, float]  # weighted node -> multiply-accumulates
    precisions: dict[str, str]  # weighted node -> int8 (INT8 input and weights) / fp16 / fp32, as the graph types it

    @property
    def int8_nodes(self) -> frozenset[str]:
        return frozenset(n for n, p in self.precisions.items() if p == "int8")


def _compute_rank(layer: PlanLayer) -> int:
    """How surely a layer that absorbed a Conv/Gemm is the one computing it (lower is surer).

    0: a convolution or matrix layer by type ("correlation", "gemm", "CaskConvolution"); 1: a fused
    kernel whose name says it convolves ("__myl_CorrAddRelu", TensorRT-RTX's "runtime_fusion"); 2:
    any other layer with weights (TensorRT-RTX may run a small Gemm as a generated kernel). Layers
    without weights (the input's quantize, a pad) do not compute it.
    """
    if layer.computes:
        return 0
    fused_ops = layer.name.removeprefix("__myl_").split("_")[0].lower()
    if layer.name.startswith("__myl_") and any(op in fused_ops for op in ("corr", "conv", "gemm", "matm")):
        return 1
    return 2 if layer.weights is not None else 3


def compute_layers(layers: Iterable[PlanLayer], facts: GraphFacts) -> dict[str, PlanLayer]:
    """Each weighted ONNX node -> the engine layer that computes it (see :func:`_compute_rank`).

    Without ONNX metadata (TensorRT before 10.x), a conv/gemm layer whose name starts with the node's name.
    """
    best: dict[str, tuple[int, PlanLayer]] = {}
    for layer in layers:
        rank = _compute_rank(layer)
        if rank > 2:
            continue
        nodes = [n for n in layer.onnx_nodes if n in facts.macs]
        if not layer.onnx_nodes and rank == 0:
            nodes = [n for n in facts.macs if layer.name == n or layer.name.startswith((n + " ", n + "_"))]
        for node in nodes:
            if node not in best or rank < best[node][0]:
                best[node] = (rank, layer)
    return {node: layer for node, (_, layer) in best.items()}


def converts_only(layer: PlanLayer, facts: GraphFacts) -> bool:
    """A layer that only moves tensors between precisions (a reformat, or only casts and Q/DQ)."""
    if "reformat" in layer.layer_type.lower():
        return True
    ops = {facts.op_types.get(n) for n in layer.onnx_nodes}
    return bool(ops) and None not in ops and ops <= CONVERT_OPS


def precision_violations(layers: list[PlanLayer], facts: GraphFacts) -> list[str]:
    """One entry per Conv/Gemm whose engine layer computes in another precision than the graph gives it
    (INT8 inputs and weights for a quantized layer), naming what the engine runs instead."""
    computed = compute_layers(layers, facts)
    wrong = []
    for node, wanted in sorted(facts.precisions.items()):
        layer = computed.get(node)
        if layer is None:
            wrong.append(f"{node} (no engine layer computes it)")
        elif layer.compute_precision != wanted:
            ins = layer.inputs[0] if layer.inputs else "?"
            wrong.append(
                f"{node} ({wanted} in the graph; engine layer '{layer.name}': {ins} input, {layer.weights or '?'} weights)"
            )
    return wrong


def mapped(layers: list[PlanLayer]) -> bool:
    """Whether the plan names the ONNX nodes its layers absorbed (the check needs it)."""
    return any(layer.onnx_nodes for layer in layers)


def sk_unit(node_name: str) -> str:
    """'/stages/stages.1/stages.1.0/sk/fc/Conv' -> 'stages/stages.1/stages.1.0' (the module path)."""
    parts = node_name.strip("/").split("/")
    if "sk" in parts:
        return "/".join(parts[: parts.index("sk")])
    return "/".join(parts[:-1]) or node_name


def summarize(layers: list[PlanLayer], facts: GraphFacts | None, float_nodes: Iterable[str] = ()) -> dict:
    """Counts by precision, the SK units kept in floating point and, against the graph, the engine's own INT8 share."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.precision] = counts.get(layer.precision, 0) + 1
    summary: dict = {
        "layers": len(layers),
        "by_precision": counts,
        "dla_layers": sum(1 for layer in layers if "dla" in layer.layer_type.lower() or "dla" in layer.name.lower()),
        "float_sk_units": sorted({sk_unit(n) for n in float_nodes}),
        "mapped_to_onnx": mapped(layers),
    }
    if facts is None or not summary["mapped_to_onnx"]:
        return summary
    computed = compute_layers(layers, facts)
    total = sum(facts.macs.values()) or 1.0
    shares: dict[str, float] = {}
    for node, macs in facts.macs.items():
        where = computed[node].compute_precision if node in computed else "not found"
        shares[where] = shares.get(where, 0.0) + macs / total
    summary.update(
        {
            "weighted_layers": len(facts.macs),
            "weighted_layers_found": len(computed),
            "int8_layers": sum(1 for node in facts.macs if node in computed and computed[node].int8),
            "mac_share_by_precision": shares,
            "int8_mac_share": shares.get("int8", 0.0),
            "convert_only_layers": sum(1 for layer in layers if converts_only(layer, facts)),
        }
    )
    return summary
