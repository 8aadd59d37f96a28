"""Accuracy-aware INT8: which layers hurt when quantized, and the fewest to keep in FP16.

For every layer the Q/DQ plan runs in INT8 (Conv, Gemm, fused residual Add), two numbers,
measured on ONNX Runtime against the FP32 graph over held-out images:

- *alone*: the drift of a graph in which only that layer is INT8 (the rest as ``--mixed``);
- *gain*: how much the drift of the full INT8 graph falls when that layer alone is kept
  in floating point.

Layers are ranked by gain (mean KL divergence, the finest of the drift measures; top-1
agreement and accuracy are reported beside it). Given a budget on the labelled top-1
accuracy drop, :func:`fit_budget` keeps the highest-ranked layers in floating point one at
a time, re-measuring after each, until the budget holds, and fails with the numbers when
even an all-float graph cannot meet it. Latency cost per kept layer is reported as its
share of the model's multiply-accumulates (a layer kept in FP16 loses INT8's ~2x on
TensorRT), as no TensorRT timing is available here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from . import artifacts
from .backends.onnxruntime import judging_runner
from .errors import SkEdgeError
from .images import ImageStream, find_images
from .preprocess import Preprocess
from .quantize import build_int8_graph
from .quantize.macs import DEFAULT_MAX_FLOAT_SHARE, macs_by_node, precision_mix
from .quantize.plan import QuantPlan, plan_quantization
from .verify import kl_divergence, read_labels
from .workdir import FP32_ONNX, GRAPH_NAMES, load_calibration, load_export, load_graph

SENSITIVITY_JSON, SENSITIVITY_MD = "sensitivity.json", "sensitivity.md"


@dataclass
class EvalSet:
    x: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray  # FP32 graph logits

    def head(self, count: int | None) -> "EvalSet":
        """The first ``count`` images (all when None)."""
        if count is None:
            return self
        return EvalSet(self.x[:count], None if self.labels is None else self.labels[:count], self.reference[:count])

    def score(self, logits: np.ndarray) -> dict:
        ref, out = self.reference, logits
        d = {"kl_mean": float(np.mean(kl_divergence(ref, out))),
             "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean())}
        if self.labels is not None:
            d["top1_drop_points"] = float(((ref.argmax(1) == self.labels).mean() - (out.argmax(1) == self.labels).mean()) * 100)
        return d


def load_eval_set(workdir: Path, images: Path, labels: Path | None, count: int | None) -> EvalSet:
    export = load_export(workdir)
    pre = Preprocess.from_dict(export["preprocess"])
    paths = find_images(images)[:count] if count else find_images(images)
    stream = ImageStream(paths, pre, 64, None, root=images)
    xs, names = [], []
    for batch, batch_names in stream:
        xs.append(batch)
        names += batch_names
    if not names:
        raise SkEdgeError(f"no readable image in '{images}'")
    x = np.concatenate(xs)
    y = None
    if labels is not None:
        table = read_labels(labels)
        missing = [n for n in names if n not in table]
        if missing:
            raise SkEdgeError(f"labels file '{labels}' has no label for '{missing[0]}' ({len(missing)} images unlabelled)")
        y = np.array([table[n] for n in names])
    ref = judging_runner(workdir / FP32_ONNX)(x)
    return EvalSet(x, y, ref)


class Evaluator:
    """Builds INT8 graphs for sub-plans and scores them on one evaluation set."""

    def __init__(self, workdir: Path, evalset: EvalSet, mixed: str = "fp16"):
        self.fp32 = onnx.load(str(workdir / FP32_ONNX))
        self.plan = plan_quantization(self.fp32)
        self.macs = macs_by_node(self.fp32)  # shape inference once, for every share computed below
        self.calibration = load_calibration(workdir)
        self.amax = {n: t["amax"] for n, t in self.calibration["tensors"].items()}
        self.evalset, self.mixed = evalset, mixed

    def on(self, evalset: EvalSet) -> "Evaluator":
        """The same graph, plan and ranges, scored on another evaluation set."""
        other = copy.copy(self)
        other.evalset = evalset
        return other

    def score(self, plan: QuantPlan) -> dict:
        model, _ = build_int8_graph(self.fp32, plan, {n: self.amax[n] for n in plan.activations}, self.mixed)
        return self.evalset.score(judging_runner(model.SerializeToString())(self.evalset.x))


def measure_sensitivity(evaluator: Evaluator, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Alone-drift and keep-in-float gain of every INT8 layer, ranked by gain."""
    plan = evaluator.plan
    layers = plan.layers()
    macs = evaluator.macs
    total_macs = sum(macs.values()) or 1.0
    full = evaluator.score(plan)
    progress(1)
    rows = []
    for layer in layers:
        alone = evaluator.score(plan.without(set(layers) - {layer}))
        without = evaluator.score(plan.without({layer}))
        progress(1)
        rows.append({
            "layer": layer,
            "alone": alone,
            "without": without,
            "gain_kl": full["kl_mean"] - without["kl_mean"],
            "mac_share": macs.get(layer, 0.0) / total_macs,
        })
    rows.sort(key=lambda r: -r["gain_kl"])
    return {"full_int8": full, "layers": rows}


def range_mismatch(evaluator: Evaluator, top: int = 3) -> list[dict]:
    """The quantized tensors whose ranges differ most between calibration and evaluation images.

    Calibration keeps each tensor's max |x| (calib.json); the evaluation images are run through
    the FP32 graph for theirs. A ratio far from 1 says the two sets of images are unlike.
    """
    from .quantize.calibration import tapped_model

    calib = evaluator.calibration
    names = [n for n in evaluator.plan.activations if n in calib["tensors"]]
    graph_inputs = {i.name for i in evaluator.fp32.graph.input}
    tapped = [n for n in names if n not in graph_inputs]
    session = judging_runner(tapped_model(evaluator.fp32, tapped)).session
    seen = dict.fromkeys(names, 0.0)
    for i in range(0, len(evaluator.evalset.x), 32):
        x = evaluator.evalset.x[i : i + 32]
        outs = dict(zip(tapped, session.run(tapped, {session.get_inputs()[0].name: x})))
        for name in names:
            seen[name] = max(seen[name], float(np.abs(x if name in graph_inputs else outs[name]).max()))
    rows = []
    for name in names:
        calib_max = calib["tensors"][name]["amax_by_method"]["max"]
        ratio = seen[name] / calib_max if calib_max > 0 else float("inf")
        rows.append({"tensor": name, "calibration_max": calib_max, "evaluation_max": seen[name], "ratio": ratio})
    return sorted(rows, key=lambda r: -abs(np.log(max(r["ratio"], 1e-12))))[:top]


def fit_budget(evaluator: Evaluator, ranking: list[dict], max_top1_drop: float,
               log: Callable[[str], None] = lambda msg: None, max_float_share: float = DEFAULT_MAX_FLOAT_SHARE) -> dict:
    """Keep the highest-ranked layers in floating point until the labelled drop is within budget.

    Fails as soon as the layers kept in floating point hold more than ``max_float_share`` of
    the MACs: what is left would not be an INT8 model, and more floating point would only hide
    the likely cause (calibration images unlike the evaluation images), which the error names.
    """
    if evaluator.evalset.labels is None:
        raise SkEdgeError("an accuracy budget needs labelled images (--labels)")
    kept: list[str] = []
    current = evaluator.score(evaluator.plan)
    steps = [{"kept": [], **current}]
    for row in ranking:
        if current["top1_drop_points"] <= max_top1_drop:
            break
        kept.append(row["layer"])
        mix = precision_mix(evaluator.macs, evaluator.plan.without(set(kept)))
        if mix["float_mac_share"] > max_float_share:
            raise BudgetNeedsFloat(_float_share_message(evaluator, len(kept) - 1, current["top1_drop_points"], mix,
                                                        max_top1_drop, max_float_share))
        current = evaluator.score(evaluator.plan.without(set(kept)))
        steps.append({"kept": list(kept), **current})
        log(f"  kept {row['layer']} in floating point: drop {current['top1_drop_points']:.2f} points, KL {current['kl_mean']:.2e}")
    if current["top1_drop_points"] > max_top1_drop:
        raise SkEdgeError(
            f"even with every layer in floating point the top-1 drop is {current['top1_drop_points']:.2f} points "
            f"> the {max_top1_drop} budget (the non-INT8 precision itself drifts); relax --max-top1-drop or use --mixed fp32"
        )
    return {"kept_float": kept, "result": current, "steps": steps}


class BudgetNeedsFloat(SkEdgeError):
    """Meeting the accuracy budget would keep more of the model in floating point than allowed."""


def _float_share_message(evaluator, layers: int, drop: float, mix: dict, max_top1_drop: float,
                         max_float_share: float) -> str:
    cause = ""
    worst = range_mismatch(evaluator)
    if worst:
        cause = (" Likely cause: the calibration images are unlike the evaluation images; their activation ranges "
                 "differ most at " + ", ".join(f"'{r['tensor']}' (evaluation max {r['ratio']:.2g}x the calibration's)"
                                              for r in worst) + ".")
    return (f"INT8 misses the {max_top1_drop}-point accuracy budget (top-1 drop {drop:.2f} points with {layers} layers "
            f"kept in floating point), and keeping one more would put {mix['float_mac_share']:.1%} of the MACs in floating "
            f"point, above --max-float-share {max_float_share:.0%}: that would not be an INT8 model.{cause} Calibrate on "
            "images from the deployment domain (--images), or accept it with --max-float-share 100, a looser "
            "--max-top1-drop, or --precision fp16")


def markdown(doc: dict) -> str:
    full = doc["full_int8"]
    lines = ["# sk-edge sensitivity", "",
             f"{doc['images']} held-out images; full INT8: top-1 agreement {full['top1_agreement']:.2%}, mean KL {full['kl_mean']:.2e}"
             + (f", top-1 drop {full['top1_drop_points']:.2f} points" if "top1_drop_points" in full else "") + ".", "",
             "Ranked by the KL divergence removed when the layer alone stays in floating point (gain).", "",
             "| rank | layer | gain (KL) | alone: KL | alone: agreement | share of MACs |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(doc["layers"], 1):
        lines.append(f"| {i} | `{r['layer']}` | {r['gain_kl']:.2e} | {r['alone']['kl_mean']:.2e} | "
                     f"{r['alone']['top1_agreement']:.2%} | {r['mac_share']:.1%} |")
    if doc.get("budget"):
        b = doc["budget"]
        lines += ["", f"Budget: top-1 drop <= {b['max_top1_drop']} points. Kept in floating point: "
                  + (", ".join(f"`{k}`" for k in b["kept_float"]) or "nothing") + f" (drop {b['result']['top1_drop_points']:.2f} points)."]
    return "\n".join(lines) + "\n"


def write_report(workdir: Path, doc: dict) -> None:
    artifacts.write_json(workdir / SENSITIVITY_JSON, doc)
    with artifacts.atomic_output(workdir / SENSITIVITY_MD) as tmp:
        tmp.write_text(markdown(doc))


def analyze_sensitivity(
    workdir: str | Path,
    images: Path,
    labels: Path | None,
    count: int | None = 500,
    mixed: str = "fp16",
    max_top1_drop: float | None = None,
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    max_float_share: float = DEFAULT_MAX_FLOAT_SHARE,
) -> dict:
    """Rank every INT8 layer (sensitivity.json/.md); with a budget, also choose the layers to keep float."""
    workdir = Path(workdir)
    # The budget is judged on every image of the set, as verify will judge it (a few hundred
    # images leave a 0.5-point budget at the mercy of two or three); the ranking needs fewer.
    full = load_eval_set(workdir, images, labels, None if max_top1_drop is not None else count)
    judge = Evaluator(workdir, full, mixed)
    evaluator = judge.on(full.head(count))
    n_layers = len(evaluator.plan.layers())
    log(f"measuring {n_layers} INT8 layers, alone and left out, on {len(evaluator.evalset.x)} images ...")
    tick = progress(n_layers + 1) if progress else (lambda n: None)
    doc = {"kind": "sk-edge/sensitivity", "images": int(len(evaluator.evalset.x)), "images_dir": str(images), "mixed": mixed,
           "calibration_key": evaluator.calibration["key"], **measure_sensitivity(evaluator, tick)}
    if max_top1_drop is not None:
        log(f"fitting the {max_top1_drop}-point budget on all {len(judge.evalset.x)} images ...")
        doc["budget"] = {"max_top1_drop": max_top1_drop, "images": int(len(judge.evalset.x)),
                         **fit_budget(judge, doc["layers"], max_top1_drop, log, max_float_share)}
        share = {r["layer"]: r["mac_share"] for r in doc["layers"]}
        doc["budget"]["kept_mac_share"] = sum(share[k] for k in doc["budget"]["kept_float"])
        doc["budget"]["precision_mix"] = precision_mix(judge.macs, judge.plan.without(set(doc["budget"]["kept_float"])))
    write_report(workdir, doc)
    return doc


def needs_budget(workdir: Path, images: Path, labels: Path, max_top1_drop: float, count: int | None = None) -> tuple[bool, dict]:
    """Whether the current model.int8.onnx breaks the budget on these images (one quick run)."""
    evalset = load_eval_set(workdir, images, labels, count)
    load_graph(workdir, "int8")
    score = evalset.score(judging_runner(workdir / GRAPH_NAMES["int8"])(evalset.x))
    return score["top1_drop_points"] > max_top1_drop, score


def previous_choice(workdir: Path, max_top1_drop: float, mixed: str) -> list[str]:
    """The layers an earlier run kept in floating point for the same calibration, budget and mix."""
    doc = artifacts.read_json(Path(workdir) / SENSITIVITY_JSON) or {}
    calib = artifacts.read_json(Path(workdir) / "calib.json") or {}
    budget = doc.get("budget") or {}
    if doc.get("calibration_key") == calib.get("key") and doc.get("mixed") == mixed and budget.get("max_top1_drop") == max_top1_drop:
        return list(budget.get("kept_float", []))
    return []
