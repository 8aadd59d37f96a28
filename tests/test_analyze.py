"""Kernel-selection analysis on the trained reference model and real held-out images."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from sk_edge.analyze import analyze_selection, gate_tensors, zoom
from sk_edge.errors import SkEdgeError
from sk_edge.export import ExportOptions, export_model
from sk_edge.models import build_model
from sk_edge.quantize import quantize_model
from sk_edge.reference import digits


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("analyze")
    export_model(build_model("sknet26-digits"), wd)
    quantize_model(wd, "fp16")
    digits.write_split("eval", wd / "eval", 60)
    return wd


def test_selection_per_unit_and_scale(workdir):
    doc = analyze_selection(workdir, workdir / "eval", "fp16", count=60)
    assert [u["unit"] for u in doc["units"]] == [u for u, _ in gate_tensors(onnx.load(str(workdir / "model.fp32.onnx")))]
    assert len(doc["units"]) == 8
    for u in doc["units"]:
        assert set(u["reference"]) == {"1", "1.5", "2"} == set(u["candidate"])
        for s in ("1", "1.5", "2"):
            assert -1 <= u["reference"][s] <= 1
            assert abs(u["reference"][s] - u["candidate"][s]) < 0.01  # FP16 selects like FP32
    # zooming changes what the units see, so their selection moves
    assert any(abs(u["reference"]["2"] - u["reference"]["1"]) > 0.01 for u in doc["units"])
    assert 0 <= doc["selection_drift"] < 0.01
    assert json.loads((workdir / "selection.json").read_text())["units"]
    with Image.open(workdir / "selection.png") as im:
        assert im.format == "PNG"


def test_zoom_enlarges_about_the_centre():
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[15:25, 15:25] = 255  # a 10 px square in the centre
    big = np.asarray(zoom(Image.fromarray(arr), 2.0))
    assert big.shape == arr.shape
    assert (big[:, :, 0] > 127).sum() == pytest.approx(4 * (arr[:, :, 0] > 127).sum(), rel=0.15)


def test_needs_the_sigmoid_gate(tmp_path):
    export_model(build_model("sknet26", num_classes=10, input_size=64, args={"base_width": 32, "stem_width": 16, "groups": 8}),
                 tmp_path, ExportOptions(select_form="exp"))
    quantize_model(tmp_path, "fp16")
    with pytest.raises(SkEdgeError, match="sigmoid select form"):
        analyze_selection(tmp_path, tmp_path, "fp16")
