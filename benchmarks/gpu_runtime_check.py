#!/usr/bin/env python3
"""What of sk-edge's GPU code runs on a CUDA machine without TensorRT, and what it measured.

- ``sk_edge.runtime.Engine`` with real pycuda (device 0's primary context, pinned host
  buffers, device buffers, one stream, async copies, synchronisation, CUDA-graph capture and
  replay) around a stand-in TensorRT module built from TensorRT 10.13's real API surface
  (tests/trt_standin.py) whose ``execute_async_v3`` enqueues a real device-to-device copy
  of the input buffer into the output buffer on the given stream. The numbers that come
  back must be the numbers that went in: that checks the addresses handed to
  ``set_tensor_address``, the stream ordering and both copies; TensorRT itself is not there.
- ``sk_edge.backends.tensorrt.gpu_identity`` through pycuda.
- ``sk-edge bench --backends torch`` on the reference model: the FP32 PyTorch reference on
  the CPU and on CUDA (CUDA events, GPU memory).

    python benchmarks/gpu_runtime_check.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def runtime_check(cuda_graph: bool) -> dict:
    import pycuda.driver as cuda

    from sk_edge.backends.tensorrt import engine_sidecar_path, gpu_identity
    from sk_edge.runtime import Engine
    from trt_standin import Scenario, standin_module

    shapes = {"input": (8, 3, 64, 64), "logits": (8, 10)}
    holder = {}

    def execute(context, stream_handle):
        # The "engine": copy the first 8*10 floats of the input into the output, on the stream.
        engine = holder["engine"]
        src, dst = engine._device["input"], engine._device["logits"]
        cuda.memcpy_dtod_async(dst, src, 8 * 10 * 4, engine.stream)
        return True

    trt = standin_module("10.13.3.9", Scenario(
        returns={
            "Runtime.deserialize_cuda_engine": lambda self, plan: trt.ICudaEngine(),
            "ICudaEngine.create_execution_context": lambda self, *a: trt.IExecutionContext(),
            "ICudaEngine.get_tensor_name": lambda self, i: ["input", "logits"][i],
            "ICudaEngine.get_tensor_mode": lambda self, n: trt.TensorIOMode.INPUT if n == "input" else trt.TensorIOMode.OUTPUT,
            "ICudaEngine.get_tensor_dtype": lambda self, n: trt.DataType.FLOAT,
            "IExecutionContext.set_input_shape": lambda self, n, s: tuple(s) == shapes["input"],
            "IExecutionContext.get_tensor_shape": lambda self, n: shapes[n],
            "IExecutionContext.execute_async_v3": execute,
        },
        properties={"ICudaEngine.num_io_tensors": 2},
    ))
    tmp = Path(tempfile.mkdtemp())
    engine_path = tmp / "model.fp32.engine"
    engine_path.write_bytes(b"plan")
    gpu = gpu_identity()
    engine_sidecar_path(engine_path).write_text(json.dumps({"tensorrt": {"version": trt.__version__}, "gpu": gpu, "settings": {}}))
    engine = holder["engine"] = Engine(engine_path, cuda_graph=cuda_graph, trt=trt)
    x = np.random.default_rng(0).standard_normal(shapes["input"]).astype(np.float32)
    results = []
    for i in range(3):
        y = engine(x + i)
        results.append(bool(np.array_equal(y, (x + i).reshape(-1)[:80].reshape(8, 10))))
    return {"gpu": gpu, "cuda_graph": cuda_graph, "outputs_correct": results, "touched": sorted(trt.touched)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {}
    for graph in (False, True):
        try:
            report[f"runtime_cuda_graph_{graph}"] = runtime_check(graph)
        except Exception as exc:  # report what failed, keep going
            report[f"runtime_cuda_graph_{graph}"] = {"error": f"{type(exc).__name__}: {exc}"}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp) / "wd"
        subprocess.run([sys.executable, "-m", "sk_edge", "export", "-w", str(wd)], check=True)
        bench = subprocess.run([sys.executable, "-m", "sk_edge", "bench", "-w", str(wd), "--backends", "torch,onnxruntime",
                                "--precisions", "fp32", "--batch", "1,8", "--iterations", "200"], capture_output=True, text=True)
        report["bench_returncode"] = bench.returncode
        report["bench_md"] = bench.stdout
        report["bench_stderr_tail"] = bench.stderr[-1500:]
        if (wd / "bench.json").is_file():
            report["bench"] = json.loads((wd / "bench.json").read_text())
            for r in report["bench"]["results"]:
                r.pop("latencies_ms", None)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "bench"}, indent=1, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
