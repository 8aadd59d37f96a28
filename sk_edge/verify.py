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

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__, artifacts
from .errors import SkEdgeError, UsageError
from .images import ImageStream, find_images
from .preprocess import Preprocess
from .workdir import FP32_ONNX, GRAPH_NAMES, engine_name, first_built, load_export

CANDIDATES = ("engine", "int8", "fp16", "fp32")
VERIFY_JSON, VERIFY_MD = "verify.json", "verify.md"
EVAL_DIR, EVAL_COUNT = "eval_images", 1000
SELECTION_IMAGES = 256  # images for the selection drift (mean |SK gate difference|)
# The acceptance line of the issue tracker's targets: INT8 agreement >= 99 %, <= 0.5 point drop.
DEFAULT_MIN_AGREEMENT = 99.0
DEFAULT_MAX_TOP1_DROP = 0.5


class VerifyFailed(SkEdgeError):
    """A threshold was broken; verify.json and verify.md are written all the same."""


@dataclass
class VerifyOptions:
    candidate: str | None = None  # None: the engine if there is one, else int8, fp16, fp32
    images: Path | None = None
    labels: Path | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT  # percent
    max_top1_drop: float = DEFAULT_MAX_TOP1_DROP  # points
    max_kl: float | None = None  # mean KL(reference || candidate); off by default
    batch: int = 32

    def validate(self) -> None:
        if self.candidate is not None and self.candidate not in CANDIDATES:
            raise UsageError(f"--candidate must be one of {', '.join(CANDIDATES)}, got '{self.candidate}'")
        if not 0 <= self.min_agreement <= 100:
            raise UsageError(f"--min-agreement is a percentage (0 to 100), got {self.min_agreement}")
        if self.max_top1_drop < 0:
            raise UsageError(f"--max-top1-drop must be 0 or more points, got {self.max_top1_drop}")
        if self.max_kl is not None and self.max_kl < 0:
            raise UsageError(f"--max-kl must be 0 or more, got {self.max_kl}")


# --- the two sides -----------------------------------------------------------------------


def reference_runner(workdir: Path, export: dict) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The FP32 PyTorch model ``export.json`` describes, or the FP32 graph when torch is absent.

    The FP32 graph matched the PyTorch model to within the export's parity tolerance, so it
    stands in on devices without PyTorch (many Jetsons); the report says which was used.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        from .backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(workdir / FP32_ONNX, dynamic_batch=True), "FP32 ONNX on ONNX Runtime (PyTorch is not installed)"
    from .backends.torch import TorchRunner
    from .export import state_dict_digest
    from .models import build_model
    from .reference import NAME as REFERENCE, WEIGHTS as REFERENCE_WEIGHTS

    inputs = export["inputs"]
    weights = (inputs.get("weights") or {}).get("path")
    if inputs["model"] == REFERENCE and weights and Path(weights).name == REFERENCE_WEIGHTS.name:
        weights = None  # the bundled weights, wherever this installation keeps them
    elif weights and not Path(weights).is_file():
        raise SkEdgeError(f"the weights the model was exported from, '{weights}', are not here; pass the work directory with them or re-export")
    try:
        built = build_model(
            inputs["model"],
            num_classes=export["model"]["output"]["shape"][-1],
            input_size=export["preprocess"]["input_size"],
            weights=weights,
            args=inputs.get("model_args") or {},
        )
    except UsageError as exc:
        raise SkEdgeError(f"cannot rebuild the PyTorch reference '{inputs['model']}': {exc}") from None
    if state_dict_digest(built.module) != inputs["state_dict_sha256"]:
        raise SkEdgeError(f"the rebuilt '{inputs['model']}' is not the model that was exported (its weights changed); re-export")
    return TorchRunner(built.module), f"{inputs['model']} FP32 in PyTorch (CPU)"


def choose_candidate(workdir: Path, candidate: str | None) -> str:
    if candidate is None:
        if any(workdir.glob("model.*.engine")):
            return "engine"
        return first_built(workdir)
    return candidate


def candidate_runner(workdir: Path, candidate: str, log: Callable[[str], None]) -> tuple[Callable, str, str]:
    """(runner, description, precision) for ``candidate``; an engine falls back to its ONNX graph."""
    if candidate == "engine":
        has_engine = any((workdir / engine_name(p)).is_file() for p in GRAPH_NAMES)
        precision = first_built(workdir, engines=has_engine)
        if has_engine:
            from .backends.tensorrt import TensorRTUnavailable
            from .runtime import Engine

            engine = workdir / engine_name(precision)
            try:
                return Engine(engine), f"TensorRT engine {engine.name}", precision
            except TensorRTUnavailable as exc:
                log(f"cannot run {engine.name} here ({exc}); verifying {GRAPH_NAMES[precision]} on ONNX Runtime instead")
        else:
            log(f"no engine in '{workdir}' (TensorRT absent when it was built?); verifying {GRAPH_NAMES[precision]} on ONNX Runtime instead")
        candidate = precision
    path = workdir / GRAPH_NAMES[candidate]
    if not path.is_file():
        raise SkEdgeError(f"no {path.name} in '{workdir}'; run `sk-edge build -w {workdir} --precision {candidate}` first")
    from .backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, dynamic_batch=True), f"{path.name} on ONNX Runtime (CPU)", candidate


# --- images and labels -------------------------------------------------------------------


def read_labels(path: Path) -> dict[str, int]:
    """``file,label`` CSV (a header row is optional; further columns are ignored)."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read labels file '{path}': {exc}; pass a CSV of file,label rows") from None
    labels = {}
    for n, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
            labels[row[0].strip()] = int(row[1])
        elif n > 1:  # the first row may be a header
            raise UsageError(f"labels file '{path}' line {n} is not 'file,label' (got {','.join(row)[:60]!r})")
    if not labels:
        raise UsageError(f"labels file '{path}' has no 'file,label' rows")
    return labels


def default_eval_set(workdir: Path, export: dict, log: Callable[[str], None]) -> tuple[Path, Path]:
    """The reference model's held-out SK-Digits images, rendered once into the work directory."""
    from .reference import NAME as REFERENCE

    if export["inputs"]["model"] != REFERENCE:
        raise UsageError(f"--images DIR is needed to verify '{export['inputs']['model']}' (only the reference model has a built-in evaluation set)")
    from .reference import digits

    folder = workdir / EVAL_DIR
    labels = folder / "labels.csv"
    if not labels.is_file() or len(find_images(folder)) != EVAL_COUNT:
        log(f"rendering the {EVAL_COUNT} held-out SK-Digits evaluation images into {folder} ...")
        tmp = workdir / f".{EVAL_DIR}.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        digits.write_split("eval", tmp, EVAL_COUNT)
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
    return folder, labels


# --- the comparison ----------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(cand)) per row of two logit arrays, in float64."""
    p, q = _softmax(ref.astype(np.float64)), _softmax(cand.astype(np.float64))
    return np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)


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
            metrics.update({"labelled_images": len(known), "accuracy_reference": acc_r, "accuracy_candidate": acc_c,
                            "top1_drop_points": round((acc_r - acc_c) * 100, 4)})
    return metrics


def verdict(metrics: dict, options: VerifyOptions) -> list[str]:
    """The broken thresholds, as short phrases; empty when the candidate passes."""
    broken = []
    agreement = metrics["top1_agreement"] * 100
    if agreement < options.min_agreement:
        broken.append(f"top-1 agreement {agreement:.2f}% < {options.min_agreement:.2f}%")
    drop = metrics.get("top1_drop_points")
    if drop is not None and drop > options.max_top1_drop:
        broken.append(f"top-1 drop {drop:.2f} > {options.max_top1_drop:.2f} points")
    # Top-1 can survive what ruins the probabilities (a clipped classifier input keeps its
    # argmax): a KL bound catches that when the application uses the scores.
    if options.max_kl is not None and metrics["kl_mean"] > options.max_kl:
        broken.append(f"mean KL {metrics['kl_mean']:.3g} > {options.max_kl:.3g}")
    return broken


def summary_line(metrics: dict) -> str:
    line = (f"top-1 agreement {metrics['top1_agreement']:.2%}, top-5 {metrics['top5_agreement']:.2%}, "
            f"mean KL {metrics['kl_mean']:.2e}, worst cosine {metrics['cosine_worst']:.4f}")
    if "accuracy_reference" in metrics:
        line += (f", accuracy {metrics['accuracy_reference']:.2%} -> {metrics['accuracy_candidate']:.2%} "
                 f"(drop {metrics['top1_drop_points']:.2f} points)")
    return line + f" on {metrics['images']} images"


def markdown(doc: dict) -> str:
    m = doc["metrics"]
    rows = [
        ("reference", doc["reference"]), ("candidate", doc["candidate"]["description"]), ("images", f"{m['images']} from {doc['images']['dir']}"),
        ("top-1 agreement", f"{m['top1_agreement']:.2%}"), ("top-5 agreement", f"{m['top5_agreement']:.2%}"),
        ("cosine similarity, mean / worst", f"{m['cosine_mean']:.5f} / {m['cosine_worst']:.5f}"),
        ("mean KL(reference ‖ candidate)", f"{m['kl_mean']:.3e}"), ("max abs logit diff", f"{m['max_abs_logit_diff']:.4f}"),
    ]
    if m.get("selection_drift") is not None:
        rows.append(("selection drift (mean abs SK gate difference)", f"{m['selection_drift']:.4f}"))
    if "accuracy_reference" in m:
        rows += [("accuracy, reference / candidate", f"{m['accuracy_reference']:.2%} / {m['accuracy_candidate']:.2%}"),
                 ("top-1 drop", f"{m['top1_drop_points']:.2f} points")]
    lines = [f"# sk-edge verify: {'PASS' if doc['passed'] else 'FAIL'}", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    th = doc["thresholds"]
    lines += ["", f"Thresholds: top-1 agreement >= {th['min_agreement']}%, top-1 drop <= {th['max_top1_drop']} points"
              + (f", mean KL <= {th['max_kl']}." if th.get("max_kl") is not None else ".")]
    if doc["broken"]:
        lines += ["", "Broken: " + "; ".join(doc["broken"]) + "."]
    if m["worst_classes"]:
        lines += ["", "Classes with the most disagreements:", "", "| class | images | disagreements |", "| ---: | ---: | ---: |"]
        lines += [f"| {c['class']} | {c['images']} | {c['disagreements']} |" for c in m["worst_classes"]]
    if m["disagreements"]:
        lines += ["", f"Images where the top-1 class differs ({len(m['disagreements'])}):", ""]
        lines += [f"- {d['image']}: reference {d['reference']}, candidate {d['candidate']}" for d in m["disagreements"][:50]]
        if len(m["disagreements"]) > 50:
            lines.append(f"- ... and {len(m['disagreements']) - 50} more in verify.json")
    return "\n".join(lines) + "\n"


def verify(
    workdir: str | Path,
    options: VerifyOptions = VerifyOptions(),
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> dict:
    """Compare the candidate with the FP32 reference; write verify.json/.md; raise VerifyFailed if a threshold breaks."""
    options.validate()
    workdir = Path(workdir)
    export = load_export(workdir)
    pre = Preprocess.from_dict(export["preprocess"])
    images, labels_path = options.images, options.labels
    if images is None:
        images, default_labels = default_eval_set(workdir, export, log)
        labels_path = labels_path or default_labels
    labels = read_labels(labels_path) if labels_path else None
    candidate = choose_candidate(workdir, options.candidate)
    cand_run, cand_desc, precision = candidate_runner(workdir, candidate, log)
    ref_run, ref_desc = reference_runner(workdir, export)
    paths = find_images(images)
    stream = ImageStream(paths, pre, options.batch, None, root=images)
    tick = progress(len(paths)) if progress else (lambda n: None)
    ref_out, cand_out, names, kept = [], [], [], []
    for batch, batch_names in stream:
        ref_out.append(ref_run(batch))
        cand_out.append(cand_run(batch))
        names += batch_names
        if sum(len(k) for k in kept) < SELECTION_IMAGES:
            kept.append(batch)
        tick(len(batch_names))
    if not names:
        raise SkEdgeError(f"no readable image in '{images}'")
    for name, why in stream.skipped:
        log(f"  skipped unreadable image {name}: {why}")
    metrics = compare(np.concatenate(ref_out), np.concatenate(cand_out), names, labels)
    if candidate != "engine":  # an engine hides its gates; a graph shows them
        from .analyze import selection_drift

        metrics["selection_drift"] = selection_drift(workdir, workdir / GRAPH_NAMES[precision], np.concatenate(kept)[:SELECTION_IMAGES])
    broken = verdict(metrics, options)
    doc = {
        "kind": "sk-edge/verify",
        "tool": {"name": "sk-edge", "version": __version__},
        "reference": ref_desc,
        "candidate": {"kind": candidate, "precision": precision, "description": cand_desc},
        "images": {"dir": str(images), "used": len(names), "skipped": [n for n, _ in stream.skipped], "sha256": stream.digest,
                   "labels": str(labels_path) if labels_path else None},
        "model": {"name": export["inputs"]["model"], "export_sha256": export["outputs"][FP32_ONNX]["sha256"]},
        "thresholds": {"min_agreement": options.min_agreement, "max_top1_drop": options.max_top1_drop, "max_kl": options.max_kl},
        "metrics": metrics,
        "passed": not broken,
        "broken": broken,
    }
    artifacts.write_json(workdir / VERIFY_JSON, doc)
    with artifacts.atomic_output(workdir / VERIFY_MD) as tmp:
        tmp.write_text(markdown(doc))
    log(f"{cand_desc} vs {ref_desc}: {summary_line(metrics)}")
    if broken:
        raise VerifyFailed(f"verify FAILED: {'; '.join(broken)} ({workdir / VERIFY_MD})")
    log(f"verify PASSED (top-1 agreement >= {options.min_agreement}%, drop <= {options.max_top1_drop} points); wrote {workdir / VERIFY_JSON}")
    return doc
