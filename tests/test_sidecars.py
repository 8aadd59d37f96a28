"""Each sidecar view writes what it reads: a stage's sidecar is checked by its reader before it is written."""

import pytest

from sk_edge import artifacts
from sk_edge.errors import SkEdgeError
from sk_edge.sidecars import EngineInfo, ExportInfo, GraphInfo

SPEC = {"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}
PREPROCESS = {"input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "resize", "crop_pct": 1.0}


def _engine_sections() -> dict:
    return {
        "inputs": {"onnx": {"name": "model.int8.onnx", "sha256": "a" * 64}},
        "settings": {"precision": "int8", "dla_core": None},
        "tensorrt": {"version": "1.7.1.116", "flavour": "rtx"},
        "model": {"input": SPEC, "output": {**SPEC, "name": "logits", "shape": [1, 10]}},
        "preprocess": PREPROCESS,
        "rtx": {"compute_capabilities": ["86", "120"], "default_targets": False},
    }


def test_an_engine_sidecar_reads_back_what_was_written(tmp_path):
    engine = tmp_path / "model.int8.rtx.engine"
    engine.write_bytes(b"plan")
    info = EngineInfo.write(tmp_path / "model.int8.rtx.engine.json", "k" * 64, engine, **_engine_sections())
    again = EngineInfo.from_doc(artifacts.read_json(tmp_path / "model.int8.rtx.engine.json"), "again")
    assert again == info and info.engine_sha256 == artifacts.sha256_file(engine)
    assert (info.target, info.compute_capabilities, info.output.shape) == ("rtx", ("86", "120"), (1, 10))


@pytest.mark.parametrize("dropped", ["settings", "tensorrt", "inputs"])
def test_a_writer_that_leaves_out_a_field_the_reader_needs_fails_and_writes_nothing(tmp_path, dropped):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"plan")
    sections = _engine_sections()
    del sections[dropped]
    with pytest.raises(SkEdgeError, match=f"lacks or garbles the field '?{dropped}"):
        EngineInfo.write(tmp_path / "model.int8.engine.json", "k" * 64, engine, **sections)
    assert not (tmp_path / "model.int8.engine.json").exists()


def test_an_int8_graph_sidecar_without_its_calibration_is_refused_before_it_is_written(tmp_path):
    graph = tmp_path / "model.int8.onnx"
    graph.write_bytes(b"onnx")
    with pytest.raises(SkEdgeError, match="inputs.calibration"):
        GraphInfo.write(tmp_path / "model.int8.json", "int8", "k" * 64, graph,
                        inputs={"model": {"path": "model.fp32.onnx", "sha256": "f" * 64}, "calibration": None},
                        settings={})
    assert not (tmp_path / "model.int8.json").exists()
    info = GraphInfo.write(tmp_path / "model.fp16.json", "fp16", "k" * 64, graph,
                           inputs={"model": {"path": "model.fp32.onnx", "sha256": "f" * 64}}, settings={})
    assert (info.precision, info.calibration_key, info.fp32_sha256) == ("fp16", None, "f" * 64)


def test_export_json_without_its_preprocessing_is_refused_before_it_is_written(tmp_path):
    onnx_path = tmp_path / "model.fp32.onnx"
    onnx_path.write_bytes(b"onnx")
    sections = {"inputs": {"model": "sknet26", "state_dict_sha256": "s" * 64},
                "settings": {"input_shape": [3, 64, 64], "batch": 1},
                "model": {"input": SPEC, "output": {**SPEC, "name": "logits", "shape": [1, 10]}}}
    with pytest.raises(SkEdgeError, match="preprocess"):
        ExportInfo.write(tmp_path / "export.json", "k" * 64, onnx_path, **sections)
    assert not (tmp_path / "export.json").exists()
    info = ExportInfo.write(tmp_path / "export.json", "k" * 64, onnx_path, **sections, preprocess=PREPROCESS)
    assert info.num_classes == 10 and info.fp32_sha256 == artifacts.sha256_file(onnx_path)
