#!/usr/bin/env python3
"""Why ModelOpt's INT8 drifts more than sk-edge's on an SKNet: ranges or placement?

ModelOpt ONNX PTQ (int8, entropy and max) quantizes the reference model on the same 512
calibration images as sk-edge. Each result is then taken apart on the 1000 held-out
SK-Digits images (ONNX Runtime CPU, against the FP32 graph):

- ModelOpt's own graph (its ranges, its Q/DQ placement);
- ModelOpt's ranges in sk-edge's placement (attention path in float);
- ModelOpt's ranges with the attention path quantized too (a generic placement);
- sk-edge's own ranges in sk-edge's placement, for reference.

ModelOpt pins its own onnx/onnxruntime/torch versions, so it runs in its own virtual
environment, passed as --modelopt-python (it needs sk-edge importable: pip install
--no-deps -e . there). It is given a copy of the FP32 graph: ModelOpt 0.47 rewrote its
input file in place when handed the workdir's model.fp32.onnx.

    python3.11 -m venv /tmp/venv-mo && /tmp/venv-mo/bin/pip install torch==2.13.0 'nvidia-modelopt[onnx]' pillow click
    /tmp/venv-mo/bin/pip install --no-deps -e .
    python benchmarks/modelopt_placement.py --modelopt-python /tmp/venv-mo/bin/python
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from precision_study import CALIB, eval_set, score  # noqa: E402

from sk_edge.artifacts import write_json  # noqa: E402
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from sk_edge.export import export_model  # noqa: E402
from sk_edge.images import ImageStream, find_images, sample_paths  # noqa: E402
from sk_edge.models import build_model  # noqa: E402
from sk_edge.quantize import CalibrationOptions, build_int8_graph, calibrate  # noqa: E402
from sk_edge.quantize.plan import plan_quantization  # noqa: E402
from sk_edge.versions import library_versions  # noqa: E402
from sk_edge.workdir import load_export  # noqa: E402

MODELOPT_RUN = """
import sys, time, numpy as np
from modelopt.onnx.quantization import quantize
t0 = time.perf_counter()
quantize(onnx_path=sys.argv[1], quantize_mode="int8", calibration_data=np.load(sys.argv[2]),
         calibration_method=sys.argv[3], output_path=sys.argv[4], calibration_eps=["cpu"])
print(time.perf_counter() - t0)
"""


def activation_ranges(model: onnx.ModelProto) -> dict[str, float]:
    """tensor -> amax of every per-tensor QuantizeLinear in ``model``."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]]) * 127
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].ndim == 0
    }


def ops_reading_activation_dq(model: onnx.ModelProto) -> dict[str, int]:
    """op type -> how many inputs of that type read a quantized activation."""
    q_out = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in q_out}
    counts: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            if i in dq_out:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modelopt-python", required=True, help="interpreter of a venv with nvidia-modelopt[onnx]")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "modelopt_placement.json")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp) / "wd"
        export_model(build_model("sknet26-digits"), wd)
        calib = calibrate(wd, CALIB, CalibrationOptions(num_images=args.calib_images))
        fp32 = onnx.load(str(wd / "model.fp32.onnx"))
        pre = load_export(wd).preprocess
        data = np.concatenate([b for b, _ in ImageStream(sample_paths(find_images(CALIB)), pre, 64, args.calib_images, root=CALIB)])
        np.save(Path(tmp) / "calib.npy", data)
        x, labels = eval_set(pre, args.eval_images)
        ref = OnnxRuntimeRunner(fp32.SerializeToString(), dynamic_batch=True)(x).astype(np.float64)
        ours = {n: t["amax_by_method"] for n, t in calib["tensors"].items()}
        plans = {
            "sk-edge placement": plan_quantization(fp32),
            "attention quantized": plan_quantization(fp32, quantize_attention=True),
        }

        def run(variant: str, model: onnx.ModelProto, **facts) -> None:
            result = score(model, x, labels, ref)
            rows.append({"variant": variant, **facts, **result})
            print(f"{variant:<58} agreement {result['top1_agreement']:.2%}  mean KL {result['mean_kl']:.5f}", file=sys.stderr)

        for method in ("entropy", "max"):
            src = Path(tmp) / f"input_{method}.onnx"
            shutil.copy(wd / "model.fp32.onnx", src)
            out = Path(tmp) / f"modelopt_{method}.onnx"
            proc = subprocess.run(
                [args.modelopt_python, "-c", MODELOPT_RUN, str(src), str(Path(tmp) / "calib.npy"), method, str(out)],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            mo_model = onnx.load(str(out))
            mo_ranges = activation_ranges(mo_model)
            consumers = ops_reading_activation_dq(mo_model)
            run(f"modelopt {method}: its ranges, its placement", mo_model, tool="modelopt", method=method,
                placement="modelopt", calibration_seconds=float(proc.stdout.split()[-1]),
                qdq_nodes=sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in mo_model.graph.node),
                ops_reading_dq=consumers)
            for plan_name, plan in plans.items():
                amax = {t: mo_ranges.get(t, ours.get(t, {}).get(method, 1.0)) for t in plan.activations}
                model, _ = build_int8_graph(fp32, plan, amax, "fp16")
                run(f"modelopt {method}: its ranges, {plan_name}", model, tool="modelopt", method=method, placement=plan_name)
            model, _ = build_int8_graph(fp32, plans["sk-edge placement"], {t: ours[t][method] for t in plans["sk-edge placement"].activations}, "fp16")
            run(f"sk-edge {method}: its ranges, sk-edge placement", model, tool="sk-edge", method=method, placement="sk-edge placement")
        ratios = [mo_ranges_e / ours[t]["entropy"] for t, mo_ranges_e in activation_ranges(onnx.load(str(Path(tmp) / "modelopt_entropy.onnx"))).items() if t in ours]

    write_json(args.out, {
        "benchmark": "modelopt_placement",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": "sknet26-digits",
        "eval_images": args.eval_images,
        "calibration_images": args.calib_images,
        "modelopt_entropy_amax_over_skedge_entropy_amax": {"median": float(np.median(ratios)), "min": float(np.min(ratios)), "max": float(np.max(ratios))},
        "libraries": library_versions(),
        "results": rows,
    })
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
