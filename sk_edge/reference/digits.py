"""SK-Digits: real handwritten digits drawn at several scales on real photographs.

The domain of sk-edge's bundled reference model, its calibration images and its held-out
evaluation set. Each 64x64 RGB image shows one of OpenCV's 5000 handwritten digits (20x20
pixels each, 500 per class, ``assets/digits.png``) resized to a side between 16 and 60
pixels, placed anywhere inside a crop of one of 19 photographs (``assets/backgrounds``),
both from Debian's ``opencv-doc`` package (see ``calib_data/README.md``). Objects therefore
appear at a 3.75x range of scales, which is what SKNet's kernel selection responds to.

Splits use disjoint digits: of each class's 500 digits, the first 300 are for training,
the next 100 for evaluation and the last 100 for calibration, so the calibration and
evaluation images never share a digit. Rendering is deterministic for a given split and
seed.

    python -m sk_edge.reference.digits calib calib_data/skdigits --count 512
    python -m sk_edge.reference.digits eval  WORKDIR/eval --count 1000
"""

from __future__ import annotations

import argparse
import csv
import functools
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

ASSETS = Path(__file__).parent / "assets"
CANVAS = 64
DIGIT_PIXELS = 20
SIZE_RANGE = (16, 60)  # side of the drawn digit, in canvas pixels
CLASSES = 10
SPLITS = {"train": (0, 300), "eval": (300, 400), "calib": (400, 500)}
SPLIT_SEEDS = {"train": 0, "eval": 1, "calib": 2}


@functools.lru_cache(maxsize=1)
def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's digits: (5000, 20, 20) uint8 images, white on black, and their labels.

    digits.png is 50 rows of 100 digits; each class fills five consecutive rows.
    """
    sheet = np.asarray(Image.open(ASSETS / "digits.png").convert("L"))
    rows, cols = sheet.shape[0] // DIGIT_PIXELS, sheet.shape[1] // DIGIT_PIXELS
    cells = sheet.reshape(rows, DIGIT_PIXELS, cols, DIGIT_PIXELS).swapaxes(1, 2)
    images = cells.reshape(rows * cols, DIGIT_PIXELS, DIGIT_PIXELS)
    labels = np.repeat(np.arange(CLASSES), len(images) // CLASSES)
    return images, labels


@functools.lru_cache(maxsize=1)
def backgrounds() -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(p).convert("RGB")) for p in sorted((ASSETS / "backgrounds").glob("*.jpg")))


def split_indices(split: str) -> np.ndarray:
    """Indices into :func:`source_digits` of one split, class by class."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    lo, hi = SPLITS[split]
    per_class = len(source_digits()[0]) // CLASSES
    return np.concatenate([c * per_class + np.arange(lo, hi) for c in range(CLASSES)])


def render(
    digit: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
    size: int | None = None,
    center: bool = False,
) -> np.ndarray:
    """One 64x64x3 uint8 image: ``digit`` drawn ``size`` pixels wide on a crop of ``background``.

    ``size`` defaults to a random side in :data:`SIZE_RANGE`; ``center`` places the digit in
    the middle (for scale studies: the same digit at 1.0x, 1.5x, 2.0x about the centre).
    """
    h, w, _ = background.shape
    crop = int(rng.integers(CANVAS, min(h, w) + 1))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    bg = Image.fromarray(background[y0 : y0 + crop, x0 : x0 + crop]).resize((CANVAS, CANVAS), Image.Resampling.BILINEAR)
    # Dim the photograph so that the strokes stay the brightest thing in the frame.
    canvas = np.asarray(bg, dtype=np.float32) * rng.uniform(0.35, 0.75)
    size = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1)) if size is None else size
    if not 1 <= size <= CANVAS:
        raise ValueError(f"digit size must be 1..{CANVAS}, got {size}")
    glyph = Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR)
    alpha = np.asarray(glyph, dtype=np.float32)[..., None] / 255.0
    if center:
        y, x = (CANVAS - size) // 2, (CANVAS - size) // 2
    else:
        y, x = int(rng.integers(0, CANVAS - size + 1)), int(rng.integers(0, CANVAS - size + 1))
    color = rng.uniform(190, 255, size=3).astype(np.float32)
    region = canvas[y : y + size, x : x + size]
    canvas[y : y + size, x : x + size] = region * (1 - alpha) + color * alpha
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def sample(split: str, count: int, seed: int | None = None) -> Iterator[tuple[np.ndarray, int, int]]:
    """``count`` deterministic (image, label, digit size) triples from ``split``.

    Digits are taken class-balanced and in a shuffled order; a split is cycled through
    again (with new placements) when ``count`` exceeds its size.
    """
    images, labels = source_digits()
    rng = np.random.default_rng(SPLIT_SEEDS[split] if seed is None else seed)
    indices = split_indices(split)
    order = np.concatenate([rng.permutation(indices) for _ in range(-(-count // len(indices)))])[:count]
    bgs = backgrounds()
    for i in order:
        size = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
        bg = bgs[int(rng.integers(len(bgs)))]
        yield render(images[i], bg, rng, size=size), int(labels[i]), size


def write_split(split: str, out_dir: str | Path, count: int, fmt: str = "png") -> Path:
    """Write ``count`` images of ``split`` and ``labels.csv`` (file,label,size) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_path = out_dir / "labels.csv"
    with open(labels_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "size"])
        for n, (image, label, size) in enumerate(sample(split, count)):
            name = f"{split}_{n:04d}_{label}.{fmt}"
            params: dict[str, Any] = {"quality": 92} if fmt in ("jpg", "jpeg", "webp") else {}
            Image.fromarray(image).save(out_dir / name, **params)
            writer.writerow([name, label, size])
    return labels_path


def write_split_once(workdir: Path, name: str, split: str, count: int, what: str, log=lambda msg: None) -> Path:
    """``WORKDIR/name``: ``count`` images of the SK-Digits ``split``, rendered from the bundled sources once.

    Rendering is deterministic (the same bytes as calib_data/ in a checkout), and atomic: a
    temporary folder renamed into place, so an interrupted render is redone, never half used. A
    ``WORKDIR/name`` that is not that set (a user's own folder) is never removed or written into.
    """
    import shutil

    from ..errors import SkEdgeError
    from ..images import find_images
    from ..workdir import render_temporary

    folder = Path(workdir) / name
    if folder.exists() or folder.is_symlink():
        if folder.is_dir() and (folder / "labels.csv").is_file() and len(find_images(folder)) == count:
            return folder
        raise SkEdgeError(
            f"'{folder}' is not the {count} {what} images sk-edge renders there (labels.csv and {count} "
            "images), and sk-edge never overwrites it: move it away, or pass your own images "
            "(--eval-images DIR / --images DIR)"
        )
    log(f"rendering the {count} {what} images into {folder} ...")
    tmp = Path(workdir) / render_temporary(name)
    if tmp.is_dir() and not tmp.is_symlink():  # an interrupted render of ours (this exact name)
        shutil.rmtree(tmp)
    write_split(split, tmp, count)
    tmp.rename(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description="Render an SK-Digits split to image files.")
    parser.add_argument("split", choices=list(SPLITS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--format", default="png", choices=["png", "jpg", "bmp", "webp"])
    args = parser.parse_args()
    path = write_split(args.split, args.out_dir, args.count, args.format)
    print(f"wrote {args.count} images and {path}")


if __name__ == "__main__":
    main()
