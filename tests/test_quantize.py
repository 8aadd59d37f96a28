"""Calibration and quantization end to end on the trained reference model and real images."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.errors import SkEdgeError
from sk_edge.export import export_model
from sk_edge.images import load_image
from sk_edge.models import build_model
from sk_edge.preprocess import Preprocess
from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model
from sk_edge.quantize.cache import read_cache
from sk_edge.quantize.histogram import StreamingHistogram
from sk_edge.quantize.methods import METHODS, QUANT_LEVELS, _kl_divergences, amax_mse
from sk_edge.quantize.plan import plan_quantization
from sk_edge.reference import digits

from amax_reference import best_threshold, kl_by_bins, mse_by_bins
from conftest import calibration_subset



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Reference model exported, calibrated on 64 real images, quantized both ways."""
    wd = tmp_path_factory.mktemp("quantize")
    export_model(build_model("sknet26-digits"), wd)
    images = calibration_subset(wd / "calib_images", 64)
    logs: list[str] = []
    calibrate(wd, images, CalibrationOptions(num_images=64, batch=16), log=logs.append)
    quantize_model(wd, "int8", "fp16")
    quantize_model(wd, "fp16")
    return wd


@pytest.fixture(scope="module")
def eval_batch(tmp_path_factory):
    """100 held-out SK-Digits images (never the calibration digits), as files on disk."""
    folder = tmp_path_factory.mktemp("eval")
    digits.write_split("eval", folder, 100)
    return sorted(folder.glob("*.png"))


def _predictions(path: Path, images: list[Path], pre: Preprocess) -> np.ndarray:
    x = np.stack([load_image(p, pre) for p in images])
    return OnnxRuntimeRunner(path, dynamic_batch=True)(x)


def test_calibration_covers_exactly_the_planned_tensors(workdir):
    calib = json.loads((workdir / "calib.json").read_text())
    plan = plan_quantization(onnx.load(str(workdir / "model.fp32.onnx")))
    assert set(calib["tensors"]) == set(plan.activations)
    assert calib["inputs"]["images"]["used"] == 64
    for t in calib["tensors"].values():
        assert set(t["amax_by_method"]) == set(METHODS)
        assert 0 < t["amax"] <= t["amax_by_method"]["max"] * (1 + 1e-6)
        assert t["amax"] == t["amax_by_method"][calib["method"]]
    _, scales = read_cache(workdir / "calib.cache")
    assert scales.keys() == calib["tensors"].keys()
    for name, scale in scales.items():
        assert scale == pytest.approx(calib["tensors"][name]["amax"] / 127, rel=1e-6)


def test_fast_searches_choose_what_the_threshold_by_threshold_definition_chooses(workdir):
    """The entropy and MSE searches sum by INT8 group and by prefix sums; on this real model's histograms they pick
    the very thresholds the one-threshold-at-a-time definition picks, and their divergences agree."""
    doc = json.loads((workdir / "calib.json").read_text())
    searched = 0
    for name, record in doc["tensors"].items():
        hist = StreamingHistogram.from_dict(record["histogram"])
        assert amax_mse(hist) == mse_by_bins(hist.counts, hist.range, hist.amax), name
        for ignore_zero_bin in (True, False):
            counts = hist.counts.copy()
            counts[0] = 0 if ignore_zero_bin else counts[0]
            used = int(np.flatnonzero(counts)[-1]) + 1
            if used <= QUANT_LEVELS:
                continue
            fast, reference = _kl_divergences(counts[:used], QUANT_LEVELS), kl_by_bins(counts[:used], QUANT_LEVELS)
            finite = np.isfinite(reference[1])
            assert np.array_equal(np.isfinite(fast[1]), finite), name
            np.testing.assert_allclose(fast[1][finite], reference[1][finite], rtol=1e-9, err_msg=name)
            assert best_threshold(*fast) == best_threshold(*reference), name
            searched += 1
    assert searched >= len(doc["tensors"])  # the searches ran, with and without the zero bin


def test_another_method_reuses_the_histograms(workdir):
    before = json.loads((workdir / "calib.json").read_text())
    logs: list[str] = []
    doc = calibrate(workdir, workdir / "calib_images", CalibrationOptions(method="mse", num_images=64, batch=16), log=logs.append)
    assert any("reusing the histograms" in line for line in logs)
    assert doc["method"] == "mse"
    for name, t in doc["tensors"].items():
        assert t["amax"] == before["tensors"][name]["amax_by_method"]["mse"]
        assert t["histogram"] == before["tensors"][name]["histogram"]
    # back to the default so the module's other tests see the default calibration
    calibrate(workdir, workdir / "calib_images", CalibrationOptions(num_images=64, batch=16))


def _initializers(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_int8_graph_invariants(workdir):
    """Walk the INT8 graph: scales, zero points, per-channel weights, attention in float."""
    model = onnx.load(str(workdir / "model.int8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inits = _initializers(model)
    plan = plan_quantization(onnx.load(str(workdir / "model.fp32.onnx")))
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == 2 * len(plan.activations) + len(plan.weights)
    weight_dq = 0
    for node in qdq:
        scale, zero = inits[node.input[1]], inits[node.input[2]]
        assert np.all(np.isfinite(scale.astype(np.float64))) and np.all(scale > 0), node.name
        assert zero.dtype == np.int8 and not zero.any(), node.name
        if node.input[0] in inits:  # an INT8 weight
            weight_dq += 1
            w = inits[node.input[0]]
            assert w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 127
            (user,) = consumers[node.output[0]]
            axis = next(a.i for a in node.attribute if a.name == "axis")
            assert user.op_type in ("Conv", "Gemm")
            if user.op_type == "Conv":
                assert axis == 0
            assert scale.shape == (w.shape[axis],)
        else:
            assert scale.ndim == 0
        # nothing quantized inside the SK attention path
        for user in consumers.get(node.output[0], []):
            assert user.name not in plan.float_nodes, (node.name, user.name)
    assert weight_dq == len(plan.weights)
    sk_gap = [n for n in model.graph.node if n.op_type == "GlobalAveragePool" and n.name in plan.float_nodes]
    assert len(sk_gap) == 16  # 8 SK units x 2 branches
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_fp16_graph_keeps_fp32_io_and_fp16_weights(workdir):
    model = onnx.load(str(workdir / "model.fp16.onnx"))
    onnx.checker.check_model(model, full_check=True)
    conv_weights = [
        _initializers(model)[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in _initializers(model)
    ]
    assert conv_weights and all(w.dtype == np.float16 for w in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sidecar = json.loads((workdir / "model.fp16.json").read_text())
    kept = set(sidecar["precision_report"]["fp32_nodes"].values())
    assert kept == {"long reduction: an FP16 sum of H*W terms loses precision and can overflow"}


def test_quantized_graphs_agree_with_fp32_on_held_out_images(workdir, eval_batch):
    export = json.loads((workdir / "export.json").read_text())
    pre = Preprocess.from_dict(export["preprocess"])
    fp32 = _predictions(workdir / "model.fp32.onnx", eval_batch, pre)
    labels = np.array([int(p.stem.rsplit("_", 1)[1]) for p in eval_batch])
    assert (fp32.argmax(1) == labels).mean() >= 0.9  # the reference model is trained
    for name, floor in (("model.int8.onnx", 0.96), ("model.fp16.onnx", 0.99)):
        out = _predictions(workdir / name, eval_batch, pre)
        agreement = (out.argmax(1) == fp32.argmax(1)).mean()
        assert agreement >= floor, (name, agreement)


def test_int8_needs_a_calibration_for_this_model(tmp_path):
    export_model(build_model("sknet26-digits"), tmp_path)
    with pytest.raises(SkEdgeError, match="no calib.cache .* run `sk-edge calibrate --images DIR"):
        quantize_model(tmp_path, "int8")


def test_tiny_fp16_weight_scales_are_clamped_not_zero():
    """A channel with max |w| below ~3.8e-6 would get an FP16 scale of 0, which TensorRT's parser rejects."""
    from sk_edge.quantize.precision import quantize_weight

    w = np.array([[1e-6, -5e-7], [0.5, -0.25], [0.0, 0.0]], dtype=np.float32)
    q, scale = quantize_weight(w, 0, np.float16)
    assert (scale > 0).all() and scale[0] == np.finfo(np.float16).tiny
    assert np.float16(1e-6 / 127) == 0  # what the scale would have been
    assert np.allclose(q[0] * scale[0].astype(np.float64), w[0], atol=float(scale[0]) / 2)
    assert q[1, 0] == 127 and scale[2] == 1.0
