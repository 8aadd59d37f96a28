"""Which images judge a build, and their labels.

A build is judged on images calibration never saw. They come from one of three places:

- ``--eval-images DIR``: the user's held-out set, used whole;
- the hold-out part of ``--images DIR``: a fixed share of the files, chosen by a hash of each
  file's path relative to DIR (:func:`is_held_out`), so the split is the same on every machine
  and in every run, does not depend on the order or number of the other files, and calibration
  (which takes only the other part) can never overlap it;
- the bundled reference model's own 1000 held-out SK-Digits images.

Labels come from a ``file,label`` CSV, or from the folder layout torchvision's ImageFolder
uses: every image one level below DIR, the sorted sub-folder names being the class indices.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .images import display_name, find_images

# The share of --images held out from calibration to judge a build, when no --eval-images is given.
HOLDOUT_FRACTION = 0.2
HOLDOUT_RULE = "sha256(path relative to the folder) as a fraction of 2**64 < holdout"
# Fewer images than this cannot make a top-1 agreement figure worth a verdict: below 100, one
# image moves agreement by more than a point, the whole distance between the 99 % gate and 100 %.
MIN_JUDGE_IMAGES = 100


def too_few_images(count: int, where: str, min_images: int, fix: str, planned: bool = False) -> UsageError:
    """The refusal of a verdict on fewer than ``min_images`` images (``planned``: before any work)."""
    return UsageError(f"only {count} images {'would judge' if planned else 'judge'} this build ({where}); a top-1 "
                      f"agreement figure needs at least {min_images} (below that one image moves it by more than a "
                      f"point): {fix}, or --no-verify")


def is_held_out(name: str, fraction: float) -> bool:
    """Whether the file ``name`` (relative to its folder, '/'-separated) belongs to the hold-out part."""
    digest = hashlib.sha256(name.replace("\\", "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def split_paths(paths: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """(calibration part, held-out part) of ``paths``, each in the order given."""
    calibration, held_out = [], []
    for path in paths:
        (held_out if is_held_out(path.relative_to(root).as_posix(), fraction) else calibration).append(path)
    return calibration, held_out


def read_labels_csv(path: Path) -> dict[str, int]:
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


def read_class_names(path: Path, num_classes: int | None = None) -> list[str]:
    """``--class-names FILE``: one name per line, line k naming class k (blank lines at the end ignored)."""
    try:
        names = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read class names file '{path}': {getattr(exc, 'strerror', None) or exc}") from None
    while names and not names[-1].strip():
        names.pop()
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise UsageError(f"class names file '{path}' needs one non-empty name per line (line k names class k)")
    if num_classes is not None and len(names) != num_classes:
        raise UsageError(f"class names file '{path}' names {len(names)} classes and the model has {num_classes}; "
                         "give one name per class, in class order")
    return names


def class_folders(root: Path, paths: list[Path]) -> list[str] | None:
    """The class names of an ImageFolder layout (sorted sub-folder names), or None when ``root`` is not one.

    It is one when every image sits exactly one folder below ``root`` and there are at least two
    such folders: a flat folder, or one with deeper nesting, holds no labels.
    """
    folders = set()
    for path in paths:
        parts = path.relative_to(root).parts
        if len(parts) != 2:
            return None
        folders.add(parts[0])
    return sorted(folders) if len(folders) >= 2 else None


@dataclass(frozen=True)
class JudgeImages:
    """The images that judge a build, and where their labels come from.

    ``holdout`` is the fraction of ``root`` held out from calibration when the images are the
    calibration folder's hold-out part, None when every image under ``root`` judges.
    """

    root: Path
    labels_file: Path | None = None
    holdout: float | None = None

    def paths(self) -> list[Path]:
        paths = find_images(self.root)
        return split_paths(paths, self.root, self.holdout)[1] if self.holdout is not None else paths

    def labels(self, num_classes: int | None = None) -> tuple[dict[str, int] | None, str | None]:
        """(file name -> class index, where they came from), or (None, None) without labels."""
        if self.labels_file is not None:
            return read_labels_csv(self.labels_file), f"labels file {self.labels_file}"
        every = find_images(self.root)
        classes = class_folders(self.root, every)
        if classes is None:
            return None, None
        if num_classes is not None and len(classes) > num_classes:
            raise UsageError(
                f"'{self.root}' has {len(classes)} class folders but the model has {num_classes} classes; pass "
                "--labels FILE (a file,label CSV) if the folders are not classes, or the model's --num-classes"
            )
        index = {name: i for i, name in enumerate(classes)}
        table = {display_name(p.relative_to(self.root).as_posix()): index[p.relative_to(self.root).parts[0]]
                 for p in every}
        shown = ", ".join(f"{i} '{n}'" for i, n in enumerate(classes[:4])) + (", ..." if len(classes) > 4 else "")
        return table, f"class folders in {self.root} ({len(classes)} classes: {shown})"

    def class_names(self) -> list[str] | None:
        """The sorted class-folder names, when the folder is in ImageFolder layout."""
        if self.labels_file is not None:
            return None
        return class_folders(self.root, find_images(self.root))

    def describe(self) -> str:
        if self.holdout is None:
            return f"'{self.root}'"
        return f"the {self.holdout:.0%} of '{self.root}' held out from calibration"

    def to_dict(self) -> dict:
        return {"dir": str(self.root), "labels": str(self.labels_file) if self.labels_file else None,
                "holdout": None if self.holdout is None else {"fraction": self.holdout, "rule": HOLDOUT_RULE}}


@dataclass(frozen=True)
class JudgePlan:
    """What judges a build: ``images`` (None with ``default_set`` or ``stored``), or nothing with ``skip``."""

    images: JudgeImages | None = None
    default_set: bool = False  # the bundled reference model's own held-out images
    stored: bool = False  # the PyTorch outputs stored in the work directory (reference.npz)
    skip: bool = False  # --no-verify

    def describe(self) -> str:
        if self.skip:
            return "not judged (--no-verify)"
        if self.stored:
            return "the images stored with the PyTorch reference (reference.npz)"
        if self.default_set:
            return "the reference model's 1000 held-out images"
        return self.images.describe()


def plan_judging(model: str, precision: str, *, images: Path | None, labels: Path | None, eval_images: Path | None,
                 eval_labels: Path | None, no_verify: bool, stored_reference: bool = False, from_dir: bool = False,
                 min_images: int = MIN_JUDGE_IMAGES) -> JudgePlan:
    """Which images judge a build, decided before any work (a pure function of the options and the folders).

    ``--eval-images`` first; the bundled reference model has its own held-out set; else the part
    of ``--images`` an INT8 build holds out from calibration (all of it for FP16/FP32, which
    calibrate on nothing); else, in a work directory from the host, its stored PyTorch outputs.
    With none of these, the build is refused unless ``--no-verify``.
    """
    from .reference import NAME as REFERENCE

    if eval_labels is not None and eval_images is None:
        raise UsageError("--eval-labels needs --eval-images DIR (the images the labels name)")
    if labels is not None and images is None:
        raise UsageError("--labels needs --images DIR (the images the labels name)")
    if labels is not None and eval_images is not None:
        raise UsageError("--labels labels --images, which do not judge the build when --eval-images is given; "
                         "pass --eval-labels FILE for --eval-images")
    if no_verify:
        return JudgePlan(skip=True)
    if eval_images is not None:
        plan = JudgePlan(JudgeImages(Path(eval_images), eval_labels))
    elif model == REFERENCE and labels is None:
        return JudgePlan(default_set=True)
    elif images is not None:
        plan = JudgePlan(JudgeImages(Path(images), labels, HOLDOUT_FRACTION if precision == "int8" else None))
    elif stored_reference:
        return JudgePlan(stored=True)
    elif from_dir:
        raise UsageError(
            f"nothing to judge this build of '{model}' on: the work directory has no stored PyTorch outputs "
            "(reference.npz, which the host's build writes unless --no-verify); pass --eval-images DIR (judged against "
            "the FP32 graph where PyTorch is absent), or --no-verify for a build without a verdict"
        )
    else:
        raise UsageError(
            f"nothing to judge this build of '{model}' on: pass --images DIR (an INT8 build holds "
            f"{HOLDOUT_FRACTION:.0%} of it out of calibration to judge itself) or --eval-images DIR (held-out images of "
            "your model's domain), or --no-verify for a build without a verdict"
        )
    count = len(plan.images.paths())
    if count < min_images:
        fix = (f"add images to '{plan.images.root}' (about {int(min_images / HOLDOUT_FRACTION)} in all) or pass "
               "--eval-images DIR" if plan.images.holdout is not None else f"add images to '{plan.images.root}'")
        raise too_few_images(count, plan.images.describe(), min_images, fix, planned=True)
    return plan
