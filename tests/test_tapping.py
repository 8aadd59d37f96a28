"""Calibration reads tapped tensors in ONNX Runtime's blocked layout only where that layout holds exactly their values."""

import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import export_model
from sk_edge.images import ImageStream, find_images, sample_paths
from sk_edge.models import build_model
from sk_edge.quantize import tapping
from sk_edge.quantize.calibration import _with_outputs, collect_histograms, with_inferred_shapes
from sk_edge.quantize.plan import plan_quantization
from sk_edge.workdir import FP32_ONNX, load_export

from conftest import CALIB, small_tmpfs

# ONNX Runtime's blocked layout (MLAS NCHWc) is made on x86-64 only: elsewhere every tensor is read as NCHW.
blocked_here = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="NCHWc is x86-64's")
CPU = {"providers": ["CPUExecutionProvider"], "memory_arena": True, "config": {}}


def _reference(tmp_path):
    export_model(build_model("sknet26-digits"), tmp_path)
    model = with_inferred_shapes(onnx.load(str(tmp_path / FP32_ONNX)))
    names = [n for n in plan_quantization(model).activations if n != model.graph.input[0].name]
    batch = next(iter(ImageStream(sample_paths(find_images(CALIB)), load_export(tmp_path).preprocess, 4, 4, root=CALIB)))[0]
    return model, names, batch


def _nchw(tapped, names, batch):
    """The tensors as the NCHW path fetches them (the blocked layout not tried)."""
    with OnnxRuntimeRunner(tapped, dynamic_batch=True) as runner:
        return dict(zip(names, runner.session.run(names, {runner.input_name: batch})))


@blocked_here
def test_blocked_tensors_hold_exactly_the_values_of_the_tensors_they_stand_for(tmp_path):
    model, names, batch = _reference(tmp_path)
    tapped = _with_outputs(model, names)
    before = tapped.SerializeToString()
    logs = []
    with tapping.tapped_session(tapped, names, CPU, logs.append) as run:
        assert 0 < len(run.blocked) < len(names) and not logs  # some taps only had a reorder; others are read by nodes
        blocked = run.run(batch)
    expected = _nchw(tapped, names, batch)
    assert tapped.SerializeToString() == before  # the caller's graph is left as it was
    for name in names:
        assert blocked[name].size == expected[name].size, name
        assert np.array_equal(np.sort(blocked[name], axis=None), np.sort(expected[name], axis=None)), name
    moved = [n for n in names if run.fetched[n] != n]
    assert len(moved) == len(run.blocked)
    assert any(not np.array_equal(blocked[n].ravel(), expected[n].ravel()) for n in moved)  # really another layout


@blocked_here
def test_calibration_histograms_are_those_of_the_nchw_tensors(tmp_path, monkeypatch):
    model, names, _ = _reference(tmp_path)
    preprocess = load_export(tmp_path).preprocess

    def histograms(logs):
        stream = ImageStream(sample_paths(find_images(CALIB)), preprocess, 4, 24, root=CALIB)
        return collect_histograms(model, names, stream, 2048, shapes_inferred=True, log=logs.append)[0]

    logs: list[str] = []
    fast = histograms(logs)
    assert any("tapped tensors read in ONNX Runtime's blocked layout" in line for line in logs), logs
    monkeypatch.setenv("SK_EDGE_TAPPED_LAYOUT", "nchw")  # every tensor reordered to NCHW, as before
    slow_logs: list[str] = []
    slow = histograms(slow_logs)
    assert not any("blocked layout" in line for line in slow_logs)
    for name in names:
        assert (fast[name].range, fast[name].total) == (slow[name].range, slow[name].total), name
        assert np.array_equal(fast[name].counts, slow[name].counts), name


def _padded_model() -> onnx.ModelProto:
    """Conv(3 -> 20) -> Relu 'r' -> Conv(20 -> 32) -> Relu 's' -> Conv(32 -> 16): 20 channels do not fill a block."""
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for i, (x, y, cin, cout) in enumerate([("x", "a", 3, 20), ("r", "b", 20, 32), ("s", "y", 32, 16)]):
        weights += [numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], pads=[1, 1, 1, 1]))
    nodes += [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Relu", ["b"], ["s"])]
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "r", "s")], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@blocked_here
def test_a_tensor_whose_channels_would_be_padded_keeps_its_reorder(tmp_path):
    model = _padded_model()
    batch = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with tapping.tapped_session(model, ["r", "s"], CPU) as run:
        assert run.fetched["r"] == "r" and run.fetched["s"] != "s"  # 20 channels padded to a block; 32 fill two
        got = run.run(batch)
    expected = _nchw(model, ["r", "s"], batch)
    for name in ("r", "s"):
        assert got[name].shape[1] == expected[name].shape[1] and got[name].size == expected[name].size
        assert np.array_equal(np.sort(got[name], axis=None), np.sort(expected[name], axis=None)), name


def test_a_scratch_folder_that_cannot_be_made_leaves_every_tensor_nchw_and_says_so(tmp_path):
    model = _padded_model()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    logs = []
    with tapping.tapped_session(model, ["r", "s"], CPU, logs.append, scratch=not_a_folder) as run:
        assert not run.blocked and run.fetched == {"r": "r", "s": "s"}
        got = run.run(np.ones((1, 3, 16, 16), np.float32))
    assert got["s"].shape == (1, 32, 16, 16)
    assert len(logs) == 1 and logs[0].startswith("  reading every tapped tensor as NCHW: its blocked layout was not")
    assert list(tmp_path.iterdir()) == [not_a_folder]


def test_the_scratch_folder_is_removed_with_the_session(tmp_path):
    with tapping.tapped_session(_padded_model(), ["s"], CPU, scratch=tmp_path) as run:
        run.run(np.ones((1, 3, 16, 16), np.float32))
        made = list(tmp_path.iterdir())
    assert len(made) == (1 if run.blocked else 0) and list(tmp_path.iterdir()) == []


def test_the_nchw_switch_reads_every_tensor_as_nchw(monkeypatch):
    monkeypatch.setenv("SK_EDGE_TAPPED_LAYOUT", "nchw")
    with tapping.tapped_session(_padded_model(), ["r", "s"], CPU) as run:
        assert not run.blocked and run.fetched == {"r": "r", "s": "s"}
        assert run.run(np.ones((1, 3, 16, 16), np.float32))["s"].shape == (1, 32, 16, 16)


def test_a_full_temporary_folder_leaves_every_tensor_nchw_and_says_so(tmp_path):
    """ONNX Runtime cannot save the optimized graph on a full disk (a real 256 KB tmpfs): the NCHW path, one line."""
    model, names, batch = _reference(tmp_path / "wd")
    tapped = _with_outputs(model, names)
    logs = []
    with small_tmpfs(tmp_path / "small", "256k") as disk:
        with tapping.tapped_session(tapped, names, CPU, logs.append, scratch=disk) as run:
            assert not run.blocked
            got = run.run(batch)
        assert list(disk.iterdir()) == []
    assert len(logs) == 1 and "reading every tapped tensor as NCHW" in logs[0] and len(logs[0]) < 300, logs
    expected = _nchw(tapped, names, batch)
    assert all(np.array_equal(got[name], expected[name]) for name in names)


@blocked_here
def test_a_padded_twin_is_refused_at_every_run_not_only_when_the_session_is_built(tmp_path):
    from sk_edge.errors import SkEdgeError

    model = _padded_model()
    optimized = tapping._optimized_graph(model, tmp_path, CPU)
    twins = tapping.blocked_tensors(optimized, ["r", "s"])
    assert (twins["r"].channels, twins["s"].channels) == (20, 32)
    onnx.save(tapping.without_reorders(optimized, twins), str(tmp_path / "every_twin.onnx"))
    with OnnxRuntimeRunner(tmp_path / "every_twin.onnx", optimization="disabled") as runner:
        assert tapping.unpadded(runner.session, twins) == {"s": twins["s"]}  # r's twin holds 32 channels
        run = tapping.TappedRun(runner.session, {n: t.source for n, t in twins.items()}, twins)  # as if unchecked
        with pytest.raises(SkEdgeError, match=r"tensor 'r' in its blocked layout with shape \(1, 32, 16, 16\), not 20 "):
            run.run(np.ones((1, 3, 16, 16), np.float32))


def test_a_scratch_folder_that_cannot_be_removed_is_left_not_an_error(tmp_path):
    """Calibration's histograms are done when the folder goes: a file no one may remove (immutable, as root cannot
    either) leaves the folder behind instead of failing the calibration; the session is dropped first."""
    with tapping.tapped_session(_padded_model(), ["s"], CPU, scratch=tmp_path) as run:
        if not run.blocked:
            pytest.skip("no blocked layout here: no scratch folder")
        (folder,) = tmp_path.iterdir()
        pinned = folder / "pinned"
        pinned.write_text("")
        if subprocess.run(["chattr", "+i", str(pinned)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available on this file system")
        run.run(np.ones((1, 3, 16, 16), np.float32))
    try:
        assert run.session is None and pinned.exists()
    finally:
        subprocess.run(["chattr", "-i", str(pinned)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_scratch_folders_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has exited (the same number reused by a live one would be kept)
    killed = tmp_path / f"sk-edge-taps-{dead}-abc123"  # as a run killed with SIGKILL leaves it
    killed.mkdir()
    (killed / "optimized.onnx.weights").write_bytes(b"0" * 1000)
    recent = tmp_path / f"sk-edge-taps-{dead}-new"  # as fresh as a run in another PID namespace writing it: kept
    recent.mkdir()
    hour_ago = time.time() - 3600
    os.utime(killed, (hour_ago, hour_ago))
    kept = [tmp_path / f"sk-edge-taps-{os.getpid()}-live", tmp_path / "sk-edge-taps-notes",
            tmp_path / "sk-edge-taps-12x-mine", tmp_path / "my-folder", recent]
    for folder in kept[:-1]:
        folder.mkdir()
        os.utime(folder, (hour_ago, hour_ago))
    with tapping.tapped_session(_padded_model(), ["s"], CPU, scratch=tmp_path) as run:
        run.run(np.ones((1, 3, 16, 16), np.float32))
    assert not killed.exists() and all(folder.is_dir() for folder in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(folder.name for folder in kept)
