#!/usr/bin/env python3
"""Which ONNX Runtime session settings measure a precision graph as written, and what they cost.

For each INT8 graph (the bundled reference model, the shared SKNet-26 M=3 model trained outside
the project, and SKNet-50 at 224x224 with random weights for time at a realistic size), and each
candidate setting:

- default:          ORT_ENABLE_ALL, ONNX Runtime's default
- disable_all:      ORT_DISABLE_ALL
- judging:          ORT_ENABLE_ALL with session.disable_quant_qdq=1 and
                    session.disable_double_qdq_remover=1 (what sk-edge's judging sessions use)
- no_propagation:   ORT_ENABLE_ALL without QDQPropagationTransformer
- no_bias_quant:    ORT_ENABLE_ALL without WeightBiasQuantization

it prints and records:
- max |logit difference| from onnx.reference (ONNX's own Python evaluator: every op as the
  specification defines it, FP16 ops computed in FP16) on a few images: how far each session is
  from the graph's semantics;
- top-1 agreement of the INT8 graph with the FP32 graph on the held-out SK-Digits images;
- wall time of the whole evaluation set (median of --rounds interleaved passes, 2 threads), and the
  ratio to the default session's.

    python benchmarks/ort_judging.py                 # all three models
    python benchmarks/ort_judging.py --models reference,m3 --reference-images 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = Path(__file__).parent / "results" / "ort_judging.json"

from sk_edge.backends.onnxruntime import JUDGING_CONFIG, JUDGING_OPTIMIZATION  # noqa: E402
CALIB = ROOT / "calib_data" / "skdigits"

SETTINGS = {
    "default": {"optimization": "all"},
    "disable_all": {"optimization": "disabled"},
    "judging": {"optimization": JUDGING_OPTIMIZATION, "config": JUDGING_CONFIG},
    "no_propagation": {"optimization": "all", "disabled_optimizers": ["QDQPropagationTransformer"]},
    "no_bias_quant": {"optimization": "all", "disabled_optimizers": ["WeightBiasQuantization"]},
}


def session(path: Path, optimization: str, disabled_optimizers=(), config=None, threads: int = 2):
    import onnxruntime as ort

    from sk_edge.backends.onnxruntime import OPTIMIZATION_LEVELS, OnnxRuntimeRunner

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    for k, v in (config or {}).items():
        opts.add_session_config_entry(k, v)
    source = OnnxRuntimeRunner(path, dynamic_batch=True)._source()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers))


def run(sess, x: np.ndarray, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def prepare(kind: str, workdir: Path) -> None:
    from sk_edge.export import export_model
    from sk_edge.models import build_model
    from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model

    if kind == "m3":
        from shared_model import export_m3

        export_m3(workdir)
        images = 256
    else:
        export_model(build_model("sknet26-digits" if kind == "reference" else "sknet50"), workdir)
        images = 512 if kind == "reference" else 32
    calibrate(workdir, CALIB, CalibrationOptions(num_images=images))
    quantize_model(workdir, "int8", "fp16")


def eval_images(workdir: Path, count: int) -> np.ndarray:
    from sk_edge.images import ImageStream, find_images
    from sk_edge.preprocess import Preprocess
    from sk_edge.reference import digits

    folder = workdir / "eval"
    digits.write_split("eval", folder, 1000)
    pre = Preprocess.from_dict(json.loads((workdir / "export.json").read_text())["preprocess"])
    paths = find_images(folder)[:count]
    return np.concatenate([b for b, _ in ImageStream(paths, pre, 64, None, root=folder)])


def measure(kind: str, count: int, reference_images: int, batch: int, rounds: int) -> dict:
    import onnx
    from onnx.reference import ReferenceEvaluator

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(kind, workdir)
        x = eval_images(workdir, count)
        int8, fp32 = workdir / "model.int8.onnx", workdir / "model.fp32.onnx"
        ref_top1 = run(session(fp32, "disabled"), x, batch).argmax(1)
        t0 = time.perf_counter()
        evaluator = ReferenceEvaluator(onnx.load(str(int8)))
        truth = np.concatenate([evaluator.run(None, {"input": x[i : i + 1]})[0] for i in range(reference_images)])
        reference_s = time.perf_counter() - t0
        rows, sessions, times = {}, {}, {name: [] for name in SETTINGS}
        for name, setting in SETTINGS.items():
            sessions[name] = session(int8, **setting)
            out = run(sessions[name], x, batch)  # also the warm-up
            rows[name] = {
                "top1_agreement_with_fp32": float((out.argmax(1) == ref_top1).mean()),
                "max_abs_diff_from_onnx_reference": float(np.abs(out[:reference_images] - truth).max()),
            }
        names = list(SETTINGS)
        for r in range(rounds):  # interleaved, each round in another order, so drift in the machine hits all alike
            for name in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.perf_counter()
                run(sessions[name], x, batch)
                times[name].append(time.perf_counter() - t0)
        for name in names:
            rows[name]["seconds"] = float(np.median(times[name]))
            rows[name]["seconds_all_rounds"] = times[name]
        base = rows["default"]["seconds"]
        for r in rows.values():
            r["time_vs_default"] = r["seconds"] / base
    return {"model": kind, "images": int(len(x)), "input": list(x.shape[1:]), "reference_images": reference_images, "rounds": rounds,
            "onnx_reference_seconds": reference_s, "settings": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="reference,m3,sknet50")
    parser.add_argument("--images", type=int, default=1000, help="Evaluation images (64x64 models).")
    parser.add_argument("--sknet50-images", type=int, default=64)
    parser.add_argument("--reference-images", type=int, default=4, help="Images run through onnx.reference.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed passes per setting (median reported).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import onnxruntime as ort

    results = []
    for kind in args.models.split(","):
        big = kind == "sknet50"
        r = measure(kind, args.sknet50_images if big else args.images, 1 if big else args.reference_images, 8 if big else 32,
                    args.rounds)
        results.append(r)
        print(f"\n{kind}: {r['images']} images {r['input']}, onnx.reference on {r['reference_images']} ({r['onnx_reference_seconds']:.1f}s)")
        print(f"  {'setting':<18} {'agreement':>9} {'max|d| vs ref':>13} {'seconds':>8} {'x default':>9}")
        for name, row in r["settings"].items():
            print(f"  {name:<18} {row['top1_agreement_with_fp32']:>9.2%} {row['max_abs_diff_from_onnx_reference']:>13.4f} "
                  f"{row['seconds']:>8.2f} {row['time_vs_default']:>9.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"onnxruntime": ort.__version__, "threads": 2, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
