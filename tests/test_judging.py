"""Drift measured on the graph as written (issue 15), on a model trained outside the project.

On the shared SKNet-26 M=3 model, ONNX Runtime's default session options change the INT8 graph's
result: QDQPropagationTransformer copies the Q/DQ pair after the stem MaxPool to its input, which
turns the stem Conv into a DQ -> Conv -> Q unit, and WeightBiasQuantization then computes its
int32 bias as round(bias / (x_scale * w_scale)) in FP16, which overflows (84297 > 65504). sk-edge's
judging sessions turn the QDQ transformers off; these tests hold the measured agreement to what
ONNX Runtime computes with every optimization disabled, on real images.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sk_edge.images import ImageStream, find_images
from sk_edge.preprocess import Preprocess
from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model
from sk_edge.reference import digits

from conftest import CALIB, run_cli
from shared_model import M3_ARGS, M3_CHECKPOINT, export_m3

EVAL_IMAGES = 300
# Judging session and ORT_DISABLE_ALL run the same graph and differ only in the order of float
# accumulations (the judging session keeps ONNX Runtime's float fusions), which can flip a
# near-tie: 1 image of 1000 on this model (benchmarks/ort_judging.py). 0.5 points is 1.5 images
# of 300, and 20 times smaller than the 11-point error the optimizer bug causes here.
TOLERANCE_POINTS = 0.5


@pytest.fixture(scope="module")
def m3(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("m3")
    export_m3(workdir)
    calibrate(workdir, CALIB, CalibrationOptions(num_images=256))
    quantize_model(workdir, "int8", "fp16")
    folder = tmp_path_factory.mktemp("eval")
    labels = digits.write_split("eval", folder, EVAL_IMAGES)
    return workdir, folder, labels


def _images(workdir, folder) -> np.ndarray:
    pre = Preprocess.from_dict(json.loads((workdir / "export.json").read_text())["preprocess"])
    return np.concatenate([b for b, _ in ImageStream(find_images(folder), pre, 50, None, root=folder)])


def _run(path, x, level) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


def _torch_reference(x) -> np.ndarray:
    from sk_edge.models import build_model

    built = build_model("sknet26", 10, 64, M3_CHECKPOINT, M3_ARGS)
    with torch.no_grad():
        return built.module(torch.from_numpy(x)).numpy()


def test_verify_measures_the_graph_as_written_and_warns_about_the_runtime(m3):
    workdir, folder, labels = m3
    out = run_cli("verify", "-w", str(workdir), "--candidate", "int8", "--images", str(folder), "--labels", str(labels),
                  "--min-agreement", "0", "--max-top1-drop", "100")
    assert out.returncode == 0, out.stderr
    doc = json.loads((workdir / "verify.json").read_text())

    x = _images(workdir, folder)
    reference = _torch_reference(x).argmax(1)
    as_written = _run(workdir / "model.int8.onnx", x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).argmax(1)
    default = _run(workdir / "model.int8.onnx", x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL).argmax(1)
    agreement_as_written = (as_written == reference).mean() * 100
    agreement_default = (default == reference).mean() * 100

    measured = doc["metrics"]["top1_agreement"] * 100
    assert abs(measured - agreement_as_written) <= TOLERANCE_POINTS, (measured, agreement_as_written)
    # The test has teeth: on this model the default session is far off, so a judge that used it
    # would fail the assertion above.
    assert agreement_as_written - agreement_default > 5 * TOLERANCE_POINTS, (agreement_as_written, agreement_default)

    session = doc["candidate"]["session"]
    assert session["config"] == {"session.disable_quant_qdq": "1", "session.disable_double_qdq_remover": "1"}
    check = doc["runtime_cross_check"]
    assert check["images"] == 100 and check["optimizer_changes_results"] and check["top1_changed"] > 0.01
    assert check["session"]["graph_optimization_level"] == "ORT_ENABLE_ALL" and not check["session"]["config"]
    assert "warning: the runtime's optimizer changes this graph's results" in out.stderr
    assert "the runtime's optimizer changes this graph's results" in (workdir / "verify.md").read_text()


def test_the_fp16_overflow_is_the_stem_bias(m3):
    """The mechanism, checked on the graph itself: only the stem's bias overflows FP16 when quantized."""
    import onnx
    from onnx import numpy_helper

    workdir, _, _ = m3
    model = onnx.load(str(workdir / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    x_scale = inits[producer[stem.input[0]].input[1]].astype(np.float64)
    w_scale = inits[producer[stem.input[1]].input[1]].astype(np.float64)
    bias = inits[stem.input[2]].astype(np.float64)
    assert inits[stem.input[2]].dtype == np.float16  # the graph's float is FP16, so ORT computes in FP16
    assert np.abs(bias / (x_scale * w_scale)).max() > np.finfo(np.float16).max
