#!/usr/bin/env python3
"""ONNX Runtime CPU latency: plain ``torch.onnx.export`` vs sk-edge's rewritten graph.

For each model, the naive graph is what a user gets from ``torch.onnx.export(model, x)``
(TorchScript exporter, opset 17, eval mode); ours is ``sk_edge.export.to_onnx`` with each
select form. Every graph runs in its own ONNX Runtime CPU session (all graph
optimisations on), batch 1; runs are interleaved round-robin so that drift in machine
load hits every graph alike. Reported: median latency over all timed runs and the ratio
to the naive graph (target for the default form: <= 0.85).

    python benchmarks/export_speed.py                      # SKNet-50, skresnext50, SKNet-50 M=3
    python benchmarks/export_speed.py --runs 60 --threads 2 --out results.json
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sk_edge.artifacts import write_json
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import ExportOptions, to_onnx
from sk_edge.models import build_model
from sk_edge.models.sknet import SelectiveKernelConv
from sk_edge.versions import library_versions

# Whole networks at --input-size: (model name, model args, select forms to time).
CASES = {
    "sknet50": ("sknet50", {}, ["sigmoid", "exp", "softmax4d"]),
    "skresnext50_32x4d": ("timm:skresnext50_32x4d", {}, ["sigmoid", "exp", "softmax4d"]),
    "sknet50-M3": ("sknet50", {"branches": 3}, ["exp", "softmax4d"]),
}
# Single SK units, where the select step is not diluted by the rest of the network:
# (channels, spatial size, branches, select forms). SKNet-50's stage-1 and stage-3 units.
UNIT_CASES = {
    "unit-c128-56px-M2": (128, 56, 2, ["sigmoid", "exp", "softmax4d"]),
    "unit-c512-14px-M2": (512, 14, 2, ["sigmoid", "exp", "softmax4d"]),
    "unit-c128-56px-M3": (128, 56, 3, ["exp", "softmax4d"]),
    "unit-c512-14px-M3": (512, 14, 3, ["exp", "softmax4d"]),
}


def naive_onnx(module: torch.nn.Module, shape: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, *shape),), buf, dynamo=False, opset_version=17)
    return buf.getvalue()


def case_graphs(label: str, input_size: int) -> tuple[dict[str, bytes], tuple[int, int, int], str, dict]:
    """The naive graph and one graph per select form for a named case."""
    if label in CASES:
        name, model_args, forms = CASES[label]
        module = build_model(name, input_size=input_size, args=model_args).module
        shape = (3, input_size, input_size)
    else:
        channels, size, branches, forms = UNIT_CASES[label]
        module = torch.nn.Sequential(SelectiveKernelConv(channels, channels, branches=branches)).eval()
        name, model_args, shape = "SelectiveKernelConv", {"channels": channels, "branches": branches}, (channels, size, size)
    graphs = {"naive": naive_onnx(module, shape)}
    for form in forms:
        model, *_ = to_onnx(module, shape, ExportOptions(select_form=form))
        graphs[form] = model.SerializeToString()
    return graphs, shape, name, model_args


def time_round_robin(runners: dict[str, OnnxRuntimeRunner], x: np.ndarray, warmup: int, runs: int, rounds: int):
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for key, run in runners.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                run(x)
                times[key].append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=[*CASES, *UNIT_CASES], choices=[*CASES, *UNIT_CASES])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=100, help="timed runs per graph (>= 30)")
    parser.add_argument("--rounds", type=int, default=10, help="round-robin rounds the runs are split into")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="ONNX Runtime intra-op threads, networks")
    parser.add_argument(
        "--unit-threads",
        type=int,
        default=1,
        help="intra-op threads for single SK units: at a few ms per run, thread hand-off jitter "
        "swamps the differences between forms",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_speed.json")
    args = parser.parse_args()
    if args.runs < 30:
        parser.error("--runs must be at least 30")

    torch.manual_seed(0)
    results = []
    for label in args.cases:
        graphs, shape, name, model_args = case_graphs(label, args.input_size)
        x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        threads = args.threads if label in CASES else args.unit_threads
        runners = {k: OnnxRuntimeRunner(g, threads=threads) for k, g in graphs.items()}
        print(f"{label}: timing {', '.join(graphs)} ({args.runs} runs each after {args.warmup} warm-up) ...", file=sys.stderr)
        times = time_round_robin(runners, x, args.warmup, args.runs, args.rounds)
        naive = statistics.median(times["naive"])
        for key, ts in times.items():
            med = statistics.median(ts)
            q = statistics.quantiles(ts, n=10)
            results.append(
                {
                    "case": label,
                    "model": name,
                    "model_args": model_args,
                    "graph": key,
                    "threads": threads,
                    "runs": len(ts),
                    "median_ms": round(med, 3),
                    "p10_ms": round(q[0], 3),
                    "p90_ms": round(q[-1], 3),
                    "ratio_to_naive": round(med / naive, 3),
                    "nodes": len(__import__("onnx").load_from_string(graphs[key]).graph.node),
                }
            )

    print(f"\n{'case':<20} {'graph':<10} {'threads':>7} {'nodes':>6} {'median ms':>10} {'p10':>8} {'p90':>8} {'vs naive':>9}")
    for r in results:
        print(
            f"{r['case']:<20} {r['graph']:<10} {r['threads']:>7} {r['nodes']:>6} {r['median_ms']:>10.2f} "
            f"{r['p10_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['ratio_to_naive']:>8.2f}x"
        )
    write_json(
        args.out,
        {
            "benchmark": "export_speed",
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "libraries": library_versions(),
            "results": results,
        },
    )
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
