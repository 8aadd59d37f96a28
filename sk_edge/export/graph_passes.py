"""Clean-up passes on the exported ONNX graph, written with onnx-graphsurgeon.

torch's exporter leaves things TensorRT and the later quantization pass do not want:
``Identity`` nodes aliasing shared weights, ``Constant`` nodes for shapes and split sizes,
and (when a BatchNorm does not directly follow a convolution, or an exporter does not
fold in eval mode) ``BatchNormalization`` nodes. The TorchScript exporter already fuses
Conv+BatchNorm in eval mode, so :func:`fold_batchnorm` usually finds nothing after it;
it is the guarantee, not the common path, and it counts what it did. The torch.export-based
exporter spells a global average pool differently; :func:`canonical_pooling` makes both alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .batchnorm import bn_scale_shift, fold_into_weights


@dataclass
class PassReport:
    identity_removed: int = 0
    constants_folded: int = 0
    batchnorm_folded_into_conv: int = 0
    batchnorm_folded_into_gemm: int = 0
    batchnorm_to_scale: int = 0
    reduce_mean_to_global_pool: int = 0
    reshape_to_flatten: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _swap(tensors: list, old: gs.Tensor, new: gs.Tensor) -> None:
    # graphsurgeon keeps node <-> tensor links in sync on item assignment (not on slices).
    for i, t in enumerate(tensors):
        if t is old:
            tensors[i] = new


def _replace_tensor(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Point every consumer (and the graph outputs) of ``old`` at ``new``."""
    for consumer in list(old.outputs):
        _swap(consumer.inputs, old, new)
    _swap(graph.outputs, old, new)


def remove_identity(graph: gs.Graph, report: PassReport) -> None:
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs and (isinstance(src, gs.Constant) or src in graph.inputs or src in graph.outputs):
            continue  # the graph output must keep a producer; keep this rare Identity
        node.outputs.clear()
        if dst in graph.outputs:
            # Keep the graph output's name: the producer of src writes dst instead.
            producer = src.inputs[0]
            _swap(producer.outputs, src, dst)
            _replace_tensor(graph, src, dst)
        else:
            _replace_tensor(graph, dst, src)
        report.identity_removed += 1


def fold_constants(graph: gs.Graph, report: PassReport) -> None:
    """Turn Constant nodes and constant sub-graphs into initializers."""
    before = sum(1 for n in graph.nodes if n.op == "Constant")
    graph.fold_constants().cleanup()
    report.constants_folded = before - sum(1 for n in graph.nodes if n.op == "Constant")


def _bn_params(node: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    if len(node.inputs) < 5 or not all(isinstance(t, gs.Constant) for t in node.inputs[1:5]):
        return None
    if node.attrs.get("training_mode", 0) or len([o for o in node.outputs if o.outputs]) > 1:
        return None
    gamma, beta, mean, var = (t.values for t in node.inputs[1:5])
    return bn_scale_shift(gamma, beta, mean, var, float(node.attrs.get("epsilon", 1e-5)))


def _sole_producer(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    """The node producing ``tensor`` when nothing but one BatchNorm reads it."""
    if not tensor.inputs or len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.inputs[0]


def _fold_into_conv(conv: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    weight = conv.inputs[1]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if not isinstance(weight, gs.Constant) or (bias is not None and not isinstance(bias, gs.Constant)):
        return False
    w, b = fold_into_weights(weight.values, None if bias is None else bias.values, scale, shift)
    conv.inputs[1] = gs.Constant(f"{weight.name}_bnfolded", w)
    b_tensor = gs.Constant(f"{conv.name or weight.name}_bias_bnfolded", b)
    if bias is None:
        conv.inputs.append(b_tensor)
    else:
        conv.inputs[2] = b_tensor
    return True


def _fold_into_gemm(gemm: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    """Y = alpha * A @ op(W) + beta * C, op = transpose when transB; BN acts on Y's columns."""
    weight = gemm.inputs[1]
    c = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if gemm.attrs.get("transA", 0) or not isinstance(weight, gs.Constant):
        return False
    if c is not None and not isinstance(c, gs.Constant):
        return False
    beta = float(gemm.attrs.get("beta", 1.0))  # alpha stays as it is: it scales A @ op(W) alone
    n = scale.shape[0]
    w = weight.values if gemm.attrs.get("transB", 0) else weight.values.T  # (N, K)
    if c is not None and c.values.size not in (1, n):
        return False  # a per-row bias cannot absorb a per-column scale
    cvals = np.zeros(n) if c is None else np.broadcast_to(c.values.reshape(-1), (n,))
    # alpha * A @ (W s)^T + [beta * C s + t]; keep alpha, put the whole bias in C with beta = 1.
    w_new, _ = fold_into_weights(w, None, scale, np.zeros(n))
    c_new = (beta * cvals.astype(np.float64)) * scale + shift
    if not gemm.attrs.get("transB", 0):
        w_new = np.ascontiguousarray(w_new.T)
    gemm.inputs[1] = gs.Constant(f"{weight.name}_bnfolded", w_new.astype(weight.values.dtype))
    c_tensor = gs.Constant(f"{gemm.name or weight.name}_bias_bnfolded", c_new.astype(weight.values.dtype))
    if c is None:
        gemm.inputs.append(c_tensor)
    else:
        gemm.inputs[2] = c_tensor
    gemm.attrs["beta"] = 1.0
    return True


def fold_batchnorm(graph: gs.Graph, report: PassReport) -> None:
    """Fold each BatchNormalization into the Conv/Gemm before it, else make it Mul + Add."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        params = _bn_params(bn)
        if params is None:
            report.notes.append(f"BatchNormalization '{bn.name}' has non-constant or training inputs; left as is")
            continue
        scale, shift = params
        x, y = bn.inputs[0], bn.outputs[0]
        producer = _sole_producer(graph, x)
        folded = False
        if producer is not None and producer.op == "Conv":
            folded = _fold_into_conv(producer, scale, shift)
            report.batchnorm_folded_into_conv += folded
        elif producer is not None and producer.op == "Gemm":
            folded = _fold_into_gemm(producer, scale, shift)
            report.batchnorm_folded_into_gemm += folded
        if folded and producer is not None:
            bn.outputs.clear()
            _swap(producer.outputs, x, y)
            continue
        # No foldable producer: the same affine map as a broadcast Mul and Add.
        rank = len(x.shape) if x.shape is not None else 4
        bshape = (-1,) + (1,) * max(rank - 2, 0)
        dtype = bn.inputs[1].values.dtype
        scaled = gs.Variable(f"{y.name}_scaled", dtype=x.dtype, shape=x.shape)
        mul = gs.Node(
            "Mul",
            f"{bn.name}_scale",
            inputs=[x, gs.Constant(f"{bn.name}_s", scale.reshape(bshape).astype(dtype))],
            outputs=[scaled],
        )
        add = gs.Node(
            "Add",
            f"{bn.name}_shift",
            inputs=[scaled, gs.Constant(f"{bn.name}_t", shift.reshape(bshape).astype(dtype))],
            outputs=[y],
        )
        bn.outputs.clear()
        graph.nodes.extend([mul, add])
        report.batchnorm_to_scale += 1


def _reduced_axes(node: gs.Node) -> list[int] | None:
    """A ReduceMean's axes: an attribute up to opset 17, a constant second input from 18."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
        return [int(a) for a in node.inputs[1].values.reshape(-1)]
    return None


def _is_spatial_mean(node: gs.Node) -> bool:
    if node.op != "ReduceMean" or not node.inputs:
        return False  # the op first: other nodes (a Constant left unfolded) may have no input at all
    x = node.inputs[0]
    if x.shape is None or len(x.shape) != 4 or not node.attrs.get("keepdims", 1):
        return False
    axes = _reduced_axes(node)
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def _is_flatten_of_pool(node: gs.Node) -> bool:
    """Reshape(GlobalAveragePool(x), [N or -1 or 0, C]): what Flatten(axis=1) does to an N x C x 1 x 1 tensor."""
    if node.op != "Reshape" or not isinstance(node.inputs[1], gs.Constant):
        return False
    source = node.inputs[0]
    if not source.inputs or source.inputs[0].op != "GlobalAveragePool" or source.shape is None:
        return False
    target = [int(d) for d in node.inputs[1].values.reshape(-1)]
    if node.attrs.get("allowzero", 0) and 0 in target:
        return False  # with allowzero a 0 is an empty dimension, not "copy this one"
    channels = source.shape[1]
    return len(target) == 2 and target[0] in (-1, 0, source.shape[0]) and target[1] in (-1, channels) and target.count(-1) <= 1


def _drop_inputs_after_first(node: gs.Node) -> None:
    while len(node.inputs) > 1:
        del node.inputs[-1]  # one item at a time: graphsurgeon keeps its links in sync on items, not slices


def canonical_pooling(graph: gs.Graph, report: PassReport) -> None:
    """Spell a global average pool the one way every later pass expects.

    The torch.export-based exporter writes ``adaptive_avg_pool2d(x, 1)`` as ReduceMean over
    H and W and ``flatten`` as a Reshape; the TorchScript exporter writes GlobalAveragePool and
    Flatten. The INT8 planner, the FP16 keep-list and the DLA pass look for GlobalAveragePool,
    so both exporters' graphs are brought to that form (the same mean over H and W; a Reshape
    with allowzero and a 0 in its shape is left alone)."""
    for node in [n for n in graph.nodes if _is_spatial_mean(n)]:
        node.op, node.attrs = "GlobalAveragePool", {}
        _drop_inputs_after_first(node)
        report.reduce_mean_to_global_pool += 1
    for node in [n for n in graph.nodes if _is_flatten_of_pool(n)]:
        node.op, node.attrs = "Flatten", {"axis": 1}
        _drop_inputs_after_first(node)
        report.reshape_to_flatten += 1


def clean_exported_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    """Run every clean-up pass; return the new model and what each pass did."""
    report = PassReport()
    model = onnx.shape_inference.infer_shapes(model)
    graph = gs.import_onnx(model)
    remove_identity(graph, report)
    fold_batchnorm(graph, report)
    fold_constants(graph, report)
    canonical_pooling(graph, report)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out.ir_version = model.ir_version
    del out.graph.value_info[:]  # stale after the edits; recomputed by whoever needs it
    return out, report
