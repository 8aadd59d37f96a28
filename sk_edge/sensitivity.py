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
from .images import ImageStream
from .quantize import build_int8_graph
from .quantize.precision import ensure_opset
from .quantize.stage import int8_opset
from .quantize.macs import DEFAULT_MAX_FLOAT_SHARE, macs_by_node, precision_mix
from .quantize.options import DEFAULT_MIXED
from .quantize.plan import QuantPlan, plan_quantization
from .evaluation import SENSITIVITY_IMAGES, JudgeImages
from .verify import kl_divergence, points
from .workdir import FP32_ONNX, GRAPH_NAMES, load_calibration, load_export, load_graph

SENSITIVITY_JSON, SENSITIVITY_MD = "sensitivity.json", "sensitivity.md"


@dataclass
class EvalSet:
    x: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray  # FP32 graph logits

    def reference_at_chance(self) -> bool:
        """Whether the labelled FP32 reference is under verify's chance bound (a model or labels that are wrong)."""
        from .verify import CHANCE_FACTOR

        classes = self.reference.shape[1]
        if self.labels is None or classes < 2:
            return False
        return float((self.reference.argmax(1) == self.labels).mean()) < CHANCE_FACTOR / classes

    def head(self, count: int | None) -> "EvalSet":
        """The first ``count`` images (all when None)."""
        if count is None:
            return self
        return EvalSet(self.x[:count], None if self.labels is None else self.labels[:count], self.reference[:count])

    def score(self, logits: np.ndarray) -> dict:
        ref, out = self.reference, logits
        d = {"kl_mean": float(np.mean(kl_divergence(ref, out))), "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean())}
        if self.labels is not None:
            d["top1_drop_points"] = points(float((ref.argmax(1) == self.labels).mean() - (out.argmax(1) == self.labels).mean()))
        return d


@dataclass(frozen=True)
class Budget:
    """What the layer search must reach: a labelled top-1 drop, a top-1 agreement with FP32, or both.

    A build with labels searches for both gates verify will apply, so that the layers it keeps in
    floating point are the ones its verdict needs; without labels, agreement alone.
    """

    max_top1_drop: float | None = None  # points
    min_agreement: float | None = None  # percent

    def __post_init__(self):
        if self.max_top1_drop is None and self.min_agreement is None:
            raise ValueError("a budget needs a top-1 drop, a top-1 agreement, or both")

    @property
    def needs_labels(self) -> bool:
        return self.max_top1_drop is not None

    def met(self, score: dict) -> bool:
        if self.max_top1_drop is not None and score["top1_drop_points"] > self.max_top1_drop:
            return False
        return self.min_agreement is None or points(score["top1_agreement"]) >= self.min_agreement

    def measured(self, score: dict) -> str:
        parts = []
        if self.max_top1_drop is not None:
            parts.append(f"top-1 drop {score['top1_drop_points']:.2f} points")
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement {score['top1_agreement']:.2%}")
        return ", ".join(parts)

    @property
    def flags(self) -> str:
        return " or ".join(
            f for f, v in (("--max-top1-drop", self.max_top1_drop), ("--min-agreement", self.min_agreement)) if v is not None
        )

    def __str__(self) -> str:
        parts = []
        if self.max_top1_drop is not None:
            parts.append(f"top-1 drop <= {self.max_top1_drop} points")
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement >= {self.min_agreement}%")
        return "the budget (" + ", ".join(parts) + ")"

    def to_dict(self) -> dict:
        return {"max_top1_drop": self.max_top1_drop, "min_agreement": self.min_agreement}

    @classmethod
    def of(cls, budget: "Budget | float") -> "Budget":
        """``budget``, or a bare number taken as a top-1 drop budget (the earlier signature of the functions below)."""
        return budget if isinstance(budget, Budget) else cls(max_top1_drop=budget)


def load_eval_set(workdir: Path, images: Path | JudgeImages, labels: Path | None = None, count: int | None = None) -> EvalSet:
    """The images that judge (``JudgeImages``, or a folder and an optional labels CSV), run through the FP32 graph."""
    judge = images if isinstance(images, JudgeImages) else JudgeImages(Path(images), labels)
    images = judge.root
    export = load_export(workdir)
    pre = export.preprocess
    paths = judge.paths()[:count] if count else judge.paths()
    stream = ImageStream(paths, pre, 64, None, root=images)
    xs, names = [], []
    for batch, batch_names in stream:
        xs.append(batch)
        names += batch_names
    if not names:
        raise SkEdgeError(f"no readable image in '{images}'")
    x = np.concatenate(xs)
    y = None
    table, source = judge.labels(export.num_classes)
    if table is not None:
        missing = [n for n in names if n not in table]
        if missing:
            raise SkEdgeError(f"{source} has no label for '{missing[0]}' ({len(missing)} images unlabelled)")
        y = np.array([table[n] for n in names])
    ref = judging_runner(workdir / FP32_ONNX)(x)
    return EvalSet(x, y, ref)


class Evaluator:
    """Builds INT8 graphs for sub-plans and scores them on one evaluation set."""

    def __init__(self, workdir: Path, evalset: EvalSet, mixed: str = DEFAULT_MIXED):
        self.fp32 = onnx.load(str(workdir / FP32_ONNX))
        self.plan = plan_quantization(self.fp32)
        self.macs = macs_by_node(self.fp32)  # shape inference once, for every share computed below
        self.calibration = load_calibration(workdir)
        self.amax = self.calibration.amax(self.calibration.tensors)
        self.evalset, self.mixed = evalset, mixed
        # Converted to the INT8 graph's opset once, not again for every graph scored.
        self.int8_base = ensure_opset(self.fp32, int8_opset(self.fp32, mixed))

    def on(self, evalset: EvalSet) -> "Evaluator":
        """The same graph, plan and ranges, scored on another evaluation set."""
        other = copy.copy(self)
        other.evalset = evalset
        return other

    def score(self, plan: QuantPlan) -> dict:
        model, _ = build_int8_graph(self.int8_base, plan, {n: self.amax[n] for n in plan.activations}, self.mixed)
        return self.evalset.score(judging_runner(model.SerializeToString())(self.evalset.x))


def measure_sensitivity(evaluator: Evaluator, progress: Callable[[int], None] = lambda n: None, alone: bool = True) -> dict:
    """Keep-in-float gain of every INT8 layer, ranked by gain; with ``alone``, also each layer's drift alone.

    The ranking needs only the gain: a build's layer search passes ``alone=False`` and measures half
    as many graphs; ``sk-edge sensitivity`` reports both.
    """
    plan = evaluator.plan
    layers = plan.layers()
    macs = evaluator.macs
    total_macs = sum(macs.values()) or 1.0
    full = evaluator.score(plan)
    progress(1)
    rows = []
    for layer in layers:
        without = evaluator.score(plan.without({layer}))
        row = {
            "layer": layer,
            "without": without,
            "gain_kl": full["kl_mean"] - without["kl_mean"],
            "mac_share": macs.get(layer, 0.0) / total_macs,
        }
        if alone:
            row["alone"] = evaluator.score(plan.without(set(layers) - {layer}))
        progress(1)
        rows.append(row)
    rows.sort(key=lambda r: -r["gain_kl"])
    return {"full_int8": full, "layers": rows}


def range_mismatch(evaluator: Evaluator, top: int = 3) -> list[dict]:
    """The quantized tensors whose ranges differ most between calibration and evaluation images.

    Calibration keeps each tensor's max |x| (calib.json); the evaluation images are run through
    the FP32 graph for theirs. A ratio far from 1 says the two sets of images are unlike.
    """
    from .quantize.calibration import tapped_model

    calib = evaluator.calibration
    names = [n for n in evaluator.plan.activations if n in calib.tensors]
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
        calib_max = calib.calibration_max(name)
        ratio = seen[name] / calib_max if calib_max > 0 else float("inf")
        rows.append({"tensor": name, "calibration_max": calib_max, "evaluation_max": seen[name], "ratio": ratio})
    return sorted(rows, key=lambda r: -abs(np.log(max(r["ratio"], 1e-12))))[:top]


def fit_budget(
    evaluator: Evaluator,
    ranking: list[dict],
    budget: Budget | float,
    log: Callable[[str], None] = lambda msg: None,
    max_float_share: float = DEFAULT_MAX_FLOAT_SHARE,
) -> dict:
    """Keep the highest-ranked layers in floating point until ``budget`` holds.

    ``budget`` is a labelled top-1 drop (a float is taken as one) or, without labels, a top-1
    agreement with the FP32 graph. Fails as soon as the layers kept in floating point hold more
    than ``max_float_share`` of the MACs: what is left would not be an INT8 model, and more
    floating point would only hide the likely cause (calibration images unlike the evaluation
    images), which the error names.
    """
    budget = Budget.of(budget)
    if budget.needs_labels and evaluator.evalset.labels is None:
        raise SkEdgeError("an accuracy budget needs labelled images (--labels, or class folders)")
    kept: list[str] = []
    current = evaluator.score(evaluator.plan)
    steps = [{"kept": [], **current}]
    for row in ranking:
        if budget.met(current):
            break
        kept.append(row["layer"])
        mix = precision_mix(evaluator.macs, evaluator.plan.without(set(kept)))
        if mix["float_mac_share"] > max_float_share:
            raise BudgetNeedsFloat(_float_share_message(evaluator, len(kept) - 1, current, mix, budget, max_float_share))
        current = evaluator.score(evaluator.plan.without(set(kept)))
        steps.append({"kept": list(kept), **current})
        log(f"  kept {row['layer']} in floating point: {budget.measured(current)}, KL {current['kl_mean']:.2e}")
    if not budget.met(current):
        relax = budget.flags
        raise SkEdgeError(
            f"even with every layer in floating point the {budget.measured(current)} misses {budget} "
            f"(the non-INT8 precision itself drifts); relax {relax} or use --mixed fp32"
        )
    return {"kept_float": kept, "result": current, "steps": steps}


class BudgetNeedsFloat(SkEdgeError):
    """Meeting the accuracy budget would keep more of the model in floating point than allowed."""


def _float_share_message(evaluator, layers: int, current: dict, mix: dict, budget: Budget, max_float_share: float) -> str:
    cause = ""
    worst = range_mismatch(evaluator)
    if worst:
        cause = (
            " Likely cause: the calibration images are unlike the evaluation images; their activation ranges "
            "differ most at "
            + ", ".join(f"'{r['tensor']}' (evaluation max {r['ratio']:.2g}x the calibration's)" for r in worst)
            + "."
        )
    relax = budget.flags
    return (
        f"INT8 misses {budget} ({budget.measured(current)} with {layers} layers "
        f"kept in floating point), and keeping one more would put {mix['float_mac_share']:.1%} of the MACs in floating "
        f"point, above --max-float-share {max_float_share:.0%}: that would not be an INT8 model.{cause} Calibrate on "
        f"images from the deployment domain (--images), or accept it with --max-float-share 100, a looser "
        f"{relax}, or --precision fp16"
    )


def markdown(doc: dict) -> str:
    full = doc["full_int8"]
    lines = [
        "# sk-edge sensitivity",
        "",
        f"{doc['images']} held-out images; full INT8: top-1 agreement {full['top1_agreement']:.2%}, mean KL {full['kl_mean']:.2e}"
        + (f", top-1 drop {full['top1_drop_points']:.2f} points" if "top1_drop_points" in full else "")
        + ".",
        "",
        "Ranked by the KL divergence removed when the layer alone stays in floating point (gain).",
        "",
        "| rank | layer | gain (KL) | alone: KL | alone: agreement | share of MACs |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(doc["layers"], 1):
        alone = (
            f"{r['alone']['kl_mean']:.2e} | {r['alone']['top1_agreement']:.2%}" if "alone" in r else "not measured | not measured"
        )  # a build's search ranks by gain only
        lines.append(f"| {i} | `{r['layer']}` | {r['gain_kl']:.2e} | {alone} | {r['mac_share']:.1%} |")
    if doc.get("budget"):
        b = doc["budget"]
        budget = Budget(b.get("max_top1_drop"), b.get("min_agreement"))
        lines += [
            "",
            f"Budget: {budget}. Kept in floating point: "
            + (", ".join(f"`{k}`" for k in b["kept_float"]) or "nothing")
            + f" ({budget.measured(b['result'])}).",
        ]
    return "\n".join(lines) + "\n"


def write_report(workdir: Path, doc: dict) -> None:
    artifacts.write_json(workdir / SENSITIVITY_JSON, doc)
    with artifacts.atomic_output(workdir / SENSITIVITY_MD) as tmp:
        tmp.write_text(markdown(doc))


def analyze_sensitivity(
    workdir: str | Path,
    images: Path | JudgeImages,
    labels: Path | None,
    count: int | None = SENSITIVITY_IMAGES,
    mixed: str = DEFAULT_MIXED,
    max_top1_drop: float | None = None,
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    max_float_share: float = DEFAULT_MAX_FLOAT_SHARE,
    min_agreement: float | None = None,
    evalset: EvalSet | None = None,
    alone: bool = True,
) -> dict:
    """Rank every INT8 layer (sensitivity.json/.md); with a budget, also choose the layers to keep float.

    The budget is ``max_top1_drop`` (labelled images) or, when that is None, ``min_agreement``.
    ``evalset``: ``images`` already run through the FP32 graph (all of them), when the caller has it.
    ``alone``: also measure each layer's drift when it alone is INT8 (for the report; the ranking
    does not use it).
    """
    workdir = Path(workdir)
    judge = images if isinstance(images, JudgeImages) else JudgeImages(Path(images), labels)
    budget = Budget(max_top1_drop, min_agreement) if max_top1_drop is not None or min_agreement is not None else None
    # The budget is judged on every image of the set, as verify will judge it (a few hundred
    # images leave a 0.5-point budget at the mercy of two or three); the ranking needs fewer.
    full = evalset if evalset is not None else load_eval_set(workdir, judge, None, None if budget is not None else count)
    judging = Evaluator(workdir, full, mixed)
    evaluator = judging.on(full.head(count))
    n_layers = len(evaluator.plan.layers())
    log(
        f"measuring {n_layers} INT8 layers, {'alone and left out' if alone else 'left out one at a time'}, on {len(evaluator.evalset.x)} images ..."
    )
    tick = progress(n_layers + 1) if progress else (lambda n: None)
    doc = {
        "kind": "sk-edge/sensitivity",
        "images": int(len(evaluator.evalset.x)),
        "images_dir": str(judge.root),
        "judged_on": judge.to_dict(),
        "mixed": mixed,
        "calibration_key": evaluator.calibration.key,
        **measure_sensitivity(evaluator, tick, alone),
    }
    if budget is not None:
        log(f"fitting {budget} on all {len(judging.evalset.x)} images ...")
        doc["budget"] = {
            **budget.to_dict(),
            "images": int(len(judging.evalset.x)),
            **fit_budget(judging, doc["layers"], budget, log, max_float_share),
        }
        share = {r["layer"]: r["mac_share"] for r in doc["layers"]}
        doc["budget"]["kept_mac_share"] = sum(share[k] for k in doc["budget"]["kept_float"])
        doc["budget"]["precision_mix"] = precision_mix(judging.macs, judging.plan.without(set(doc["budget"]["kept_float"])))
    write_report(workdir, doc)
    return doc


def needs_budget(
    workdir: Path,
    images: Path | JudgeImages,
    labels: Path | None,
    budget: Budget | float,
    count: int | None = None,
    evalset: EvalSet | None = None,
) -> tuple[bool, dict]:
    """Whether the current model.int8.onnx misses ``budget`` on these images (one quick run).

    ``evalset``: the images already run through the FP32 graph, when the caller has them."""
    budget = Budget.of(budget)
    evalset = evalset if evalset is not None else load_eval_set(workdir, images, labels, count)
    load_graph(workdir, "int8")
    score = evalset.score(judging_runner(workdir / GRAPH_NAMES["int8"])(evalset.x))
    return not budget.met(score), score


def previous_choice(workdir: Path, budget: Budget | float, mixed: str) -> list[str]:
    """The layers an earlier run kept in floating point for the same calibration, budget and mix."""
    budget = Budget.of(budget)
    doc = artifacts.read_json(Path(workdir) / SENSITIVITY_JSON) or {}
    earlier = doc.get("budget") or {}
    same_budget = all(earlier.get(k) == v for k, v in budget.to_dict().items())
    if doc.get("calibration_key") == load_calibration(workdir).key and doc.get("mixed") == mixed and earlier and same_budget:
        return list(earlier.get("kept_float", []))
    return []
