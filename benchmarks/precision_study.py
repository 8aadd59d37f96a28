#!/usr/bin/env python3
"""What each precision choice costs the reference model, measured on ONNX Runtime (CPU).

The reference model (sknet26-digits) is exported, calibrated once on calib_data/skdigits
(512 images; histograms reused for every method), and every variant below is built in
memory and scored on the 1000 held-out SK-Digits images against the FP32 graph:

- INT8 calibration method: max, percentile 99.99, entropy, entropy counting the zero
  spike (as a plain KL search does), mse - with sk-edge's placement and FP16 elsewhere;
- placement: the SK attention path in float (sk-edge) or quantized like the rest (its
  FCs and both inputs of the gate, as generic tools place Q/DQ);
- what is not quantized: FP16 or FP32 (``--mixed``);
- FP16: every op in FP16, or global pooling kept in FP32 (sk-edge's rule).

Then the anatomy of the zero-spike hole: per quantized tensor, its share of values in the
first histogram bin (post-ReLU zeros) and how far a KL search that counts them pulls amax
down; and the hole reproduced one tensor group at a time (the zero-spike ranges applied
only to the tensors of one role, every other tensor calibrated normally).

    python benchmarks/precision_study.py            # writes benchmarks/results/precision_study.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from sk_edge.artifacts import write_json
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import export_model
from sk_edge.images import ImageStream, find_images, sample_paths, to_tensor
from sk_edge.models import build_model
from sk_edge.preprocess import Preprocess
from sk_edge.quantize import CalibrationOptions, build_fp16_graph, build_int8_graph, calibrate
from sk_edge.quantize.calibration import collect_histograms
from sk_edge.quantize.histogram import StreamingHistogram
from sk_edge.quantize.methods import amax_entropy, compute_amax
from sk_edge.quantize.plan import plan_quantization
from sk_edge.reference import digits
from sk_edge.verify import kl_divergence
from sk_edge.versions import library_versions
from sk_edge.workdir import load_export

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "calib_data" / "skdigits"


def eval_set(pre: Preprocess, count: int) -> tuple[np.ndarray, np.ndarray]:
    samples = list(digits.sample("eval", count))
    x = np.stack([to_tensor(Image.fromarray(img), pre) for img, _, _ in samples])
    return x, np.array([label for _, label, _ in samples])


def score(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> dict:
    out = OnnxRuntimeRunner(model.SerializeToString(), dynamic_batch=True)(x).astype(np.float64)
    return {
        "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
        "accuracy": float((out.argmax(1) == labels).mean()),
        "mean_kl": float(np.mean(kl_divergence(ref, out))),
        "max_abs_logit_diff": float(np.abs(out - ref).max()),
    }


def _role(graph_nodes: dict, tensor: str, reasons: list[str]) -> str:
    """A coarse role for a quantized tensor: which op made it, which op reads it."""
    producer = graph_nodes.get(tensor)
    made_by = producer.op_type if producer is not None else "graph input"
    reads = "residual Add" if all(r.startswith("residual") for r in reasons) else reasons[0].split(" '")[0].removeprefix("input of ")
    return f"{made_by} -> {reads}"


def zero_spike_anatomy(fp32: onnx.ModelProto, plan, hists: dict) -> list[dict]:
    """Per tensor: first-bin share, entropy amax with and without it, values it clips."""
    producers = {o: n for n in fp32.graph.node for o in n.output}
    rows = []
    for name, reasons in plan.activations.items():
        h = hists[name]
        with_spike = amax_entropy(h, ignore_zero_bin=False)
        without = amax_entropy(h, ignore_zero_bin=True)
        first_clipped_bin = min(h.bins, max(1, int(np.ceil(with_spike / h.bin_width))))
        nonzero = h.total - int(h.counts[0])
        rows.append({
            "tensor": name,
            "role": _role(producers, name, reasons),
            "first_bin_share": round(int(h.counts[0]) / max(h.total, 1), 4),
            "amax_max": h.amax,
            "amax_entropy": without,
            "amax_entropy_with_zero_bin": with_spike,
            "clipped_share_of_nonzero": round(int(h.counts[first_clipped_bin:].sum()) / max(nonzero, 1), 4),
        })
    rows.sort(key=lambda r: -r["clipped_share_of_nonzero"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision_study.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        export_model(build_model("sknet26-digits"), wd)
        calib = calibrate(wd, CALIB, CalibrationOptions(num_images=args.calib_images))
        fp32 = onnx.load(str(wd / "model.fp32.onnx"))
        pre = load_export(wd).preprocess
        x, labels = eval_set(pre, args.eval_images)
        ref = OnnxRuntimeRunner(fp32.SerializeToString(), dynamic_batch=True)(x).astype(np.float64)
        fp32_accuracy = float((ref.argmax(1) == labels).mean())
        print(f"FP32 accuracy {fp32_accuracy:.2%} on {len(x)} held-out images", file=sys.stderr)

        plan = plan_quantization(fp32)
        hists = {n: StreamingHistogram.from_dict(t["histogram"]) for n, t in calib["tensors"].items()}
        # The attention-quantized plan needs ranges for the attention tensors too.
        plan_att = plan_quantization(fp32, quantize_attention=True)
        extra = [n for n in plan_att.activations if n not in hists]
        stream = ImageStream(sample_paths(find_images(CALIB)), pre, 8, args.calib_images, root=CALIB)
        more, _ = collect_histograms(fp32, extra, stream, 2048)
        hists.update(more)

        def amax_for(p, method: str, zero_bin: bool = False) -> dict[str, float]:
            if zero_bin:
                return {n: max(amax_entropy(hists[n], ignore_zero_bin=False), 1e-8) for n in p.activations}
            return {n: compute_amax(hists[n], method) for n in p.activations}

        def run(variant: str, model: onnx.ModelProto, **facts) -> None:
            t0 = time.perf_counter()
            result = score(model, x, labels, ref)
            rows.append({"variant": variant, **facts, **result, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{variant:<52} agreement {result['top1_agreement']:.2%}  accuracy {result['accuracy']:.2%}", file=sys.stderr)

        for method in ("max", "percentile", "entropy", "mse"):
            model, _ = build_int8_graph(fp32, plan, amax_for(plan, method), "fp16")
            run(f"int8 {method}, attention float, fp16 elsewhere", model, method=method, placement="sk-edge", mixed="fp16")
        model, _ = build_int8_graph(fp32, plan, amax_for(plan, "entropy", zero_bin=True), "fp16")
        run("int8 entropy with zero spike, attention float, fp16", model, method="entropy+zero", placement="sk-edge", mixed="fp16")
        for method in ("max", "entropy"):
            model, _ = build_int8_graph(fp32, plan_att, amax_for(plan_att, method), "fp16")
            run(f"int8 {method}, attention quantized, fp16 elsewhere", model, method=method, placement="attention-int8", mixed="fp16")
        model, _ = build_int8_graph(fp32, plan_att, amax_for(plan_att, "entropy", zero_bin=True), "fp16")
        run("int8 entropy with zero spike, attention quantized, fp16", model, method="entropy+zero", placement="attention-int8", mixed="fp16")
        model, _ = build_int8_graph(fp32, plan, amax_for(plan, calib["method"]), "fp32")
        run(f"int8 {calib['method']}, attention float, fp32 elsewhere", model, method=calib["method"], placement="sk-edge", mixed="fp32")
        model, _ = build_fp16_graph(fp32, keep_fp32=lambda n: None)
        run("fp16, every op", model, precision="fp16", fp32_ops=[])
        model, _ = build_fp16_graph(fp32)
        run("fp16, global pooling in fp32 (sk-edge)", model, precision="fp16", fp32_ops=["GlobalAveragePool"])

        anatomy = zero_spike_anatomy(fp32, plan, hists)
        normal = amax_for(plan, "entropy")
        for role in sorted({a["role"] for a in anatomy}):
            names = {a["tensor"] for a in anatomy if a["role"] == role}
            spiked = {n: (max(amax_entropy(hists[n], ignore_zero_bin=False), 1e-8) if n in names else a)
                      for n, a in normal.items()}
            model, _ = build_int8_graph(fp32, plan, spiked, "fp16")
            run(f"zero spike on {role} only ({len(names)} tensors)", model, method="entropy+zero", role=role,
                tensors=len(names), placement="sk-edge", mixed="fp16")

    write_json(
        args.out,
        {
            "benchmark": "precision_study",
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "model": "sknet26-digits",
            "eval_images": args.eval_images,
            "calibration_images": args.calib_images,
            "fp32_accuracy": fp32_accuracy,
            "libraries": library_versions(),
            "results": rows,
            "zero_spike_anatomy": anatomy,
        },
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
