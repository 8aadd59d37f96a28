#!/usr/bin/env python3
"""sk-edge INT8 beside its peers, on the trained reference model and the same images.

Every tool calibrates on the 512 images of calib_data/skdigits (each in a fresh process:
wall time and peak RSS are its own), then every INT8 graph is judged the same way on the
1000 held-out SK-Digits images, on ONNX Runtime's CPU provider, against the FP32 PyTorch
reference (sk_edge.verify.compare):

- sk-edge: `sk-edge calibrate` (entropy, the default) + `sk-edge quantize --precision int8`
  (FP16 between the Q/DQ pairs, the default, and `--mixed fp32`);
- ONNX Runtime `quantize_static` (QDQ, per-channel weights; Entropy and MinMax), with its
  default asymmetric activations (zero points != 0, which TensorRT does not accept) and with
  `ActivationSymmetric` (what a TensorRT user must set);
- NVIDIA ModelOpt ONNX PTQ (int8; entropy and max), when --modelopt-python names the
  interpreter of a virtual environment that has it (see benchmarks/calibration.py).

Also: Q/DQ node count and ONNX Runtime CPU latency (batch 1, median of 100 runs). FP16 is
reported for reference.

    python benchmarks/quantization_peers.py [--modelopt-python /tmp/venv-mo/bin/python]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
from calibration import measure  # noqa: E402

from sk_edge.artifacts import write_json  # noqa: E402
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from sk_edge.export import export_model  # noqa: E402
from sk_edge.images import ImageStream, find_images  # noqa: E402
from sk_edge.models import build_model  # noqa: E402
from sk_edge.quantize import quantize_model  # noqa: E402
from sk_edge.reference import digits  # noqa: E402
from sk_edge.verify import compare, reference_runner  # noqa: E402
from sk_edge.versions import library_versions  # noqa: E402
from sk_edge.workdir import load_export  # noqa: E402


def latency_ms(path: Path, x: np.ndarray, runs: int = 100) -> float:
    runner = OnnxRuntimeRunner(path, threads=2)
    for _ in range(10):
        runner(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def qdq_nodes(path: Path) -> int:
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="calibration images, every tool")
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--modelopt-python", help="interpreter of a virtual environment with nvidia-modelopt[onnx]")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantization_peers.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp) / "wd"
        export_model(build_model("sknet26-digits"), wd)
        export = load_export(wd)
        evaldir = Path(tmp) / "eval"
        labels = digits.write_split("eval", evaldir, args.eval_images)
        label_of = {line.split(",")[0]: int(line.split(",")[1]) for line in labels.read_text().splitlines()[1:]}
        pre = export.preprocess
        stream = ImageStream(find_images(evaldir), pre, 64, None, root=evaldir)
        batches = list(stream)
        names = [n for _, ns in batches for n in ns]
        ref_run, ref_desc = reference_runner(wd, export)
        ref = np.concatenate([ref_run(b) for b, _ in batches])
        one = batches[0][0][:1]
        print(f"reference: {ref_desc}, {len(names)} held-out images", file=sys.stderr)

        candidates = []  # (tool, method, path, calibration row)
        cal = measure("sk-edge", "entropy", wd, args.images, 4)
        quantize_model(wd, "int8", "fp32")
        fp32_rest = wd / "model.int8.fp32-rest.onnx"
        (wd / "model.int8.onnx").rename(fp32_rest)
        quantize_model(wd, "int8", force=True)
        candidates.append(("sk-edge", "entropy", wd / "model.int8.onnx", cal))
        candidates.append(("sk-edge --mixed fp32", "entropy", fp32_rest, cal))
        for method in ("entropy", "minmax", "entropy-symmetric", "minmax-symmetric"):
            cal = measure("onnxruntime", method, wd, args.images, 4)
            candidates.append(("onnxruntime quantize_static", method, wd / f"ort_{method}.onnx", cal))
        python = args.modelopt_python or sys.executable
        probe = subprocess.run([python, "-c", "import modelopt.onnx.quantization"], capture_output=True, text=True)
        if probe.returncode == 0:
            for method in ("entropy", "max"):
                cal = measure("modelopt", method, wd, args.images, 4, python)
                candidates.append(("modelopt", method, wd / f"modelopt_{method}.onnx", cal))
        else:
            rows.append({"tool": "modelopt", "skipped": f"not importable with {python}"})
        quantize_model(wd, "fp16")
        candidates.append(("sk-edge FP16", "-", wd / "model.fp16.onnx", {}))

        for tool, method, path, cal in candidates:
            if "error" in cal:
                rows.append({"tool": tool, "method": method, "error": cal["error"]})
                print(f"{tool} {method}: {cal['error']}", file=sys.stderr)
                continue
            runner = OnnxRuntimeRunner(path, dynamic_batch=True)
            out = np.concatenate([runner(b) for b, _ in batches])
            m = compare(ref, out, names, label_of)
            row = {
                "tool": tool, "method": method,
                "top1_agreement": m["top1_agreement"], "accuracy": m["accuracy_candidate"],
                "accuracy_reference": m["accuracy_reference"], "top1_drop_points": m["top1_drop_points"],
                "kl_mean": m["kl_mean"], "cosine_worst": m["cosine_worst"], "max_abs_logit_diff": m["max_abs_logit_diff"],
                "calibration_seconds": cal.get("seconds"), "calibration_peak_rss_mb": cal.get("peak_rss_mb"),
                "qdq_nodes": qdq_nodes(path), "ort_cpu_latency_ms": latency_ms(path, one),
            }
            rows.append(row)
            print(f"{tool:<28} {method:<8} agreement {row['top1_agreement']:.2%}  drop {row['top1_drop_points']:+.2f}  "
                  f"KL {row['kl_mean']:.2e}  Q/DQ {row['qdq_nodes']}", file=sys.stderr)
        rows.append({"tool": "FP32 ONNX", "method": "-", "ort_cpu_latency_ms": latency_ms(wd / "model.fp32.onnx", one)})

    write_json(args.out, {
        "benchmark": "quantization_peers",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": "sknet26-digits", "calibration_images": args.images, "eval_images": args.eval_images,
        "reference": ref_desc, "libraries": library_versions(), "results": rows,
    })
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
