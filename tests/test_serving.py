"""Triton repository and DeepStream config from a real work directory."""

import configparser
import re

import numpy as np
import pytest

from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import ExportOptions, export_model
from sk_edge.models import build_model
from sk_edge.preprocess import Preprocess
from sk_edge.quantize import quantize_model
from sk_edge.serving import nvinfer_scaling

from conftest import run_cli as run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("serving")
    export_model(build_model("sknet26-digits"), wd, ExportOptions(dynamic_batch=8))
    quantize_model(wd, "fp16")
    return wd


def test_triton_repository_serves_the_graph_it_describes(workdir, tmp_path):
    repo = tmp_path / "repo"
    out = run("export-triton", "-w", str(workdir), "--repo", str(repo), "--unverified")
    assert out.returncode == 0, out.stderr
    assert "Triton's ONNX Runtime backend" in out.stderr  # no engine here
    config = (repo / "sknet26-digits" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 8" in config and "dynamic_batching" in config
    names = re.findall(r'name: "([^"]+)"', config)
    dims = [[int(d) for d in m.split(",")] for m in re.findall(r"dims: \[ ([^\]]+) \]", config)]
    assert names == ["sknet26-digits", "input", "logits"] and dims == [[3, 64, 64], [10]]
    # the model file answers to exactly those names and shapes, for any batch up to the max
    runner = OnnxRuntimeRunner(repo / "sknet26-digits" / "1" / "model.onnx")
    session = runner.session
    assert session.get_inputs()[0].name == "input" and session.get_outputs()[0].name == "logits"
    y = session.run(None, {"input": np.zeros((8, 3, 64, 64), np.float32)})[0]
    assert y.shape == (8, 10)


def test_deepstream_config_matches_the_preprocessing(workdir):
    out = run("export-deepstream", "-w", str(workdir), "--precision", "fp16", "--unverified")
    assert out.returncode == 0, out.stderr
    parser = configparser.ConfigParser()
    parser.read(workdir / "deepstream_nvinfer.txt")
    prop = parser["property"]
    assert prop["model-engine-file"] == "model.fp16.engine" and prop["network-mode"] == "2"
    assert prop["infer-dims"] == "3;64;64" and prop["batch-size"] == "8" and prop["output-blob-names"] == "logits"
    assert prop["model-color-format"] == "0" and prop["maintain-aspect-ratio"] == "0"
    # nvinfer's y = s * (x - offset) against sk-edge's (x/255 - mean) / std, on every pixel value
    pre = Preprocess(input_size=64, mean=(0.322, 0.307, 0.276), std=(0.189, 0.179, 0.191))
    scale = float(prop["net-scale-factor"])
    offsets = np.array([float(v) for v in prop["offsets"].split(";")])
    x = np.arange(256.0)[:, None]
    exact = (x / 255 - np.array(pre.mean)) / np.array(pre.std)
    err = np.abs(scale * (x - offsets) - exact).max() / np.abs(exact).max()
    _, _, reported = nvinfer_scaling({"mean": pre.mean, "std": pre.std})
    assert err == pytest.approx(reported, rel=1e-6) and err < 0.05


def test_triton_refuses_a_folder_that_is_not_a_model(workdir, tmp_path):
    (tmp_path / "repo" / "sknet26-digits").mkdir(parents=True)
    (tmp_path / "repo" / "sknet26-digits" / "notes.txt").write_text("mine")
    out = run("export-triton", "-w", str(workdir), "--repo", str(tmp_path / "repo"), "--unverified")
    assert out.returncode == 2 and "exists and sk-edge did not write it" in out.stderr
    assert (tmp_path / "repo" / "sknet26-digits" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "repo" / "sknet26-digits").iterdir()) == ["notes.txt"]
