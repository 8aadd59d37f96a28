"""The export stage end to end: every model family, exactness on ONNX Runtime, graph hygiene,
sidecars, skipping, atomic writes."""

import json
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import shape_inference

from sk_edge import artifacts
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.errors import UsageError
from sk_edge.export import ONNX_NAME, SIDECAR_NAME, ExportOptions, export_model
from sk_edge.export.hygiene import graph_problems
from sk_edge.models import BuiltModel, build_model
from sk_edge.preprocess import Preprocess

from conftest import TINY_SKNET_ARGS, randomize_batchnorm

FAMILIES = {
    "sknet-M2": ("sknet26", TINY_SKNET_ARGS, 8, "sigmoid"),
    "sknet-M3": ("sknet26", {**TINY_SKNET_ARGS, "branches": 3}, 8, "exp"),
    "timm-skresnet18": ("timm:skresnet18", {}, 8, "sigmoid"),
    "timm-skresnext50_32x4d": ("timm:skresnext50_32x4d", {}, 16, "sigmoid"),
}


def _assert_clean_graph(path):
    """Walk the graph with shape inference: no Softmax, no 5-D, no BN/Identity/Constant."""
    model = onnx.load(str(path))
    assert graph_problems(model) == []
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    ops = {n.op_type for n in inferred.graph.node}
    assert not ops & {"Softmax", "BatchNormalization", "Identity", "Constant"}
    infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    assert infos and max(len(v.type.tensor_type.shape.dim) for v in infos) == 4
    return inferred


@pytest.mark.parametrize("family", FAMILIES)
def test_export_is_exact_and_clean(tmp_path, family):
    name, args, units, form = FAMILIES[family]
    built = build_model(name, num_classes=10, input_size=64, args=args)
    randomize_batchnorm(built.module)
    result = export_model(built, tmp_path)
    assert not result.skipped
    doc = json.loads((tmp_path / SIDECAR_NAME).read_text())
    parity = doc["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
    assert parity["top1_agreement"] == 1.0
    assert doc["rewrite"]["sk_units"] == units
    assert doc["rewrite"]["select_forms"] == {form: units}
    assert doc["batchnorm"]["left_in_graph"] == 0
    assert doc["batchnorm"]["modules"] == sum(doc["batchnorm"][k] for k in ("folded_by_sk_rewrite", "folded_by_graph_pass", "fused_by_torch_exporter"))
    assert doc["model"]["output"]["shape"] == [1, 10]
    assert doc["outputs"][ONNX_NAME]["sha256"] == artifacts.sha256_file(tmp_path / ONNX_NAME)
    _assert_clean_graph(tmp_path / ONNX_NAME)

    # Independently of the stage's own check: same logits as PyTorch on other inputs.
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = built.module(torch.from_numpy(x)).numpy()
    out = OnnxRuntimeRunner(tmp_path / ONNX_NAME)(x)
    assert np.abs(out - ref).max() <= 1e-4


def test_custom_timm_config_goes_through_export(tmp_path):
    from timm.models.resnet import ResNet
    from timm.models.sknet import SelectiveKernelBasic

    module = ResNet(
        block=SelectiveKernelBasic,
        layers=[1, 1, 1, 1],
        num_classes=4,
        block_args=dict(sk_kwargs=dict(kernel_size=[3, 5, 7], split_input=False, rd_ratio=1 / 4)),
    )
    built = BuiltModel("my-sknet", randomize_batchnorm(module), Preprocess(input_size=64), 32, "custom")
    doc = export_model(built, tmp_path).sidecar
    assert doc["rewrite"]["branches"] == [3]
    assert doc["parity"]["passed"]
    _assert_clean_graph(tmp_path / ONNX_NAME)


def test_dynamic_batch(tmp_path):
    built = build_model("sknet26", input_size=64, args=TINY_SKNET_ARGS)
    randomize_batchnorm(built.module)
    doc = export_model(built, tmp_path, ExportOptions(dynamic_batch=8)).sidecar
    assert doc["model"]["input"]["shape"] == ["batch", 3, 64, 64]
    assert doc["model"]["max_batch"] == 8
    runner = OnnxRuntimeRunner(tmp_path / ONNX_NAME)
    x = np.random.default_rng(2).standard_normal((5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = built.module(torch.from_numpy(x)).numpy()
    out = runner(x)
    assert out.shape == (5, 1000)
    assert np.abs(out - ref).max() <= 1e-4
    _assert_clean_graph(tmp_path / ONNX_NAME)


@pytest.mark.parametrize("family", ["timm-skresnext50_32x4d"])  # timm: its flatten differs too; ours: test_tensorrt_rtx
def test_both_of_torchs_exporters_give_the_same_clean_exact_graph(tmp_path, family):
    """The torch.export-based exporter's graph, after sk-edge's passes, is the TorchScript one's op for op."""
    name, args, _, _ = FAMILIES[family]
    built = build_model(name, num_classes=10, input_size=64, args=args)
    randomize_batchnorm(built.module)
    graphs, logits = {}, {}
    x = np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32)
    for exporter in ("torchscript", "torch-export"):
        wd = tmp_path / exporter
        doc = export_model(built, wd, ExportOptions(exporter=exporter, opset=18, dynamic_batch=4)).sidecar
        assert doc["graph"]["exporter"] == doc["settings"]["exporter"] == exporter and doc["parity"]["passed"]
        graphs[exporter] = _assert_clean_graph(wd / ONNX_NAME)
        logits[exporter] = OnnxRuntimeRunner(wd / ONNX_NAME)(x)
    assert [n.op_type for n in graphs["torch-export"].graph.node] == [n.op_type for n in graphs["torchscript"].graph.node]
    assert "ReduceMean" not in {n.op_type for n in graphs["torch-export"].graph.node}
    assert np.abs(logits["torch-export"] - logits["torchscript"]).max() <= 1e-5


def test_the_torch_export_path_is_refused_below_its_opset_and_an_exporter_change_exports_again(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="--exporter torch-export writes opset 18 or newer; add --opset 18"):
        ExportOptions(exporter="torch-export").validate()
    ExportOptions(exporter="torch-export", opset=18).validate()
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as where sk-edge[torch-export] was not installed
    with pytest.raises(UsageError, match=r"needs onnxscript: pip install 'sk-edge\[torch-export\]'"):
        ExportOptions(exporter="torch-export", opset=18).validate()
    recorded = ExportOptions.recorded({"batch": 1, "opset": 18, "select_form": "auto"})  # written before --exporter
    assert recorded.exporter == "torchscript"
    assert ExportOptions(exporter="torch-export", opset=18).differences(recorded) == [
        "--exporter torch-export (it has torchscript)"]


def test_auto_exports_with_torch_export_where_it_writes_the_opset_and_torchscript_at_17(tmp_path, monkeypatch):
    assert ExportOptions().exporter == "auto"
    assert ExportOptions().resolved().exporter == "torchscript"  # opset 17, the default: torch.export cannot write it
    assert ExportOptions(opset=18).resolved().exporter == "torch-export"
    assert ExportOptions().differences(ExportOptions(exporter="torchscript")) == []  # the same export, up to date
    # export.json records the exporter that made the graph, never "auto".
    doc = export_model(build_model("sknet26-digits"), tmp_path, ExportOptions(opset=18)).sidecar
    assert doc["graph"]["exporter"] == doc["settings"]["exporter"] == "torch-export" and doc["parity"]["passed"]
    assert doc["graph"]["opset"] == 18
    _assert_clean_graph(tmp_path / ONNX_NAME)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # where sk-edge[torch-export] was not installed
    assert ExportOptions(opset=18).resolved().exporter == "torchscript"


def test_unchanged_export_is_skipped_and_changes_are_not(tmp_path):
    def build(seed=0, **kw):
        torch.manual_seed(seed)  # the key covers the weights themselves, so fix the init
        return build_model("sknet26", input_size=64, args=TINY_SKNET_ARGS, **kw)

    first = export_model(build(), tmp_path)
    mtime = (tmp_path / ONNX_NAME).stat().st_mtime_ns
    assert export_model(build(), tmp_path).skipped
    assert (tmp_path / ONNX_NAME).stat().st_mtime_ns == mtime
    # another opset, other weights, --force, or a damaged output: all re-export
    assert not export_model(build(), tmp_path, ExportOptions(opset=18)).skipped
    assert not export_model(build(seed=1), tmp_path, ExportOptions(opset=18)).skipped
    assert not export_model(build(num_classes=3), tmp_path).skipped
    assert not export_model(build(num_classes=3), tmp_path, force=True).skipped
    (tmp_path / ONNX_NAME).write_bytes(b"truncated")
    assert not export_model(build(num_classes=3), tmp_path).skipped
    assert first.sidecar["key"] != json.loads((tmp_path / SIDECAR_NAME).read_text())["key"]


def test_model_without_sk_units_is_refused_and_nothing_written(tmp_path):
    built = build_model("timm:resnet18", input_size=64)
    with pytest.raises(UsageError, match="has no Selective Kernel units"):
        export_model(built, tmp_path / "wd")
    assert not (tmp_path / "wd").exists()


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "model.fp32.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.fp32.onnx"]

