"""The DLA pooling rewrite: global pools become chains of <= 8x8 average pools, exactly."""

import numpy as np
import onnx
import pytest

from sk_edge.backends.dla import DLA_MAX_POOL_WINDOW, chain_global_pools, factor_window
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import export_model
from sk_edge.models import build_model
from sk_edge.models.sknet import sknet26

from conftest import TINY_SKNET_ARGS, randomize_batchnorm


def test_window_factors():
    assert factor_window(56) == [8, 7] and factor_window(28) == [7, 4] and factor_window(7) == [7]
    assert factor_window(1) == [1] and factor_window(64) == [8, 8]
    assert factor_window(13) is None and factor_window(26) is None


@pytest.mark.parametrize("size", [64, 224])
def test_chained_pools_equal_the_global_pool(tmp_path, size):
    if size == 64:
        built = build_model("sknet26-digits")
    else:
        from sk_edge.models import BuiltModel
        from sk_edge.preprocess import Preprocess

        module = randomize_batchnorm(sknet26(num_classes=10, **TINY_SKNET_ARGS))
        built = BuiltModel("tiny", module, Preprocess(input_size=224), total_stride=32, family="sknet")
    export_model(built, tmp_path)
    fp32 = onnx.load(str(tmp_path / "model.fp32.onnx"))
    dla, report = chain_global_pools(fp32)
    ops = [n.op_type for n in dla.graph.node]
    assert "GlobalAveragePool" not in ops and not report.kept
    for node in dla.graph.node:
        if node.op_type == "AveragePool":
            kernel = next(a.ints for a in node.attribute if a.name == "kernel_shape")
            assert max(kernel) <= DLA_MAX_POOL_WINDOW
    if size == 224:  # the first SK units pool 56x56: two steps, 8x8 then 7x7
        assert [[8, 8], [7, 7]] in report.rewritten.values()
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    ref = OnnxRuntimeRunner(tmp_path / "model.fp32.onnx", dynamic_batch=True)
    out = OnnxRuntimeRunner(dla.SerializeToString(), dynamic_batch=True)(x)
    np.testing.assert_allclose(out, ref(x), atol=1e-4)
