"""ONNX clean-up passes on hand-built graphs, checked numerically with ONNX Runtime."""

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import INPUT_NAME, ExportOptions
from sk_edge.export.graph_passes import clean_exported_graph
from sk_edge.export.hygiene import graph_problems
from sk_edge.models import build_model

from conftest import TINY_SKNET_ARGS, randomize_batchnorm

rng = np.random.default_rng(0)


def _init(name, *shape, positive=False):
    values = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
    return numpy_helper.from_array(values.astype(np.float32), name)


def _bn(prefix, x, y, channels):
    inits = [
        _init(f"{prefix}_g", channels, positive=True),
        _init(f"{prefix}_b", channels),
        _init(f"{prefix}_m", channels),
        _init(f"{prefix}_v", channels, positive=True),
    ]
    node = helper.make_node(
        "BatchNormalization", [x] + [i.name for i in inits], [y], name=prefix, epsilon=1e-3
    )
    return node, inits


def _graph_with_batchnorms(trans_b: int, gemm_bias: bool) -> onnx.ModelProto:
    """input -> Conv -> BN -> Relu -> BN -> Identity -> GAP -> Flatten -> Gemm -> BN -> output"""
    nodes, inits = [], [_init("conv_w", 8, 3, 3, 3)]
    nodes.append(helper.make_node("Conv", [INPUT_NAME, "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]))
    n, i = _bn("bn_after_conv", "c", "c_bn", 8)
    nodes.append(n), inits.extend(i)
    nodes.append(helper.make_node("Relu", ["c_bn"], ["r"], name="relu"))
    n, i = _bn("bn_after_relu", "r", "r_bn", 8)  # nothing to fold into: becomes Mul + Add
    nodes.append(n), inits.extend(i)
    nodes.append(helper.make_node("Identity", ["r_bn"], ["r_id"], name="identity"))
    nodes.append(helper.make_node("GlobalAveragePool", ["r_id"], ["p"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], name="flatten"))
    inits.append(_init("fc_w", *((5, 8) if trans_b else (8, 5))))
    gemm_inputs = ["f", "fc_w"]
    if gemm_bias:
        inits.append(_init("fc_b", 5))
        gemm_inputs.append("fc_b")
    nodes.append(helper.make_node("Gemm", gemm_inputs, ["g"], name="fc", transB=trans_b, alpha=0.5, beta=2.0))
    n, i = _bn("bn_after_fc", "g", "logits", 5)
    nodes.append(n), inits.extend(i)
    graph = helper.make_graph(
        nodes,
        "bn_test",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("gemm_bias", [False, True])
def test_batchnorm_folding_is_exact(trans_b, gemm_bias):
    original = _graph_with_batchnorms(trans_b, gemm_bias)
    onnx.checker.check_model(original)
    cleaned, report = clean_exported_graph(original)
    assert report.batchnorm_folded_into_conv == 1
    assert report.batchnorm_folded_into_gemm == 1
    assert report.batchnorm_to_scale == 1
    assert report.identity_removed == 1
    assert graph_problems(cleaned) == []
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = OnnxRuntimeRunner(original.SerializeToString(), optimization="disabled")(x)
    out = OnnxRuntimeRunner(cleaned.SerializeToString(), optimization="disabled")(x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert cleaned.graph.output[0].name == "logits"


def test_identity_feeding_the_graph_output_keeps_the_output_name():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", [INPUT_NAME], ["r"], name="relu"),
            helper.make_node("Identity", ["r"], ["out"], name="id"),
        ],
        "g",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    cleaned, report = clean_exported_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert report.identity_removed == 1
    assert [n.op_type for n in cleaned.graph.node] == ["Relu"]
    assert cleaned.graph.node[0].output[0] == "out" == cleaned.graph.output[0].name


def test_hygiene_catches_the_naive_export():
    """The checker can fail: torch's plain export of an SKNet breaks three invariants."""
    module = randomize_batchnorm(build_model("sknet26", input_size=64, args=TINY_SKNET_ARGS).module)
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), buf, dynamo=False, opset_version=17)
    problems = graph_problems(onnx.load_from_string(buf.getvalue()))
    text = "\n".join(problems)
    assert "Softmax over axis 1 of a rank-5 tensor" in text
    assert "has rank 5; 5-D tensors are not allowed" in text
    assert "Identity nodes must be removed" in text or "constants must be initializers" in text


def test_hygiene_flags_dangling_nodes_and_unused_initializers():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", [INPUT_NAME], ["out"], name="relu"),
            helper.make_node("Neg", [INPUT_NAME], ["unused"], name="dangling"),
        ],
        "g",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [_init("orphan", 3)],
    )
    problems = graph_problems(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert any("Neg 'dangling': dangling" in p for p in problems)
    assert any("initializer 'orphan' is never used" in p for p in problems)


def test_softmax4d_is_allowed_only_on_the_last_axis_of_4d_tensors():
    from sk_edge.export import to_onnx

    module = build_model("sknet26", input_size=64, args={**TINY_SKNET_ARGS, "branches": 3}).module
    model, *_ = to_onnx(module, (3, 64, 64), ExportOptions(select_form="softmax4d"))
    assert sum(n.op_type == "Softmax" for n in model.graph.node) == 8
    assert graph_problems(model, allow_last_axis_softmax=True) == []
    assert any("Softmax over axis -1 of a rank-4 tensor" in p for p in graph_problems(model))


@pytest.mark.parametrize("allowzero, target, spelled", [
    (0, [0, -1], ["GlobalAveragePool", "Flatten"]),
    (1, [-1, 8], ["GlobalAveragePool", "Flatten"]),
    (1, [2, 8], ["GlobalAveragePool", "Flatten"]),
    (1, [0, -1], ["GlobalAveragePool", "Reshape"]),  # allowzero: that 0 is an empty dimension (no valid graph has it)
])
def test_a_global_pool_is_spelled_one_way_only_where_it_computes_the_same(allowzero, target, spelled):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Reshape", ["m", "shape"], ["y"], allowzero=allowzero)]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [2], [-1, -2]),
             helper.make_tensor("shape", TensorProto.INT64, [2], target)]
    model = helper.make_model(helper.make_graph(nodes, "pool", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)])
    cleaned, _ = clean_exported_graph(model)
    assert [n.op_type for n in cleaned.graph.node] == spelled
    if spelled[-1] == "Flatten":  # the same mean (ONNX Runtime sums in another order: within an ulp or two)
        data = np.random.default_rng(4).standard_normal((2, 8, 4, 4)).astype(np.float32)
        before = OnnxRuntimeRunner(model.SerializeToString())(data)
        np.testing.assert_allclose(OnnxRuntimeRunner(cleaned.SerializeToString())(data), before, rtol=1e-6, atol=1e-7)


def test_canonical_pooling_passes_over_nodes_without_inputs():
    """A node with no input at all (a Constant the folding left) is not a ReduceMean: looked at by op first."""
    import onnx_graphsurgeon as gs

    from sk_edge.export.graph_passes import PassReport, canonical_pooling

    x, c, y = gs.Variable("x", np.float32, (1, 4, 2, 2)), gs.Variable("c", np.float32, (1,)), gs.Variable("y", np.float32)
    constant = gs.Node("Constant", "k", attrs={"value": gs.Constant("v", np.ones(1, np.float32))}, outputs=[c])
    graph = gs.Graph(nodes=[constant, gs.Node("Add", "add", inputs=[x, c], outputs=[y])], inputs=[x], outputs=[y])
    report = PassReport()
    canonical_pooling(graph, report)
    assert [n.op for n in graph.nodes] == ["Constant", "Add"]
    assert (report.reduce_mean_to_global_pool, report.reshape_to_flatten) == (0, 0)
