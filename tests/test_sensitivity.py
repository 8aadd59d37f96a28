"""Accuracy-aware INT8 on the reference model with a deliberately poor calibration."""


import onnx
import pytest

from sk_edge.errors import SkEdgeError
from sk_edge.export import export_model
from sk_edge.models import build_model
from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model
from sk_edge.quantize.invariants import int8_graph_problems
from sk_edge.quantize.plan import plan_quantization
from sk_edge.reference import digits
from sk_edge.sensitivity import Budget, Evaluator, analyze_sensitivity, fit_budget, load_eval_set, previous_choice

from conftest import calibration_subset


@pytest.fixture(scope="module")
def poor(tmp_path_factory):
    """Ranges at the 50th percentile of |x|: a real calibration setting that clips half of every tensor."""
    wd = tmp_path_factory.mktemp("sensitivity")
    export_model(build_model("sknet26-digits"), wd)
    images = calibration_subset(wd / "calib", 32)
    calibrate(wd, images, CalibrationOptions(method="percentile", percentile=50, num_images=32))
    quantize_model(wd, "int8")
    evaldir = wd / "eval"
    labels = digits.write_split("eval", evaldir, 100)
    return wd, evaldir, labels


def test_budget_keeps_the_most_sensitive_layers_in_float(poor):
    wd, evaldir, labels = poor
    # The budget mechanism itself; how much float the default --max-float-share allows is tested in test_faults.
    doc = analyze_sensitivity(wd, evaldir, labels, count=100, max_top1_drop=2.0, max_float_share=1.0)
    layers = doc["layers"]
    assert len(layers) == len(plan_quantization(onnx.load(str(wd / "model.fp32.onnx"))).layers())
    gains = [r["gain_kl"] for r in layers]
    assert gains == sorted(gains, reverse=True)
    assert doc["full_int8"]["top1_drop_points"] > 2.0  # the poor calibration really hurts
    budget = doc["budget"]
    assert budget["kept_float"] and budget["result"]["top1_drop_points"] <= 2.0
    assert budget["kept_float"] == [r["layer"] for r in layers[: len(budget["kept_float"])]]
    assert 0 < budget["kept_mac_share"] <= 1
    assert "| 1 | `" in (wd / "sensitivity.md").read_text()

    # apply it: the graph loses exactly those layers' Q/DQ and still passes the invariants
    sidecar = quantize_model(wd, "int8", force=True, keep_float=budget["kept_float"])
    assert sidecar["settings"]["keep_float"] == sorted(budget["kept_float"])
    plan = plan_quantization(onnx.load(str(wd / "model.fp32.onnx"))).without(set(budget["kept_float"]))
    model = onnx.load(str(wd / "model.int8.onnx"))
    assert int8_graph_problems(model, plan) == []
    assert not set(budget["kept_float"]) & set(plan.layers())
    assert previous_choice(wd, 2.0, "fp16") == budget["kept_float"]
    assert previous_choice(wd, 1.0, "fp16") == []


def test_an_impossible_budget_fails_with_the_numbers(poor):
    wd, evaldir, labels = poor
    evaluator = Evaluator(wd, load_eval_set(wd, evaldir, labels, 32))
    ranking = [{"layer": name} for name in evaluator.plan.layers()]
    with pytest.raises(SkEdgeError, match=r"even with every layer in floating point the top-1 drop -?\d+\.\d\d points misses "
                       r"the budget \(top-1 drop <= -50 points\)"):
        fit_budget(evaluator, ranking, Budget(max_top1_drop=-50), max_float_share=1.0)
