"""``sk-edge verify``: how far a build drifts from the FP32 PyTorch reference, on real images.

The reference is the PyTorch model the work directory was exported from, rebuilt from
``export.json`` and checked against the state-dict hash recorded there. The candidate is
the TensorRT engine when TensorRT is present, otherwise the same precision's ONNX graph on
ONNX Runtime. Both see the same preprocessed images; the result is ``verify.json`` and
``verify.md``, and a failed threshold is an exit code that can gate a CI job.

Without ``--images``, the reference model is judged on its held-out SK-Digits evaluation
split (1000 images, rendered once into ``WORKDIR/eval_images``), never on calibration images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__, artifacts
from .backends.runner import Runner
from .errors import SkEdgeError, UsageError
from .evaluation import MIN_JUDGE_IMAGES, JudgeImages, too_few_images
from .fields import option
from .images import ImageStream, content_id, images_digest
from .preprocess import Preprocess
from .sidecars import EngineInfo, ExportInfo
from .versions import torch_installed
from .workdir import EVAL_DIR, FP32_ONNX, GRAPH_NAMES, REFERENCE_NPZ, built_engines, engine_target, first_built, load_export

# "engine": the TensorRT engine (GPU or DLA); "rtx-engine": the TensorRT-RTX engine; else a graph on ONNX Runtime.
CANDIDATES = ("engine", "rtx-engine", "int8", "fp16", "fp32")
ENGINE_CANDIDATES = {"engine": "tensorrt", "rtx-engine": "rtx"}
VERIFY_JSON, VERIFY_MD = "verify.json", "verify.md"
EVAL_COUNT = 1000  # the reference model's held-out images, rendered into WORKDIR/eval_images (workdir.EVAL_DIR)
SELECTION_IMAGES = 256  # images for the selection drift (mean |SK gate difference|)
# The runtime cross-check: the first images run again through a session with ONNX Runtime's
# default optimizations. When those change the top-1 class of more than 1 % of them (2 of 100:
# one image can flip on a near tie between two logits), verify warns that the runtime's
# optimizer changes this graph's results. A warning, not a failure: the verdict is about the
# graph as written, which is what TensorRT receives.
CROSS_CHECK_IMAGES = 100
CROSS_CHECK_MAX_CHANGED = 0.01
# The acceptance line of the issue tracker's targets: INT8 agreement >= 99 %, <= 0.5 point drop.
DEFAULT_MIN_AGREEMENT = 99.0
DEFAULT_MAX_TOP1_DROP = 0.5


class VerifyFailed(SkEdgeError):
    """A threshold was broken; verify.json and verify.md are written all the same (``report``: verify.json)."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class VerifyOptions:
    candidate: str | None = field(
        default=None,
        metadata=option(  # None: the engine if there is one, else int8, fp16, fp32
            "What to judge [default: the engine if built, else int8, fp16, fp32 graph].", choices=CANDIDATES
        ),
    )
    images: Path | None = field(
        default=None,
        metadata=option(
            "Folder of images (class sub-folders are labels) [default: the images stored with the PyTorch outputs in "
            "WORKDIR/reference.npz, else for the reference model its 1000 held-out images].",
            kind="path",
        ),
    )
    labels: Path | None = field(default=None, metadata=option("CSV of file,label rows for accuracy.", kind="path"))
    min_agreement: float = field(
        default=DEFAULT_MIN_AGREEMENT,
        metadata=option(  # percent
            "Fail below this top-1 agreement with the FP32 reference (percent).", kind="float", metavar="PCT", finite=True
        ),
    )
    max_top1_drop: float = field(
        default=DEFAULT_MAX_TOP1_DROP,
        metadata=option(  # points
            "Fail when labelled accuracy drops by more than this many points.", kind="float", low=0, metavar="PTS", finite=True
        ),
    )
    max_kl: float | None = field(
        default=None,
        metadata=option(  # mean KL(reference || candidate); off by default
            "Also fail above this mean KL(reference || candidate).", kind="float", finite=True
        ),
    )
    batch: int = 32
    # The share of ``images`` held out from calibration, when the build judges itself on the
    # calibration folder's hold-out part (sk_edge.evaluation); None: every image judges.
    holdout: float | None = None
    min_images: int = field(
        default=MIN_JUDGE_IMAGES,
        metadata=option(  # fewer judged images is an error, not a verdict
            "Refuse a verdict on fewer images (below 100, one image moves top-1 agreement by over a point).",
            kind="int",
            low=1,
            metavar="N",
        ),
    )
    # The recorded verdict stands when nothing it judged changed (a no-op build); False judges again.
    reuse: bool = False
    # Replace reference.npz (what a device without PyTorch is judged against) with this run's PyTorch outputs.
    # Without it, outputs are stored only where none are, or the stored ones are for another export.
    store_reference: bool = field(
        default=False,
        metadata=option(
            "Replace WORKDIR/reference.npz (the PyTorch outputs a device without PyTorch is judged against) with this "
            "run's [default: stored only where there are none for this export].",
            kind="flag",
        ),
    )

    def validate(self) -> None:
        if self.candidate is not None and self.candidate not in CANDIDATES:
            raise UsageError(f"--candidate must be one of {', '.join(CANDIDATES)}, got '{self.candidate}'")
        if not 0 <= self.min_agreement <= 100:
            raise UsageError(f"--min-agreement is a percentage (0 to 100), got {self.min_agreement}")
        # A NaN threshold compares False with everything, which would turn its gate off.
        for flag, value in (
            ("--min-agreement", self.min_agreement),
            ("--max-top1-drop", self.max_top1_drop),
            ("--max-kl", self.max_kl),
        ):
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{flag} must be a finite number, got {value}")
        if self.max_top1_drop < 0:
            raise UsageError(f"--max-top1-drop must be 0 or more points, got {self.max_top1_drop}")
        if self.max_kl is not None and self.max_kl < 0:
            raise UsageError(f"--max-kl must be 0 or more, got {self.max_kl}")
        if self.min_images < 1:
            raise UsageError(f"--min-images must be at least 1, got {self.min_images}")
        if self.labels is not None and self.images is None:
            raise UsageError("--labels needs --images DIR (the images the labels name)")


# --- the two sides -----------------------------------------------------------------------


def reference_runner(workdir: Path, export) -> tuple[Runner, str]:
    """The FP32 PyTorch model ``export.json`` describes, or the FP32 graph when torch is absent.

    The FP32 graph matched the PyTorch model to within the export's parity tolerance, so it
    stands in on devices without PyTorch (many Jetsons); the report says which was used.
    """
    if not torch_installed():
        from .backends.onnxruntime import judging_runner

        return judging_runner(workdir / FP32_ONNX), "FP32 ONNX on ONNX Runtime (PyTorch is not installed)"
    from .backends.torch import TorchRunner
    from .export import state_dict_digest
    from .models import build_model
    from .reference import NAME as REFERENCE, WEIGHTS as REFERENCE_WEIGHTS

    weights = export.weights_path
    if export.model == REFERENCE and weights and Path(weights).name == REFERENCE_WEIGHTS.name:
        weights = None  # the bundled weights, wherever this installation keeps them
    elif weights and not Path(weights).is_file():
        raise SkEdgeError(
            f"the weights the model was exported from, '{weights}', are not here; pass the work directory with them or re-export"
        )
    try:
        built = build_model(
            export.model,
            num_classes=export.num_classes,
            input_size=export.preprocess.input_size,
            weights=weights,
            args=export.model_args,
        )
    except UsageError as exc:
        raise SkEdgeError(f"cannot rebuild the PyTorch reference '{export.model}': {exc}") from None
    if state_dict_digest(built.module) != export.state_dict_sha256:
        raise SkEdgeError(f"the rebuilt '{export.model}' is not the model that was exported (its weights changed); re-export")
    return TorchRunner(built.module), f"{export.model} FP32 in PyTorch (CPU)"


def _runtime_here(target: str) -> bool:
    """Whether this machine has the runtime of ``target`` ("tensorrt" or "rtx") and a GPU for it."""
    from .backends.tensorrt import TensorRTUnavailable, gpu_identity, import_tensorrt

    try:
        import_tensorrt(target)
    except TensorRTUnavailable:
        return False
    return target == "tensorrt" or gpu_identity() is not None


def engines_of(workdir: Path, candidate: str) -> list[tuple[str, str]]:
    """(precision, file) of the engines an engine candidate ("engine", "rtx-engine") names, best first."""
    return [(p, name) for p, name in built_engines(workdir) if engine_target(name) == ENGINE_CANDIDATES[candidate]]


def choose_candidate(workdir: Path, candidate: str | None, log: Callable[[str], None] = lambda msg: None) -> str:
    """What ``--candidate`` names, or when it is left out: an engine whose runtime is here, else the first graph.

    Only the default is chosen here; a named candidate is judged as named or not at all.
    """
    if candidate is not None:
        return candidate
    graph = first_built(workdir)
    present = [c for c in ENGINE_CANDIDATES if engines_of(workdir, c)]
    for engine_candidate in present:
        if _runtime_here(ENGINE_CANDIDATES[engine_candidate]):
            return engine_candidate
    if present:
        name = engines_of(workdir, present[0])[0][1]
        log(
            f"{name} cannot run here (no {'TensorRT-RTX and RTX GPU' if present[0] == 'rtx-engine' else 'TensorRT'}); "
            f"judging {GRAPH_NAMES[graph]} on ONNX Runtime (pass --candidate {present[0]} on the device)"
        )
    return graph


def candidate_runner(workdir: Path, candidate: str, log: Callable[[str], None]) -> tuple[Runner, str, str, EngineInfo | None]:
    """(runner, description, precision, the engine's checked sidecar or None) for ``candidate``, after checking it
    and the chain it came from.

    An engine that is absent, stale or cannot run here is an error, never replaced by a graph.
    """
    from .workdir import load_engine, load_graph

    if candidate in ENGINE_CANDIDATES:
        engines = engines_of(workdir, candidate)
        if not engines:
            what = "TensorRT-RTX engine" if candidate == "rtx-engine" else "engine"
            raise SkEdgeError(
                f"--candidate {candidate}, but there is no {what} in '{workdir}' (built without TensorRT?); run its "
                f"on_device.sh on the device, or pass --candidate {first_built(workdir)} to judge the graph on ONNX Runtime"
            )
        precision, name = engines[0]
        engine = load_engine(workdir, precision, name=name)
        from .runtime import Engine

        label = "TensorRT-RTX engine" if engine.flavour == "rtx" else "TensorRT engine"
        return Engine(workdir / name), f"{label} {name}", precision, engine
    load_graph(workdir, candidate)
    path = workdir / GRAPH_NAMES[candidate]
    from .backends.onnxruntime import judging_runner

    return judging_runner(path), f"{path.name} on ONNX Runtime (CPU, judging session)", candidate, None


# --- images and labels -------------------------------------------------------------------


def default_eval_set(workdir: Path, export: ExportInfo, log: Callable[[str], None]) -> tuple[Path, Path]:
    """The reference model's held-out SK-Digits images, rendered once into the work directory."""
    from .reference import NAME as REFERENCE

    if export.model != REFERENCE:
        raise UsageError(
            f"--images DIR is needed to verify '{export.model}' (only the reference model has a built-in evaluation set)"
        )
    from .reference.digits import write_split_once

    folder = write_split_once(workdir, EVAL_DIR, "eval", EVAL_COUNT, "held-out SK-Digits evaluation", log)
    return folder, folder / "labels.csv"


# --- the comparison ----------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(cand)) per row of two logit arrays, in float64."""
    p, q = _softmax(ref.astype(np.float64)), _softmax(cand.astype(np.float64))
    return np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)


def points(fraction: float) -> float:
    """A fraction (an agreement, a difference of two accuracies) in percent or points, as every gate compares it:
    rounded to 1e-9 so that a gate judges the figure and not float noise. (0.970 - 0.965) * 100 is
    0.5000000000000004, which the accuracy budget refused as over 0.5 points while verify passed the same build."""
    return round(fraction * 100, 9)


def compare(ref: np.ndarray, cand: np.ndarray, names: list[str], labels: dict[str, int] | None) -> dict:
    """Drift of ``cand`` logits from ``ref`` logits, image by image."""
    ref, cand = ref.astype(np.float64), cand.astype(np.float64)
    r1, c1 = ref.argmax(1), cand.argmax(1)
    k = min(5, ref.shape[1])
    top5 = np.argsort(-cand, axis=1)[:, :k]
    cos = np.sum(ref * cand, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    kl = kl_divergence(ref, cand)
    disagree = np.flatnonzero(r1 != c1)
    metrics = {
        "images": int(len(ref)),
        # Any NaN or inf fails the verdict: argmax and KL would otherwise hide it.
        "non_finite_images": int((~np.isfinite(cand).all(1)).sum() + (~np.isfinite(ref).all(1)).sum()),
        "top1_agreement": float((r1 == c1).mean()),
        "top5_agreement": float((top5 == r1[:, None]).any(1).mean()),  # reference top-1 within candidate top-5
        "cosine_mean": float(cos.mean()),
        "cosine_worst": float(cos.min()),
        "kl_mean": float(kl.mean()),
        "max_abs_logit_diff": float(np.abs(ref - cand).max()),
        "disagreements": [{"image": names[i], "reference": int(r1[i]), "candidate": int(c1[i])} for i in disagree],
    }
    per_class = {}
    for cls in np.unique(r1):
        members = r1 == cls
        per_class[int(cls)] = {"images": int(members.sum()), "disagreements": int((c1[members] != cls).sum())}
    metrics["worst_classes"] = sorted(
        ({"class": c, **v, "rate": v["disagreements"] / v["images"]} for c, v in per_class.items() if v["disagreements"]),
        key=lambda d: -d["rate"],
    )[:5]
    if labels is not None:
        known = [i for i, n in enumerate(names) if n in labels]
        if known:
            y = np.array([labels[names[i]] for i in known])
            acc_r, acc_c = float((r1[known] == y).mean()), float((c1[known] == y).mean())
            metrics.update(
                {
                    "labelled_images": len(known),
                    "accuracy_reference": acc_r,
                    "accuracy_candidate": acc_c,
                    "top1_drop_points": points(acc_r - acc_c),
                }
            )
    return metrics


def runtime_cross_check(graph: Path, x: np.ndarray, faithful: np.ndarray) -> dict:
    """How far ONNX Runtime's default session moves ``graph``'s logits from the judged ones."""
    from .backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(graph, dynamic_batch=True) as runner:  # ONNX Runtime's default options
        out, session = runner(x), runner.settings()
    changed = float((out.argmax(1) != faithful.argmax(1)).mean())
    finite = bool(np.isfinite(out).all())
    return {
        "images": int(len(x)),
        "session": session,
        "top1_changed": changed,
        "max_abs_logit_diff": float(np.abs(out - faithful).max()) if finite else None,
        "max_top1_changed": CROSS_CHECK_MAX_CHANGED,
        "optimizer_changes_results": changed > CROSS_CHECK_MAX_CHANGED or not finite,
    }


def cross_check_line(check: dict) -> str:
    return (
        f"the runtime's optimizer changes this graph's results: with ONNX Runtime's default session options "
        f"the top-1 class of {check['top1_changed']:.0%} of {check['images']} images differs (max |logit diff| "
        f"{check['max_abs_logit_diff'] if check['max_abs_logit_diff'] is not None else 'non-finite'}); "
        f"the verdict is for the graph as written, which is what TensorRT receives"
    )


# A labelled reference under this many times chance accuracy is taken as broken (wrong preprocessing, wrong labels).
CHANCE_FACTOR = 2.0
AT_CHANCE = "the FP32 reference itself is at chance"
# A labelled reference this many points under the accuracy its checkpoint records is taken as broken too
# (another held-out set may differ by a few points; not by twenty).
FAR_BELOW_POINTS = 20.0
FAR_BELOW = "the FP32 reference is far below the accuracy its checkpoint records"


def judging_cautions(export: ExportInfo, stream: ImageStream | None) -> list[str]:
    """What may make a verdict about the wrong inputs although nothing broke: preprocessing nobody gave for a
    user's checkpoint, judging images far smaller than the input."""
    from .preprocess import defaulted_caution, upsampling_caution
    from .reference import WEIGHTS as REFERENCE_WEIGHTS

    trained = export.weights_path is not None and Path(export.weights_path).name != REFERENCE_WEIGHTS.name
    cautions = [defaulted_caution(export.doc.get("preprocess_sources"), trained, export.preprocess.resize)]
    if stream is not None:
        cautions.append(upsampling_caution(stream.short_sides, export.preprocess, "judging images"))
    return [c for c in cautions if c]


def verdict(metrics: dict, options: VerifyOptions) -> list[str]:
    """The broken thresholds, as short phrases; empty when the candidate passes."""
    broken = []
    if metrics.get("non_finite_images"):
        broken.append(f"non-finite logits (NaN or inf) on {metrics['non_finite_images']} images")
    agreement = points(metrics["top1_agreement"])
    if agreement < options.min_agreement:
        broken.append(f"top-1 agreement {agreement:.2f}% < {options.min_agreement:.2f}%")
    drop = metrics.get("top1_drop_points")
    if drop is not None and drop > options.max_top1_drop:
        broken.append(f"top-1 drop {drop:.2f} > {options.max_top1_drop:.2f} points")
    # Top-1 can survive what ruins the probabilities (a clipped classifier input keeps its
    # argmax): a KL bound catches that when the application uses the scores.
    if options.max_kl is not None and metrics["kl_mean"] > options.max_kl:
        broken.append(f"mean KL {metrics['kl_mean']:.3g} > {options.max_kl:.3g}")
    classes = metrics.get("num_classes") or 0
    if "accuracy_reference" in metrics and classes >= 2 and metrics["accuracy_reference"] < CHANCE_FACTOR / classes:
        # Agreement with a reference that is itself wrong proves nothing: a PASS there is a false one.
        broken.append(
            f"{AT_CHANCE} ({metrics['accuracy_reference']:.2%} on {classes} classes, "
            "chance {:.2%}): the preprocessing (input size, resize, mean/std) or the labels are likely not "
            "the model's".format(1 / classes)
        )
    recorded = metrics.get("checkpoint_accuracy")
    if (
        "accuracy_reference" in metrics
        and recorded
        and metrics["accuracy_reference"] < recorded["value"] - FAR_BELOW_POINTS / 100
    ):
        broken.append(
            f"{FAR_BELOW} ({metrics['accuracy_reference']:.2%} against the {recorded['value']:.2%} its "
            f"'{recorded['field']}' records): the preprocessing (input size, resize, mean/std) or the labels are "
            "likely not the model's"
        )
    return broken


def summary_line(metrics: dict) -> str:
    line = (
        f"top-1 agreement {metrics['top1_agreement']:.2%}, top-5 {metrics['top5_agreement']:.2%}, "
        f"mean KL {metrics['kl_mean']:.2e}, worst cosine {metrics['cosine_worst']:.4f}"
    )
    if "accuracy_reference" in metrics:
        labelled = metrics["labelled_images"]
        on = f" on {labelled} labelled" if labelled != metrics["images"] else ""
        line += (
            f", accuracy {metrics['accuracy_reference']:.2%} -> {metrics['accuracy_candidate']:.2%}{on} "
            f"(drop {metrics['top1_drop_points']:.2f} points)"
        )
    return line + f" on {metrics['images']} images"


def gates_applied(metrics: dict, thresholds: dict) -> str:
    """The gates a verdict applied, in words: the accuracy drop only where there were labels."""
    gates = [f"top-1 agreement >= {thresholds['min_agreement']}%"]
    if "accuracy_reference" in metrics:
        gates.append(f"top-1 drop <= {thresholds['max_top1_drop']} points on {metrics['labelled_images']} labelled images")
    else:
        gates.append("no accuracy gate: no labels")
    if thresholds.get("max_kl") is not None:
        gates.append(f"mean KL <= {thresholds['max_kl']}")
    return ", ".join(gates)


REFERENCE_KINDS = {
    "pytorch": "PyTorch, run live",
    "pytorch-stored": "PyTorch outputs stored on the host",
    "fp32-graph": "the FP32 graph on ONNX Runtime (no PyTorch here; stored PyTorch outputs are used only without --images)",
}


def images_line(images: dict, count: int) -> str:
    """Which images judged the build, in words."""
    hold = images.get("holdout")
    where = (
        f"the {hold['fraction']:.0%} of {images['dir']} held out from calibration (never calibrated on)"
        if hold
        else str(images["dir"])
    )
    line = f"{count} from {where}"
    if images.get("reference"):
        line += f", as stored in {images['reference']}"
    if images.get("labels_source"):
        line += f"; labels: {images['labels_source']}"
    return line


def markdown(doc: dict) -> str:
    """verify.md: the summary table, the gates, cautions and warnings, then where the candidate disagrees."""
    m = doc["metrics"]
    lines = [f"# sk-edge verify: {'PASS' if doc['passed'] else 'FAIL'}", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(doc)]
    lines += ["", f"Gates applied: {gates_applied(m, doc['thresholds'])}."]
    if doc["broken"]:
        lines += ["", "Broken: " + "; ".join(doc["broken"]) + "."]
    lines += [f"\n**Caution**: {c}." for c in doc.get("cautions") or ()]
    session = doc["candidate"].get("session")
    if session:
        lines += [
            "",
            f"ONNX Runtime {session['onnxruntime']} judged the graph with its QDQ transformers off "
            f"({', '.join(f'{k}={v}' for k, v in session['config'].items())}): nothing moved or fused a Q/DQ "
            "node, so these numbers are the graph as written.",
        ]
    check = doc.get("runtime_cross_check")
    if check and check["optimizer_changes_results"]:
        lines += [
            "",
            f"**Warning**: {cross_check_line(check)}. TensorRT moves Q/DQ too (its own propagation "
            "rules); only a run on the device shows what its engine does.",
        ]
    names = doc.get("class_names") or []
    named = lambda c: f"{c} ({names[c]})" if c < len(names) else str(c)  # noqa: E731
    if m["worst_classes"]:
        lines += ["", "Classes with the most disagreements:", "", "| class | images | disagreements |", "| ---: | ---: | ---: |"]
        lines += [f"| {named(c['class'])} | {c['images']} | {c['disagreements']} |" for c in m["worst_classes"]]
    if m["disagreements"]:
        lines += ["", f"Images where the top-1 class differs ({len(m['disagreements'])}):", ""]
        lines += [
            f"- {d['image']}: reference {named(d['reference'])}, candidate {named(d['candidate'])}"
            for d in m["disagreements"][:50]
        ]
        if len(m["disagreements"]) > 50:
            lines.append(f"- ... and {len(m['disagreements']) - 50} more in verify.json")
    return "\n".join(lines) + "\n"


def _summary_rows(doc: dict) -> list[tuple[str, str]]:
    """verify.md's table: what was judged against what, and every figure measured."""
    m = doc["metrics"]
    rows = [
        ("reference", REFERENCE_KINDS.get(doc.get("reference_kind") or "", "?")),
        ("reference model", doc["reference"]),
        ("preprocessing", Preprocess.from_dict(doc["preprocess"]).describe() if doc.get("preprocess") else "?"),
        ("candidate", doc["candidate"]["description"]),
        ("images", images_line(doc["images"], m["images"])),
        ("top-1 agreement", f"{m['top1_agreement']:.2%}"),
        ("top-5 agreement", f"{m['top5_agreement']:.2%}"),
        ("cosine similarity, mean / worst", f"{m['cosine_mean']:.5f} / {m['cosine_worst']:.5f}"),
        ("mean KL(reference ‖ candidate)", f"{m['kl_mean']:.3e}"),
        ("max abs logit diff", f"{m['max_abs_logit_diff']:.4f}"),
    ]
    if doc.get("precision_mix"):
        mix = doc["precision_mix"]
        rows.append(
            (
                "precision mix",
                f"{mix['int8_mac_share']:.1%} of the MACs in INT8 ({mix['int8_layers']} of "
                f"{mix['weighted_layers']} Conv/Gemm layers), the rest in floating point",
            )
        )
    plan = doc.get("engine_plan") or {}
    if plan.get("mac_share_by_precision"):
        shares = ", ".join(
            f"{p.upper()} {v:.1%}" for p, v in sorted(plan["mac_share_by_precision"].items(), key=lambda kv: -kv[1])
        )
        rows.append(
            (
                "precision mix as the engine plans it",
                f"{shares} of the MACs ({plan.get('int8_layers', 0)} Conv/Gemm layers "
                f"with INT8 inputs and weights); {plan.get('convert_only_layers', 0)} of {plan.get('layers', 0)} layers only "
                "convert precision",
            )
        )
    if m.get("selection_drift") is not None:
        rows.append(("selection drift (mean abs SK gate difference)", f"{m['selection_drift']:.4f}"))
    if "accuracy_reference" in m:
        rows += [
            (
                f"accuracy, reference / candidate ({m['labelled_images']} labelled images)",
                f"{m['accuracy_reference']:.2%} / {m['accuracy_candidate']:.2%}",
            ),
            ("top-1 drop", f"{m['top1_drop_points']:.2f} points"),
        ]
    return rows


def _chain(workdir: Path, precision: str, engine: EngineInfo | None = None) -> dict:
    """sha256 of the candidate and of everything it came from: export -> calibration -> graph -> engine.

    ``engine``: the engine's sidecar, checked by load_engine (which names the graph it was built from)."""
    from .workdir import graph_chain

    if engine is None:
        return graph_chain(workdir, precision)
    chain = graph_chain(workdir, precision, graph={engine.onnx_name: engine.onnx_sha256})
    chain["engine"] = {engine.engine_name: engine.engine_sha256}
    return chain


def candidate_precision_mix(workdir: Path, precision: str, graph: str) -> dict | None:
    """The share of the MACs the candidate runs in INT8, read from the INT8 graph itself (never from its sidecar,
    which a copied or edited graph would not change).

    ``graph`` is the graph the candidate is, or the engine was built from. None unless that is the
    INT8 Q/DQ graph: a weakly typed engine (TensorRT 8.5/8.6, the DLA) is built from the FP32 graph
    and takes its precisions from calib.cache and TensorRT's choices, not from the graph's plan, so
    the plan's share would be a claim about another artifact.
    """
    import onnx

    from .quantize.macs import graph_precision_mix

    if precision != "int8" or graph != GRAPH_NAMES["int8"]:
        return None
    return graph_precision_mix(onnx.load(str(Path(workdir) / graph)))


def refuse_calibration_overlap(workdir: Path, judged: dict[str, str], where: str) -> None:
    """An INT8 candidate judged on images it was calibrated on is graded on its own homework: refused.

    ``judged`` maps each judged image's :func:`~sk_edge.images.content_id` to its name: images are
    compared by content (calib.json records each calibration image's), so a copy under another name
    or folder counts too.
    """
    from .workdir import CALIB_JSON

    calib = ((artifacts.read_json(workdir / CALIB_JSON) or {}).get("inputs") or {}).get("images") or {}
    overlap = [cid for cid in judged if cid in set(calib.get("content_ids") or ())]
    if overlap:
        example = judged[overlap[0]]
        raise UsageError(
            f"{len(overlap)} of the {len(judged)} images in {where} are images the INT8 graph was calibrated on (same "
            f"content as in {calib.get('dir')}{'; e.g. ' + example if example != '?' else ''}): a verdict on them says "
            "nothing about new images; judge on images calibration never saw (--eval-images DIR), or calibrate on others"
        )


def verdict_key(
    options: VerifyOptions,
    candidate: str,
    precision: str,
    chain: dict,
    export: ExportInfo,
    images_digest: str,
    labels: dict[str, int] | None,
    ref_kind: str,
) -> str:
    """What a verdict depends on: the candidate's sha256 ``chain``, the images (names and bytes) and labels, the
    reference, the thresholds, the preprocessing and this sk-edge (artifacts.stage_key adds its version). The
    same key is the same verdict."""
    return artifacts.stage_key(
        {
            "candidate": candidate,
            "precision": precision,
            "judged_by": judging_environment(),
            "chain": chain,
            "images": images_digest,
            "holdout": options.holdout,
            "labels": sorted(labels.items()) if labels else None,
            "reference": ref_kind,
            "preprocess": export.preprocess_record,
            "thresholds": [options.min_agreement, options.max_top1_drop, options.max_kl, options.min_images],
        }
    )


def judging_environment() -> dict:
    """What computes the two sides here: this machine and the libraries that run the candidate and the reference.
    A verdict made on the host is never reused on a device (or after an upgrade of either library)."""
    import platform
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "torch": version("torch") if torch_installed() else None,
    }


def reused_verdict(workdir: Path, key: str, log: Callable[[str], None]) -> dict | None:
    """verify.json when it was made with ``key`` (raising VerifyFailed again for a failed one), else None."""
    previous = artifacts.read_json(workdir / VERIFY_JSON)
    if not previous or previous.get("key") != key or not (workdir / VERIFY_MD).is_file():
        return None
    log(
        f"verdict reused: {VERIFY_JSON} judged this very candidate on the same images, labels, reference and "
        "thresholds (--force judges again)"
    )
    if previous.get("broken"):
        raise VerifyFailed(f"verify FAILED: {'; '.join(previous['broken'])} ({workdir / VERIFY_MD})", previous)
    log(f"verify PASSED ({gates_applied(previous['metrics'], previous['thresholds'])}); {workdir / VERIFY_JSON} as it was")
    return previous


def _stored_reference_valid(workdir: Path, export: ExportInfo) -> bool:
    """Whether the work directory holds intact stored PyTorch outputs made for this export."""
    from . import stored_reference

    try:
        return stored_reference.stored_for(workdir, export) is not None
    except SkEdgeError:  # damaged, or for another export: replacing it loses nothing usable
        return False


def _judged_images(workdir: Path, export: ExportInfo, options: VerifyOptions, log) -> JudgeImages:
    if options.images is not None:
        return JudgeImages(Path(options.images), options.labels, options.holdout)
    folder, labels = default_eval_set(workdir, export, log)
    return JudgeImages(folder, labels)


def _too_few(count: int, judge: JudgeImages | None, options: VerifyOptions) -> UsageError:
    where = judge.describe() if judge else f"'{REFERENCE_NPZ}'"
    fix = (
        "add images to the folder, pass --eval-images DIR with held-out images"
        if judge and judge.holdout is not None
        else "add images, or pass --min-images N to accept a coarser verdict"
    )
    return too_few_images(count, where, options.min_images, fix)


def verify(
    workdir: str | Path,
    options: VerifyOptions = VerifyOptions(),
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> dict:
    """Compare the candidate with the FP32 reference; write verify.json/.md; raise VerifyFailed if a threshold breaks.

    The reference, in order: the PyTorch outputs stored in the work directory (reference.npz)
    when no ``images`` are named and they were made for this export; else the PyTorch model,
    run live (its outputs are then stored); else, without PyTorch, the FP32 graph.
    """
    options.validate()
    workdir = Path(workdir)
    export = load_export(workdir)
    stored = _stored_or_none(workdir, export, options, log)
    candidate = choose_candidate(workdir, options.candidate, log)
    cand_run, cand_desc, precision, engine = candidate_runner(workdir, candidate, log)
    try:
        return _judge(workdir, options, export, stored, (candidate, cand_run, cand_desc, precision, engine), log, progress)
    finally:  # an engine holds GPU memory and a CUDA context: closed whatever happens
        cand_run.close()


def _stored_or_none(workdir: Path, export: ExportInfo, options: VerifyOptions, log: Callable[[str], None]):
    """The PyTorch outputs stored for this export, when no images are named and they are current."""
    from . import stored_reference

    stored = None
    if options.images is None:
        try:
            stored = stored_reference.stored_for(workdir, export)
        except stored_reference.StaleReference as exc:
            from .reference import NAME as REFERENCE

            if not torch_installed():
                raise SkEdgeError(
                    f"{exc}: run `sk-edge verify -w DIR --images DIR` on the host (with PyTorch) to store "
                    "new ones, or pass --images DIR here to judge against the FP32 graph"
                ) from None
            if export.model != REFERENCE:
                raise SkEdgeError(f"{exc}: pass --images DIR (PyTorch runs on them, and stores its new outputs)") from None
            log(f"not using {REFERENCE_NPZ}: {exc}; running PyTorch again")
    return stored


@dataclass(frozen=True)
class _Judging:
    """What a verdict is about, decided before any model runs: the images, their labels, the reference, the key."""

    key: str  # verdict_key: a build reuses the recorded verdict while it is unchanged
    labels: dict[str, int] | None  # file name -> class index
    labels_source: str | None
    ref_kind: str  # REFERENCE_KINDS
    judge: JudgeImages | None  # None: judged on the stored PyTorch outputs
    paths: tuple[Path, ...] = ()


def _stored_judging(workdir: Path, options: VerifyOptions, export: ExportInfo, stored, chosen: tuple, chain: dict) -> _Judging:
    """Judging on the PyTorch outputs stored in the work directory (reference.npz)."""
    candidate, _, _, precision, _ = chosen
    if len(stored.names) < options.min_images:
        raise _too_few(len(stored.names), None, options)
    if precision == "int8":  # stored outputs made since sk-edge records each image's content
        refuse_calibration_overlap(
            workdir,
            dict.fromkeys(stored.info.images.get("content_ids") or (), "?"),
            f"'{REFERENCE_NPZ}' ({stored.info.images.get('dir', 'its images')})",
        )
    # The stored outputs are PyTorch's, for this export and preprocessing (stored_for checked), on images
    # named by the same digest a live run computes: the same verdict key as the run that stored them.
    digest = stored.info.images.get("sha256") or artifacts.sha256_file(workdir / REFERENCE_NPZ)
    return _Judging(
        key=verdict_key(options, candidate, precision, chain, export, digest, stored.labels, "pytorch"),
        labels=stored.labels,
        labels_source="stored with the reference" if stored.labels else None,
        ref_kind="pytorch-stored",
        judge=None,
    )


def _live_judging(
    workdir: Path, options: VerifyOptions, export: ExportInfo, chosen: tuple, chain: dict, log: Callable[[str], None]
) -> _Judging:
    """Judging on image files, against PyTorch (or the FP32 graph where PyTorch is absent)."""
    candidate, _, _, precision, _ = chosen
    judge = _judged_images(workdir, export, options, log)
    paths = judge.paths()
    labels, labels_source = judge.checked_labels(export.num_classes, options.min_images)  # input errors first
    if precision == "int8":
        refuse_calibration_overlap(workdir, {content_id(p): p.name for p in paths}, judge.describe())
    if len(paths) < options.min_images:
        raise _too_few(len(paths), judge, options)
    if labels_source:
        log(f"labels: {labels_source}")
    else:
        log(f"no labels ({judge.unlabelled_reason()}): judged by agreement with the reference, no accuracy gate")
    ref_kind = "pytorch" if torch_installed() else "fp32-graph"
    digest = images_digest([judge.name_of(p) for p in paths], paths)
    return _Judging(
        key=verdict_key(options, candidate, precision, chain, export, digest, labels, ref_kind),
        labels=labels,
        labels_source=labels_source,
        ref_kind=ref_kind,
        judge=judge,
        paths=tuple(paths),
    )


@dataclass
class _Compared:
    """The reference's and the candidate's outputs on every judged image, in order."""

    reference: np.ndarray
    candidate: np.ndarray
    names: list[str]
    first: np.ndarray  # the first SELECTION_IMAGES inputs (or more), for the selection drift and the cross-check
    stream: ImageStream | None  # the images read (None: stored outputs)
    reference_description: str


def _compare(
    workdir: Path,
    options: VerifyOptions,
    export: ExportInfo,
    stored,
    judging: _Judging,
    cand_run,
    log: Callable[[str], None],
    progress,
) -> _Compared:
    """Run the reference (or read its stored outputs) and the candidate over the judged images."""
    stream, ref_run = None, None
    if judging.judge is None:
        total, ref_desc = len(stored.names), stored.description
        batches = stored.batches(export.preprocess, options.batch)
        where = REFERENCE_NPZ
    else:
        ref_run, ref_desc = reference_runner(workdir, export)
        stream = ImageStream(
            list(judging.paths),
            export.preprocess,
            options.batch,
            None,
            root=judging.judge.root,
            keep_pixels=judging.ref_kind == "pytorch",
        )
        total, where = len(judging.paths), judging.judge.describe()
        batches = ((x, n, ref_run(x)) for x, n in stream)
    log(f"judging on {total} images from {where}; reference: {ref_desc}")
    tick = progress(total) if progress else (lambda n: None)
    ref_out, cand_out, names = [], [], []
    kept: list[np.ndarray] = []
    try:
        for batch, batch_names, ref in batches:
            ref_out.append(ref)
            cand_out.append(cand_run(batch))
            names += batch_names
            if sum(len(k) for k in kept) < SELECTION_IMAGES:
                kept.append(batch)
            tick(len(batch_names))
    finally:
        if ref_run is not None:
            ref_run.close()
    if not names:
        raise SkEdgeError(f"no readable image in '{judging.judge.root if judging.judge else REFERENCE_NPZ}'")
    return _Compared(np.concatenate(ref_out), np.concatenate(cand_out), names, np.concatenate(kept), stream, ref_desc)


def _images_record(stored, judging: _Judging, compared: _Compared, options: VerifyOptions, log: Callable[[str], None]) -> dict:
    """verify.json's record of the judged images (and the unreadable ones skipped)."""
    stream, judge = compared.stream, judging.judge
    if stream is None or judge is None:
        images_doc = {**stored.info.images, "used": len(stored.names), "reference": REFERENCE_NPZ}
    else:
        for name, why in stream.skipped:
            log(f"  skipped unreadable image {name}: {why}")
        if len(compared.names) < options.min_images:
            raise _too_few(len(compared.names), judge, options)
        images_doc = {
            **judge.to_dict(),
            "used": len(compared.names),
            "skipped": [n for n, _ in stream.skipped],
            "sha256": stream.digest,
            "content_ids": sorted(stream.content_ids),
        }
    images_doc["labels_source"] = judging.labels_source
    return images_doc


def _judge(
    workdir: Path, options: VerifyOptions, export: ExportInfo, stored, chosen: tuple, log: Callable[[str], None], progress
) -> dict:
    """The comparison itself, for the candidate ``chosen`` (kind, runner, description, precision, engine sidecar)."""
    candidate, cand_run, cand_desc, precision, engine = chosen
    chain = _chain(workdir, precision, engine)  # read once: the verdict's key and its record
    judging = (
        _stored_judging(workdir, options, export, stored, chosen, chain)
        if stored is not None
        else _live_judging(workdir, options, export, chosen, chain, log)
    )
    previous = reused_verdict(workdir, judging.key, log) if options.reuse else None
    if previous is not None:
        return previous
    compared = _compare(workdir, options, export, stored, judging, cand_run, log, progress)
    images_doc = _images_record(stored, judging, compared, options, log)
    if judging.ref_kind == "pytorch" and compared.stream is not None:
        _store_reference(workdir, export, options, judging, compared, images_doc, log)
    metrics = compare(compared.reference, compared.candidate, compared.names, judging.labels)
    cross_check = None
    if candidate != "engine":  # an engine hides its gates; a graph shows them
        from .analyze import selection_drift

        metrics["selection_drift"] = selection_drift(workdir, workdir / GRAPH_NAMES[precision], compared.first[:SELECTION_IMAGES])
        count = min(CROSS_CHECK_IMAGES, len(compared.first))
        cross_check = runtime_cross_check(workdir / GRAPH_NAMES[precision], compared.first[:count], compared.candidate[:count])
    metrics["num_classes"] = export.num_classes
    metrics["checkpoint_accuracy"] = export.doc.get("checkpoint_accuracy")
    cautions = judging_cautions(export, compared.stream)
    broken = [
        f"{b}; {cautions[0]}" if b.startswith((AT_CHANCE, FAR_BELOW)) and cautions else b for b in verdict(metrics, options)
    ]
    doc = {
        "kind": "sk-edge/verify",
        "tool": {"name": "sk-edge", "version": __version__},
        "reference": compared.reference_description,
        "reference_kind": judging.ref_kind,
        "candidate": {
            "kind": candidate,
            "precision": precision,
            "description": cand_desc,
            "session": cand_run.settings() if hasattr(cand_run, "settings") else None,
        },
        "runtime_cross_check": cross_check,
        "images": images_doc,
        "model": {"name": export.model, "export_sha256": export.fp32_sha256},
        "preprocess": export.preprocess_record,
        "class_names": export.class_names,
        "chain": chain,
        "precision_mix": candidate_precision_mix(workdir, precision, engine.onnx_name if engine else GRAPH_NAMES[precision]),
        # An engine's own layer plan, as its build checked it against the graph (layer_plan.summarize).
        "engine_plan": engine.layers_summary if engine else None,
        "thresholds": {
            "min_agreement": options.min_agreement,
            "max_top1_drop": options.max_top1_drop,
            "max_kl": options.max_kl,
            "min_images": options.min_images,
        },
        "metrics": metrics,
        "passed": not broken,
        "broken": broken,
        "cautions": cautions,
        "key": judging.key,  # what the verdict depends on (verdict_key): a build reuses it while nothing changed
    }
    _write_report(workdir, doc)
    _log_outcome(workdir, doc, cand_desc, cross_check, log)
    return doc


def _store_reference(workdir: Path, export: ExportInfo, options: VerifyOptions, judging, compared, images_doc: dict, log) -> None:
    """Store the live PyTorch outputs for the device (reference.npz), unless a valid store is kept."""
    from . import stored_reference

    if not options.store_reference and _stored_reference_valid(workdir, export):
        log(
            f"kept {REFERENCE_NPZ} (the outputs the device is judged against); --store-reference replaces it with these images' outputs"
        )
        return
    stored_reference.store(
        workdir,
        export,
        compared.names,
        compared.stream.pixels,
        compared.reference,
        judging.labels,
        images_doc,
        compared.reference_description,
    )


def _write_report(workdir: Path, doc: dict) -> None:
    artifacts.write_json(workdir / VERIFY_JSON, doc)
    with artifacts.atomic_output(workdir / VERIFY_MD) as tmp:
        tmp.write_text(markdown(doc))


def _log_outcome(workdir: Path, doc: dict, cand_desc: str, cross_check: dict | None, log: Callable[[str], None]) -> None:
    """The one-line summary, the cautions, and the verdict: raises VerifyFailed when a gate broke."""
    metrics = doc["metrics"]
    log(f"{cand_desc} vs {doc['reference']}: {summary_line(metrics)}")
    for caution in doc["cautions"]:
        log(f"caution: {caution}")
    if cross_check and cross_check["optimizer_changes_results"]:
        log(f"warning: {cross_check_line(cross_check)}")
    if doc["broken"]:
        raise VerifyFailed(f"verify FAILED: {'; '.join(doc['broken'])} ({workdir / VERIFY_MD})", doc)
    log(f"verify PASSED ({gates_applied(metrics, doc['thresholds'])}); wrote {workdir / VERIFY_JSON}")
