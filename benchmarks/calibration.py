#!/usr/bin/env python3
"""Calibration wall time and peak memory: sk-edge's four methods beside its peers.

SKNet-50 at 224x224 (random weights: neither time nor memory depends on their values),
calibrated on the images of calib_data/skdigits. Every measurement runs in a fresh
subprocess, so each peak RSS (VmHWM) belongs to that calibration alone.

- sk-edge: `sk-edge calibrate` (streaming histograms of the planned tensors): one pass over
  the images with entropy, then `--method max|percentile|mse`, which re-derive the ranges
  from the histograms kept in calib.json without running the images again.
- sk-edge with `--legacy-ranges`: the same pass, plus the max |x| of every other activation that
  weakly typed TensorRT builds need in calib.cache (the DLA on JetPack 5.1-6.2).
- ONNX Runtime `quantize_static` (QDQ, per-channel; MinMax and Entropy calibrators).
- NVIDIA ModelOpt ONNX PTQ (int8; max and entropy), when `modelopt` is importable or
  --modelopt-python names the interpreter of a virtual environment that has it (ModelOpt
  pins its own onnx/onnxruntime; sk-edge must be importable there: pip install --no-deps -e .).

Targets (issue 3): sk-edge peak RSS <= 2.5 GB at 512 images; entropy calibration faster
per image than ModelOpt's on the same machine.

    python benchmarks/calibration.py       # 512 images for sk-edge (and ModelOpt), 32 for ONNX Runtime
    python benchmarks/calibration.py --images 64 --peer-images 16 --out /tmp/calib.json
    python benchmarks/calibration.py --modelopt-python /tmp/venv-mo/bin/python
    python benchmarks/calibration.py --tools sk-edge     # re-measure sk-edge, keep the peers' rows
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "calib_data" / "skdigits"
RESULTS = Path(__file__).parent / "results" / "calibration.json"


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(workdir: Path, size: int) -> None:
    from sk_edge.export import export_model
    from sk_edge.models import build_model

    export_model(build_model("sknet50", input_size=size), workdir)


def batches_of_images(workdir: Path, count: int, batch: int):
    """The same preprocessed images sk-edge calibrates on, as numpy batches."""
    from sk_edge.images import ImageStream, find_images, sample_paths
    from sk_edge.preprocess import Preprocess

    pre = Preprocess.from_dict(json.loads((workdir / "export.json").read_text())["preprocess"])
    return ImageStream(sample_paths(find_images(CALIB)), pre, batch, count, root=CALIB)


def run_skedge(workdir: Path, method: str, count: int, batch: int, reuse: bool = False, legacy_ranges: bool = False) -> dict:
    from sk_edge.quantize import CalibrationOptions, calibrate

    logs: list[str] = []
    options = CalibrationOptions(method=method, num_images=count, batch=batch, legacy_ranges=legacy_ranges)
    calibrate(workdir, CALIB, options, force=not reuse, log=logs.append)
    reused = any("reusing the histograms" in line for line in logs)
    if reuse and not reused:
        raise RuntimeError("expected calib.json's histograms to be reused")
    doc = json.loads((workdir / "calib.json").read_text())
    return {"tensors": len(doc["tensors"]) + len(doc.get("legacy_ranges") or {}), "histograms_reused": reused,
            "bin_counting": doc["settings"].get("bin_counting")}


def run_skedge_legacy(workdir: Path, method: str, count: int, batch: int, reuse: bool = False) -> dict:
    """`sk-edge calibrate --legacy-ranges`: the max of every other activation too, for weakly typed builds."""
    return run_skedge(workdir, method, count, batch, reuse, legacy_ranges=True)


def run_onnxruntime(workdir: Path, method: str, count: int, batch: int) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        # The exported graph has a static batch of 1: feed the images one at a time.
        def __init__(self):
            self.it = (image[None] for b, _ in batches_of_images(workdir, count, batch) for image in b)

        def get_next(self):
            item = next(self.it, None)
            return None if item is None else {"input": item}

    # "-symmetric": zero points 0, as TensorRT requires; ONNX Runtime's default is asymmetric.
    base, symmetric = method.removesuffix("-symmetric"), method.endswith("-symmetric")
    out = workdir / f"ort_{method}.onnx"
    quantize_static(
        str(workdir / "model.fp32.onnx"),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}[base],
        extra_options={"ActivationSymmetric": True} if symmetric else None,
    )
    return {"qdq_nodes": _count_qdq(out)}


def run_modelopt(workdir: Path, method: str, count: int, batch: int) -> dict:
    import numpy as np
    from modelopt.onnx.quantization import quantize

    import shutil

    data = np.concatenate([b for b, _ in batches_of_images(workdir, count, batch)])
    out = workdir / f"modelopt_{method}.onnx"
    src = workdir / f"modelopt_{method}_input.onnx"  # ModelOpt 0.47 rewrote its input file in place
    shutil.copy(workdir / "model.fp32.onnx", src)
    quantize(
        onnx_path=str(src),
        quantize_mode="int8",
        calibration_data=data,
        calibration_method=method,
        output_path=str(out),
        calibration_eps=["cpu"],
    )
    return {"qdq_nodes": _count_qdq(out)}


def run_floor(workdir: Path, method: str, count: int, batch: int) -> dict:
    """The inference floor: the same images, decoded and preprocessed the same way, through a plain FP32
    ONNX Runtime session of the same graph (its default memory arena, the graph's own output only); what
    calibration adds to it is the tapped tensors and their histograms."""
    from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
    from sk_edge.quantize.calibration import _providers

    session = OnnxRuntimeRunner(workdir / "model.fp32.onnx", providers=_providers(), dynamic_batch=True).session
    name = session.get_inputs()[0].name
    for x, _ in batches_of_images(workdir, count, batch):
        session.run(None, {name: x})
    return {}


def _count_qdq(path: Path) -> int:
    import onnx

    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


TOOLS = {"sk-edge": run_skedge, "sk-edge-legacy": run_skedge_legacy, "onnxruntime": run_onnxruntime,
         "modelopt": run_modelopt, "floor": run_floor}


def worker(args) -> int:
    t0 = time.perf_counter()
    kwargs = {"reuse": True} if args.reuse else {}
    extra = TOOLS[args.worker](Path(args.workdir), args.method, args.count, args.batch, **kwargs)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}))
    return 0


# The A/B passes: calibration as a machine without numba counts (sk_edge/quantize/bin_counting.py), and with every
# tapped tensor reordered to NCHW, as before sk_edge/quantize/tapping.py read them in ONNX Runtime's blocked layout.
VARIANTS = {"numpy": {"SK_EDGE_BIN_COUNTING": "numpy"}, "nchw taps": {"SK_EDGE_TAPPED_LAYOUT": "nchw"}}


def worker_env(variant: str | None = None) -> dict[str, str]:
    """The workers' environment. Python caches bytecode in them, as in any pip install: with PYTHONDONTWRITEBYTECODE
    (set on this project's development machine) every worker compiled its imports from source, a second or more per
    process that no user pays, and more for calibration (numba) than for the floor."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **VARIANTS.get(variant or "", {})}


def measure(tool: str, method: str, workdir: Path, count: int, batch: int, python: str = sys.executable,
            reuse: bool = False, variant: str | None = None) -> dict:
    cmd = [python, __file__, "--worker", tool, "--method", method, "--workdir", str(workdir),
           "--count", str(count), "--batch", str(batch), *(["--reuse"] if reuse else [])]
    print(f"{tool} {method}{f' ({variant})' if variant else ''}: {count} images ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(variant))
    row = {"tool": tool, "method": method, "images": count, "batch": batch, **({"variant": variant} if variant else {})}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {**row, "error": tail[:300], "returncode": proc.returncode}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Re-deriving ranges from stored histograms runs no image: no per-image time.
    result["seconds_per_image"] = None if result.get("histograms_reused") else result["seconds"] / count
    return {**row, **result}


def _median_over_floor(rows: list[dict], floor: list[float], variant: str, images: int) -> float | None:
    """The median over the rounds of an A/B pass's time over its round's floor."""
    times = [r["seconds_per_image"] for r in rows if r.get("variant") == variant and r.get("images") == images
             and r.get("seconds_per_image")]
    return statistics.median(t / f for f, t in zip(floor, times)) if times and floor else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="images for sk-edge")
    parser.add_argument("--peer-images", type=int, default=32, help="images for ONNX Runtime (it keeps every activation in memory)")
    parser.add_argument("--modelopt-images", type=int, default=None, help="images for ModelOpt [default: --images]")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4, help="sk-edge's default")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the floor and sk-edge's pass")
    parser.add_argument("--tools", default="sk-edge,sk-edge-legacy,onnxruntime,modelopt",  # the floor runs with sk-edge
                        help="comma-separated; rows of tools left out are kept from an existing --out file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--modelopt-python", help="interpreter of a virtual environment with nvidia-modelopt[onnx]")
    parser.add_argument("--worker", choices=list(TOOLS), help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    tools = set(args.tools.split(","))
    unknown = tools - set(TOOLS)
    if unknown:
        parser.error(f"--tools: unknown {', '.join(sorted(unknown))}")
    kept = []
    if args.out.is_file() and tools != set(TOOLS):
        # Rows of the tools not run now are kept; the floor belongs to sk-edge's run (its ratio mixes no runs).
        ran = tools | ({"floor"} if "sk-edge" in tools else set())
        kept = [r for r in json.loads(args.out.read_text())["results"] if r.get("tool") not in ran]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.input_size)
        if "sk-edge" in tools:
            # Untimed: the first worker caches the bytecode of what the others import (worker_env says why).
            measure("sk-edge", "entropy", workdir, 2 * args.batch, args.batch)
            # One pass over the images (entropy, the default), then the other methods re-derived
            # from the histograms that calib.json keeps, as `sk-edge calibrate --method M` does.
            # The floor and the calibration pass interleaved, so that a load change hits both.
            for _ in range(args.rounds):
                # The A/B passes (VARIANTS) first; then the floor and sk-edge's own pass, back to back (the pair the
                # figure is made of), the last one's histograms what the methods below reuse.
                for variant in VARIANTS:
                    rows.append(measure("sk-edge", "entropy", workdir, args.images, args.batch, variant=variant))
                rows.append(measure("floor", "fp32-pass", workdir, args.images, args.batch))
                rows.append(measure("sk-edge", "entropy", workdir, args.images, args.batch))
            for method in ("max", "percentile", "mse"):
                rows.append(measure("sk-edge", method, workdir, args.images, args.batch, reuse=True))
            rows.append(measure("sk-edge", "entropy", workdir, args.peer_images, args.batch))  # at ONNX Runtime's count
        if "sk-edge-legacy" in tools:  # what --legacy-ranges (every activation, for weakly typed builds) costs
            rows.append(measure("sk-edge-legacy", "entropy", workdir, args.images, args.batch))
        if "onnxruntime" in tools:
            for method in ("minmax", "entropy"):
                rows.append(measure("onnxruntime", method, workdir, args.peer_images, args.batch))
        python = args.modelopt_python or sys.executable
        probe = subprocess.run([python, "-c", "import modelopt.onnx.quantization"], capture_output=True, text=True)
        if "modelopt" not in tools:
            pass
        elif probe.returncode != 0:
            tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"tool": "modelopt", "skipped": f"not importable with {python} ({tail})"})
        else:
            for method in ("max", "entropy"):
                rows.append(measure("modelopt", method, workdir, args.modelopt_images or args.images, args.batch, python))
    rows += kept
    floor = [r["seconds_per_image"] for r in rows if r.get("tool") == "floor" and r.get("seconds_per_image")]
    calib = [r["seconds_per_image"] for r in rows if r.get("tool") == "sk-edge" and r.get("method") == "entropy"
             and r.get("images") == args.images and r.get("seconds_per_image") and not r.get("variant")]
    # Each round ran the floor and the calibration back to back: their ratio is what a load change cannot skew, and
    # the median of the rounds' ratios is the figure (a best-of pairs one round's lucky floor with another's pass).
    ratios = [c / f for f, c in zip(floor, calib)]
    ratio = statistics.median(ratios) if ratios else None
    by_variant = {variant: _median_over_floor(rows, floor, variant, args.images) for variant in VARIANTS}
    if ratio is not None:
        print(f"calibration / inference floor: {ratio:.2f}x, the median of {len(ratios)} interleaved rounds "
              f"({', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.2x); best of each: "
              f"{min(calib):.3f} / {min(floor):.3f} s per image = {min(calib) / min(floor):.2f}x")
        print("  the A/B passes, likewise: " + ", ".join(f"{v} {r:.2f}x" for v, r in by_variant.items() if r))
    print(f"\n{'tool':<24} {'method':<11} {'images':>6} {'seconds':>8} {'s/image':>8} {'peak RSS MB':>12}")
    for r in rows:
        if "seconds" in r:
            per_image = "reused" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.3f}"
            tool = r["tool"] + (f" ({r['variant']})" if r.get("variant") else "")
            print(f"{tool:<24} {r['method']:<11} {r['images']:>6} {r['seconds']:>8.1f} "
                  f"{per_image:>8} {r['peak_rss_mb']:>12.0f}")
        else:
            print(f"{r['tool']:<24} {r.get('method', ''):<11} {r.get('error') or r.get('skipped')}")
    from sk_edge.artifacts import write_json
    from sk_edge.versions import library_versions

    write_json(args.out, {
        "benchmark": "calibration",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": f"sknet50 @ {args.input_size}",
        "machine": {"cpus": os.cpu_count()},
        "libraries": library_versions(),
        "results": rows,
        "calibration_over_floor": ratio,
        "calibration_over_floor_by_round": ratios,
        "variants_over_floor": by_variant,
        "calibration_over_floor_best_of_each": min(calib) / min(floor) if floor and calib else None,
        "python_bytecode": "cached, as a pip install has it (PYTHONDONTWRITEBYTECODE unset for the workers)",
    })
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
