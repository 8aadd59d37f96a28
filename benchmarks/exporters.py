#!/usr/bin/env python3
"""torch's two ONNX exporters on every SKNet family: do both give graphs sk-edge can ship?

For each model, ``sk_edge.export.to_onnx`` runs once with ``exporter="torchscript"`` and once
with ``exporter="torch-export"`` (same opset, same SK select rewrite, same clean-up passes).
Reported per exporter: export time, sk-edge's graph invariants, parity with the PyTorch model
on ONNX Runtime (max |logit diff| on random inputs), node count; and whether the two cleaned
graphs are the same op sequence and agree with each other on ONNX Runtime.

    python benchmarks/exporters.py                        # every family, 224 px, opset 18
    python benchmarks/exporters.py --models sknet26 --input-size 64 --out /tmp/exporters.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sk_edge.artifacts import write_json
from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
from sk_edge.export import ExportOptions, to_onnx
from sk_edge.export.hygiene import graph_problems
from sk_edge.export.options import EXPORTERS
from sk_edge.models import build_model
from sk_edge.versions import library_versions

# (label, model name, model args): ours at three depths and with three branches, timm's three kinds.
FAMILIES = {
    "sknet26": ("sknet26", {}),
    "sknet50": ("sknet50", {}),
    "sknet101": ("sknet101", {}),
    "sknet50-M3": ("sknet50", {"branches": 3}),
    "skresnet18": ("timm:skresnet18", {}),
    "skresnet34": ("timm:skresnet34", {}),
    "skresnext50_32x4d": ("timm:skresnext50_32x4d", {}),
}


def export_both(module: torch.nn.Module, shape: tuple[int, int, int], opset: int) -> dict[str, dict]:
    """Each exporter's cleaned graph, its time and what sk-edge's checks say of it."""
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    out = {}
    for exporter in EXPORTERS:
        options = ExportOptions(opset=opset, dynamic_batch=8, exporter=exporter)
        start = time.perf_counter()
        model, _, passes, _ = to_onnx(module, shape, options)
        seconds = time.perf_counter() - start
        with OnnxRuntimeRunner(model.SerializeToString(), threads=2) as runner:
            logits = runner(x)
        out[exporter] = {
            "seconds": round(seconds, 2),
            "problems": graph_problems(model),
            "max_abs_diff_vs_torch": float(np.abs(logits - reference).max()),
            "nodes": len(model.graph.node),
            "ops": [n.op_type for n in model.graph.node],
            "passes": passes.as_dict(),
            "logits": logits,
        }
    return out


def compare(graphs: dict[str, dict]) -> dict:
    first, second = (graphs[e] for e in EXPORTERS)
    return {
        "same_op_sequence": first["ops"] == second["ops"],
        "max_abs_diff_between_exporters": float(np.abs(first["logits"] - second["logits"]).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--opset", type=int, default=18, help="18 or newer: the torch.export path writes no older one")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "exporters.json")
    args = parser.parse_args()
    shape = (3, args.input_size, args.input_size)
    rows = {}
    print(f"{'model':<20}{'exporter':<14}{'export s':>9}{'nodes':>7}{'problems':>10}{'max|diff| torch':>17}")
    for label in args.models:
        name, model_args = FAMILIES[label]
        module = build_model(name, num_classes=10, input_size=args.input_size, args=model_args).module
        graphs = export_both(module, shape, args.opset)
        for exporter, g in graphs.items():
            print(f"{label:<20}{exporter:<14}{g['seconds']:>9.1f}{g['nodes']:>7}{len(g['problems']):>10}"
                  f"{g['max_abs_diff_vs_torch']:>17.2e}")
        both = compare(graphs)
        print(f"{'':<20}same op sequence: {both['same_op_sequence']}, "
              f"max |diff| between exporters {both['max_abs_diff_between_exporters']:.2e}")
        for g in graphs.values():
            del g["logits"], g["ops"]
        rows[label] = {"model": name, "args": model_args, "exporters": graphs, **both}
    ok = all(r["same_op_sequence"] and not any(g["problems"] for g in r["exporters"].values()) for r in rows.values())
    write_json(args.out, {
        "benchmark": "exporters", "input_size": args.input_size, "opset": args.opset, "dynamic_batch": 8,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0]},
        "versions": library_versions(), "models": rows, "all_equal_and_clean": ok,
    })
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
