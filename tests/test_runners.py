"""Every runner has one shape: numpy in, numpy out, and a lifecycle (close, and ``with runner:``)."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper

from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.backends.runner import Runner
from sk_edge.backends.torch import TorchRunner


def _double_graph() -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["input", "two"], ["output"])], "double", [x], [y], [two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_an_onnx_runtime_runner_gives_its_session_back_at_the_end_of_a_with_block():
    x = np.array([[1.0, -2.0, 3.5]], dtype=np.float32)
    with OnnxRuntimeRunner(_double_graph()) as runner:
        np.testing.assert_array_equal(runner(x), 2 * x)
        assert runner._session is not None
    assert runner._session is None
    runner.close()  # twice is harmless
    np.testing.assert_array_equal(runner(x), 2 * x)  # a later call opens a new session


def test_a_model_proto_runs_with_any_batch_and_is_left_as_it_was():
    import onnx

    model = onnx.load_from_string(_double_graph())
    before = model.SerializeToString()
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with OnnxRuntimeRunner(model, dynamic_batch=True) as runner:  # the graph's batch is 1: made symbolic on a copy
        np.testing.assert_array_equal(runner(x), 2 * x)
    assert model.SerializeToString() == before
    with OnnxRuntimeRunner(model) as runner:
        np.testing.assert_array_equal(runner(x[:1]), 2 * x[:1])


def test_torch_and_onnx_runtime_runners_are_runners():
    x = np.ones((1, 3), dtype=np.float32)
    runners: list[Runner] = [OnnxRuntimeRunner(_double_graph()), TorchRunner(torch.nn.Identity())]
    for runner in runners:
        with runner:
            np.testing.assert_array_equal(runner(x), 2 * x if isinstance(runner, OnnxRuntimeRunner) else x)


def test_analyze_gate_runner_closes_its_session_at_the_end_of_a_with_block(tmp_path):
    import onnx

    from sk_edge.analyze import GateRunner

    x_info = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    y_info = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Sigmoid", ["input"], ["gate"], name="/sk/Sigmoid"),
             helper.make_node("Mul", ["gate", "two"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "gated", [x_info], [y_info], [two]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "gated.onnx")
    x = np.array([[0.0, 2.0, -1.0]], dtype=np.float32)
    with GateRunner(tmp_path / "gated.onnx", ["gate"]) as gates:
        (gate,) = gates(x)
        np.testing.assert_allclose(gate, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
        assert gates.runner._session is not None
    assert gates.runner._session is None
