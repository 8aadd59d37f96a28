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
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .images import FORMATS, display_name, find_images

# The share of --images held out from calibration to judge a build, when no --eval-images is given.
HOLDOUT_FRACTION = 0.2
HOLDOUT_RULE = "sha256(path relative to the folder) as a fraction of 2**64 < holdout"
# Fewer images than this cannot make a top-1 agreement figure worth a verdict: below 100, one
# image moves agreement by more than a point, the whole distance between the 99 % gate and 100 %.
MIN_JUDGE_IMAGES = 100
# Held-out images the two analyses measure on by default: sensitivity measures every INT8 layer
# on each (its cost is layers x images), the kernel-selection analysis each image at three scales.
SENSITIVITY_IMAGES = 500
SELECTION_IMAGES = 200


def too_few_images(count: int, where: str, min_images: int, fix: str, planned: bool = False) -> UsageError:
    """The refusal of a verdict on fewer than ``min_images`` images (``planned``: before any work)."""
    return UsageError(
        f"only {count} images {'would judge' if planned else 'judge'} this build ({where}); a top-1 "
        f"agreement figure needs at least {min_images} (below that one image moves it by more than a "
        f"point): {fix}, or --no-verify"
    )


def is_held_out(name: str, fraction: float) -> bool:
    """Whether the file ``name`` (relative to its folder, '/'-separated) belongs to the hold-out part."""
    digest = hashlib.sha256(name.replace("\\", "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def split_paths(paths: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """(calibration part, held-out part) of ``paths``, each in the order given."""
    calibration: list[Path] = []
    held_out: list[Path] = []
    for path in paths:
        (held_out if is_held_out(path.relative_to(root).as_posix(), fraction) else calibration).append(path)
    return calibration, held_out


def _label_key(raw: str, root: Path, labels_dir: Path) -> str | None:
    """A labels row's file as the judged images are named: '/'-separated, relative to ``root``.

    The forms a user writes resolve: ``./a.png``, ``sub\\a.png``, an absolute path inside ``root``, a path
    relative to the labels file's own folder. None for an absolute path outside ``root``.
    """
    name = raw.strip().replace("\\", "/")
    if os.path.isabs(name):
        try:
            return Path(name).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return None
    name = posixpath.normpath(name)
    if not (root / name).is_file() and (labels_dir / name).is_file():
        try:
            return (labels_dir / name).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return name


def _label_values(path: Path, rows: dict[str, tuple[int, int]], num_classes: int | None) -> None:
    """Class indices a model can have: 0 .. num_classes - 1 (a 1-based file is named as such)."""
    values = [v for v, _ in rows.values()]
    for name, (value, line) in rows.items():
        if value < 0:
            raise UsageError(
                f"labels file '{path}' line {line}: label {value} for '{name}' is negative; labels are class indices 0 .. N-1"
            )
    if num_classes is not None and max(values) >= num_classes:
        name, (value, line) = max(rows.items(), key=lambda kv: kv[1][0])
        hint = (
            f"; its labels run 1 .. {num_classes}: a 1-based file, write each label minus 1"
            if min(values) == 1 and max(values) == num_classes
            else ""
        )
        raise UsageError(
            f"labels file '{path}' line {line}: label {value} for '{name}' is not a class of this "
            f"{num_classes}-class model (0 .. {num_classes - 1}){hint}"
        )


def read_labels_csv(path: Path, root: Path | None = None, num_classes: int | None = None) -> dict[str, int]:
    """``file,label`` CSV (a header row is optional; further columns are ignored; a UTF-8 BOM is read as Excel
    writes it). Files are keyed as the images below ``root`` are named; labels are checked against ``num_classes``;
    one file given two labels is refused."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read labels file '{path}': {getattr(exc, 'strerror', None) or exc}; pass a CSV of file,label rows (UTF-8)"
        ) from None
    found: dict[str, tuple[int, int]] = {}
    for n, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not re.fullmatch(r"-?[0-9]+", row[1].strip()):
            if n == 1:  # the first row may be a header
                continue
            raise UsageError(
                f"labels file '{path}' line {n} is not 'file,label' with a whole-number label (got {','.join(row)[:60]!r})"
            )
        key = row[0].strip().replace("\\", "/") if root is None else _label_key(row[0], root, path.parent)
        if key is None:
            raise UsageError(
                f"labels file '{path}' line {n} names '{row[0].strip()}', which is outside '{root}'; "
                "name the images there, relative to it"
            )
        value = int(row[1])
        if key in found and found[key][0] != value:
            raise UsageError(
                f"labels file '{path}' gives '{key}' two labels: {found[key][0]} (line {found[key][1]}) "
                f"and {value} (line {n}); keep one row per image"
            )
        found.setdefault(key, (value, n))
    if not found:
        raise UsageError(f"labels file '{path}' has no 'file,label' rows")
    _label_values(path, found, num_classes)
    return {k: v for k, (v, _) in found.items()}


def check_label_coverage(labels: dict[str, int], names: list[str], source: str, where: str, min_images: int) -> int:
    """How many of the judged ``names`` have a label; an error when none do, or too few for an accuracy figure.

    A labels file that names other files (a wrong folder, another naming) would otherwise turn the
    accuracy gate off without a word; a few labelled images would make a figure one image can move
    by whole points.
    """
    labelled = sum(name in labels for name in names)
    if labelled == 0:
        raise UsageError(
            f"the {source} names none of the {len(names)} images judged in {where} (its rows name e.g. "
            f"'{next(iter(labels))}'; the images are named by their path below the folder, e.g. "
            f"'{names[0]}'): pass the labels of these images"
        )
    if labelled < len(names) and labelled < min_images:
        missing = next(n for n in names if n not in labels)
        raise UsageError(
            f"only {labelled} of the {len(names)} images judged in {where} have a label in the {source} "
            f"(e.g. '{missing}' has none): an accuracy figure needs at least {min_images}; label them, "
            f"or pass --min-images {labelled}"
        )
    return labelled


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
        raise UsageError(
            f"class names file '{path}' names {len(names)} classes and the model has {num_classes}; "
            "give one name per class, in class order"
        )
    return names


def class_folders(root: Path, paths: list[Path]) -> tuple[list[str] | None, str]:
    """The class names of an ImageFolder layout, or None and why ``root`` is not one.

    As torchvision's ``ImageFolder``: the classes are the sorted sub-folders of ``root`` (symlinked
    ones too), an image anywhere below one belongs to it, and a class folder without an image is
    refused (it would renumber every later class). Unlike it, images directly in ``root`` beside
    class folders are refused (ImageFolder would skip them; here they would be judged unlabelled),
    and a single sub-folder is taken as a folder of images, not one class, and said so.
    """
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not folders:
        return None, f"'{root}' holds no class folders and no --labels file was given"
    loose = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if loose:
        raise UsageError(
            f"{len(loose)} images lie directly in '{root}' beside its {len(folders)} class folders (e.g. "
            f"'{display_name(loose[0].name)}'): move them into their class folder, or pass --labels FILE"
        )
    if len(folders) == 1:
        return None, (
            f"'{root}' has one sub-folder, '{display_name(folders[0])}': taken as a folder of images, not "
            "a class (class folders need one per class)"
        )
    counts = dict.fromkeys(folders, 0)
    for path in paths:
        counts[path.relative_to(root).parts[0]] += 1
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        index = folders.index(empty[0])
        raise UsageError(
            f"class folder '{root / empty[0]}' (class {index} of {len(folders)}) holds no image sk-edge "
            f"reads ({FORMATS}): every later class would be renumbered; add its images or remove it"
        )
    return folders, ""


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
            return read_labels_csv(self.labels_file, self.root, num_classes), f"labels file {self.labels_file}"
        every = find_images(self.root)
        classes, _ = class_folders(self.root, every)
        if classes is None:
            return None, None
        if num_classes is not None and len(classes) > num_classes:
            raise UsageError(
                f"'{self.root}' has {len(classes)} class folders but the model has {num_classes} classes; pass "
                "--labels FILE (a file,label CSV) if the folders are not classes, or the model's --num-classes"
            )
        index = {name: i for i, name in enumerate(classes)}
        table = {self.name_of(p): index[p.relative_to(self.root).parts[0]] for p in every}
        shown = ", ".join(f"{i} '{n}'" for i, n in enumerate(classes[:4])) + (", ..." if len(classes) > 4 else "")
        return table, f"class folders in {self.root} ({len(classes)} classes: {shown})"

    def checked_labels(
        self, num_classes: int | None, min_images: int = MIN_JUDGE_IMAGES
    ) -> tuple[dict[str, int] | None, str | None]:
        """:meth:`labels`, refused when they name none of the judged images or too few of them."""
        table, source = self.labels(num_classes)
        if table is not None:
            names = [self.name_of(p) for p in self.paths()]
            check_label_coverage(table, names, source or "labels", self.describe(), min_images)
        return table, source

    def name_of(self, path: Path) -> str:
        """An image's name in labels, verify.json and the stream: its '/'-separated path below ``root``."""
        return display_name(path.relative_to(self.root).as_posix())

    def unlabelled_reason(self) -> str:
        """Why these images have no labels (for a verdict that applies no accuracy gate)."""
        return class_folders(self.root, find_images(self.root))[1] if self.labels_file is None else ""

    def class_names(self) -> list[str] | None:
        """The sorted class-folder names, when the folder is in ImageFolder layout."""
        if self.labels_file is not None:
            return None
        return class_folders(self.root, find_images(self.root))[0]

    def describe(self) -> str:
        if self.holdout is None:
            return f"'{self.root}'"
        return f"the {self.holdout:.0%} of '{self.root}' held out from calibration"

    def to_dict(self) -> dict:
        return {
            "dir": str(self.root),
            "labels": str(self.labels_file) if self.labels_file else None,
            "holdout": None if self.holdout is None else {"fraction": self.holdout, "rule": HOLDOUT_RULE},
        }


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
        return self.images.describe() if self.images is not None else "no images"


def _check_label_options(images: Path | None, labels: Path | None, eval_images: Path | None, eval_labels: Path | None) -> None:
    """A labels file names the images of its own folder option: refused without it, or when it would judge nothing."""
    if eval_labels is not None and eval_images is None:
        raise UsageError("--eval-labels needs --eval-images DIR (the images the labels name)")
    if labels is not None and images is None:
        raise UsageError("--labels needs --images DIR (the images the labels name)")
    if labels is not None and eval_images is not None:
        raise UsageError(
            "--labels labels --images, which do not judge the build when --eval-images is given; "
            "pass --eval-labels FILE for --eval-images"
        )


def plan_judging(
    model: str,
    precision: str,
    *,
    images: Path | None,
    labels: Path | None,
    eval_images: Path | None,
    eval_labels: Path | None,
    no_verify: bool,
    stored_reference: bool = False,
    from_dir: bool = False,
    min_images: int = MIN_JUDGE_IMAGES,
) -> JudgePlan:
    """Which images judge a build, decided before any work (a pure function of the options and the folders).

    ``--eval-images`` first; the bundled reference model has its own held-out set; else the part
    of ``--images`` an INT8 build holds out from calibration (all of it for FP16/FP32, which
    calibrate on nothing); else, in a work directory from the host, its stored PyTorch outputs.
    With none of these, the build is refused unless ``--no-verify``.
    """
    from .reference import NAME as REFERENCE

    _check_label_options(images, labels, eval_images, eval_labels)
    if no_verify:
        return JudgePlan(skip=True)
    if eval_images is not None:
        judged = JudgeImages(Path(eval_images), eval_labels)
    elif model == REFERENCE and labels is None:
        return JudgePlan(default_set=True)
    elif images is not None:
        judged = JudgeImages(Path(images), labels, HOLDOUT_FRACTION if precision == "int8" else None)
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
    count = len(judged.paths())
    if count < min_images:
        fix = (
            f"add images to '{judged.root}' (about {int(min_images / HOLDOUT_FRACTION)} in all) or pass --eval-images DIR"
            if judged.holdout is not None
            else f"add images to '{judged.root}'"
        )
        raise too_few_images(count, judged.describe(), min_images, fix, planned=True)
    return JudgePlan(judged)
