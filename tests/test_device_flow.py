"""The device side in a virtual environment without PyTorch (issue 11), as a Jetson user runs it.

`make device-test` makes such an environment (`pip install .`, no extras, plus pytest), prepares a
work directory with the full install (`sk-edge build --precision int8`, which judges the build and
stores the PyTorch outputs in reference.npz), and runs this
file there with SK_EDGE_DEVICE_WORKDIR pointing at a copy. In the full environment the file skips:
what it proves is that none of it needs PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None,
    reason="runs in the torch-free device environment: make device-test",
)


def sk_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sk_edge", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture
def workdir(tmp_path) -> Path:
    source = os.environ.get("SK_EDGE_DEVICE_WORKDIR")
    if not source:
        pytest.fail("SK_EDGE_DEVICE_WORKDIR is not set: run this through `make device-test`")
    copy = tmp_path / "wd"
    shutil.copytree(source, copy)
    return copy


def test_nothing_on_the_device_path_imports_torch():
    for name in ("torch", "torchvision", "timm"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed in the device environment"
    import sk_edge.analyze  # noqa: F401
    import sk_edge.bench  # noqa: F401
    import sk_edge.engine_stage  # noqa: F401
    import sk_edge.pipeline  # noqa: F401
    import sk_edge.export  # noqa: F401  (re-exports lazily)
    import sk_edge.models  # noqa: F401  (re-exports lazily)
    import sk_edge.quantize  # noqa: F401
    import sk_edge.runtime  # noqa: F401
    import sk_edge.sensitivity  # noqa: F401
    import sk_edge.serving  # noqa: F401
    import sk_edge.verify  # noqa: F401

    assert "torch" not in sys.modules
    # The installed package (pip install .), not the checkout: package data must have come along.
    assert Path(sk_edge.verify.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())


def test_the_installed_package_carries_the_gpu_kernels_source_as_files():
    """sk_edge/kernels/ are links into cpp/include/ in the checkout; a wheel must hold the files themselves."""
    from sk_edge.frame_kernels import kernel_sources

    source, headers = kernel_sources()
    assert b"sk_edge_horizontal_pass" in source and b"load_rgb" in headers["sk_edge/pixels.hpp"]
    import sk_edge.frame_kernels

    kernels = Path(sk_edge.frame_kernels.__file__).parent / "kernels"
    assert not any(p.is_symlink() for p in kernels.iterdir())


def test_build_from_verify_bench_and_the_serving_exports(workdir, tmp_path):
    built = sk_edge("build", "--from", str(workdir), "--precision", "int8")
    # On the device the engine is the product: without TensorRT the build fails, in one line with the install
    # hint, after judging the graph (never "PASS", and never "run on_device.sh", which is this very command).
    assert built.returncode == 1, built.stderr
    errors = [line for line in built.stderr.splitlines() if line.startswith("sk-edge: error:")]
    assert errors == ["sk-edge: error: no engine was built on this device: TensorRT is not installed here (pip install "
                      "'sk-edge[tensorrt]' on a desktop; on a Jetson, JetPack's bindings in a virtualenv made with "
                      "--system-site-packages)"], built.stderr
    assert "run " + str(workdir / "on_device.sh") not in built.stderr and "Traceback" not in built.stderr
    assert "verify PASSED" in built.stderr
    assert "sk-edge build INT8: FAIL (model.int8.onnx on ONNX Runtime; no engine built)" in built.stderr
    doc = json.loads((workdir / "verify.json").read_text())
    # The reference is the PyTorch model's outputs, computed on the host and stored, not the FP32 graph.
    assert doc["reference_kind"] == "pytorch-stored" and "run on the host (torch " in doc["reference"]
    assert doc["candidate"]["precision"] == "int8" and doc["metrics"]["images"] == 1000
    assert "| reference | PyTorch outputs stored on the host |" in (workdir / "verify.md").read_text()

    verify = sk_edge("verify", "-w", str(workdir), "--candidate", "int8")
    assert verify.returncode == 0, verify.stderr

    # No PyTorch here: the latency gate compares with the FP32 graph on the same backend, and says so.
    bench = sk_edge("bench", "-w", str(workdir), "--iterations", "5", "--warmup", "1", "--min-speedup", "0.001")
    assert bench.returncode == 0, bench.stderr
    assert "against the FP32 graph on ONNX Runtime (PyTorch is not installed here): meets --min-speedup" in bench.stderr
    rows = json.loads((workdir / "bench.json").read_text())["results"]
    assert {(r["config"]["backend"], r["config"]["precision"]) for r in rows if "stats" in r} >= {("onnxruntime", "int8"),
                                                                                                   ("onnxruntime", "fp32")}
    assert not any(r["config"]["backend"] == "torch" for r in rows)

    triton = sk_edge("export-triton", "-w", str(workdir), "--repo", str(tmp_path / "repo"))
    assert triton.returncode == 0, triton.stderr
    assert (tmp_path / "repo" / "sknet26-digits" / "config.pbtxt").is_file()
    deepstream = sk_edge("export-deepstream", "-w", str(workdir))
    assert deepstream.returncode == 0, deepstream.stderr
    assert "onnx-file=model.int8.onnx" in (workdir / "deepstream_nvinfer.txt").read_text()


def test_the_stored_reference_matches_the_host_and_is_refused_when_stale(workdir, tmp_path):
    host = json.loads((workdir / "verify.json").read_text())  # written on the host, by the build's verify
    assert host["reference_kind"] == "pytorch"
    out = sk_edge("verify", "-w", str(workdir), "--candidate", "int8")
    assert out.returncode == 0, out.stderr
    here = json.loads((workdir / "verify.json").read_text())
    # The same PyTorch outputs and the same inputs (stored pixels, normalised again): the same verdict.
    for key in ("top1_agreement", "kl_mean", "cosine_worst", "accuracy_reference", "accuracy_candidate"):
        assert here["metrics"][key] == host["metrics"][key], key

    # Made for another export: refused in one line, never a silent switch to the FP32 graph.
    sidecar = json.loads((workdir / "reference.json").read_text())
    sidecar["inputs"]["model.fp32.onnx"] = "0" * 64
    (workdir / "reference.json").write_text(json.dumps(sidecar))
    stale = sk_edge("verify", "-w", str(workdir), "--candidate", "int8")
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    assert "holds PyTorch outputs for another model.fp32.onnx" in stale.stderr and "--images DIR" in stale.stderr
    # Of a schema this sk-edge does not read: refused in one line with the fix, before its fields are trusted.
    (workdir / "reference.json").write_text(json.dumps({**sidecar, "schema": 2}))
    newer = sk_edge("verify", "-w", str(workdir), "--candidate", "int8")
    assert newer.returncode == 1 and "Traceback" not in newer.stderr and len(newer.stderr.strip().splitlines()) == 1
    assert "reference.json' has sidecar schema 2" in newer.stderr and "sk-edge verify --images DIR` on the host" in newer.stderr

    # With images named, the device judges against the FP32 graph and says so.
    named = sk_edge("verify", "-w", str(workdir), "--candidate", "int8", "--images", str(workdir / "eval_images"),
                    "--labels", str(workdir / "eval_images" / "labels.csv"))
    assert named.returncode == 0, named.stderr
    doc = json.loads((workdir / "verify.json").read_text())
    assert doc["reference_kind"] == "fp32-graph" and "the FP32 graph" in (workdir / "verify.md").read_text()


def test_a_host_command_says_what_to_install(tmp_path):
    out = sk_edge("export", "--model", "sknet26", "-w", str(tmp_path / "wd"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "needs torch, which is not installed here" in out.stderr and "pip install 'sk-edge[export]'" in out.stderr


@pytest.mark.parametrize("version", ["8.5-from-source", "8.6.1", "10.3.0", "10.7.0", "10.13.3.9", "10.16.1.11", "11.4.0.106"])
def test_the_runtime_through_the_standin(workdir, tmp_path, version):
    """Build and run an engine with the stand-in of every TensorRT a device may have: no PyTorch anywhere.

    8.5 and 8.6 (JetPack 5.1 / 6.0) take the weakly typed path from the FP32 graph; 10.3 on, the
    strongly typed main path from the INT8 graph.
    """
    from sk_edge import engine_stage as pipeline
    from sk_edge.backends.tensorrt import BuildOptions, TrtFeatures
    from sk_edge.runtime import Engine

    from trt_standin import ORIN, FakeCuda, scenario, standin_module

    holder: dict = {}
    trt = holder["trt"] = standin_module(version, scenario(holder))
    holder["float_node"] = next(iter(json.loads((workdir / "model.int8.json").read_text())["plan"]["float_nodes"]))
    result = pipeline.build_engine_stage(workdir, "int8", BuildOptions(timing_cache=tmp_path / "t.cache"), trt=trt, gpu=ORIN)
    sidecar = json.loads((workdir / "model.int8.engine.json").read_text())
    weak = not TrtFeatures.of(trt).strongly_typed
    assert sidecar["settings"]["legacy_weakly_typed"] == weak
    assert sidecar["inputs"]["onnx"]["name"] == ("model.fp32.onnx" if weak else "model.int8.onnx")
    assert ("BuilderFlag.INT8" in trt.touched) == weak
    with Engine(result.engine, trt=trt, cuda=FakeCuda(), gpu=ORIN) as engine:
        out = engine(np.zeros((1, 3, 64, 64), np.float32))
    assert out.shape == (1, 10) and out.dtype == np.float32
    assert "IExecutionContext.execute_async_v3" in trt.touched
