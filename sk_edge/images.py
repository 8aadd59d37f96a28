"""Image loading shared by every stage: calibration, verification, analysis, the runtime.

Files are decoded with Pillow (JPEG, PNG, BMP, WebP), EXIF orientation applied, converted
to RGB, resized the way the model's :class:`~sk_edge.preprocess.Preprocess` says, scaled
to [0, 1], normalised with mean/std and laid out NCHW float32. Unreadable or corrupt
files are skipped and reported by name, never fatal on their own; too few readable
images is an error that says how many were found.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import artifacts
from .errors import SkEdgeError, UsageError
from .preprocess import Preprocess

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def find_images(directory: str | Path) -> list[Path]:
    """Every image file below ``directory`` (recursively), in a stable sorted order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"image directory '{directory}' does not exist or is not a directory")
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise SkEdgeError(
            f"no images in '{directory}': sk-edge reads {', '.join(IMAGE_EXTENSIONS)} files (searched recursively)"
        )
    return paths


def _resize(image: Image.Image, pre: Preprocess) -> Image.Image:
    resample = _RESAMPLING.get(pre.interpolation, Image.Resampling.BILINEAR)
    size = pre.input_size
    if pre.resize == "resize":
        return image.resize((size, size), resample)
    # "crop": short side to size / crop_pct, then the central size x size square.
    short = max(size, int(size / pre.crop_pct))
    w, h = image.size
    scale = short / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer images scaled to 8 bits.

    Pillow's convert("RGB") clips an "I;16" image at 255 instead of scaling it (a 16-bit PNG
    would come out almost white), so such images are scaled by their bit depth first.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        depth = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2.0**31 - 1
        return Image.fromarray(np.clip(np.rint(values / depth * 255.0), 0, 255).astype(np.uint8), "L")
    return image


def to_pixels(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """A decoded image resized as the model expects: (S, S, 3) uint8 RGB, before normalisation."""
    return np.asarray(_resize(_to_8bit(ImageOps.exif_transpose(image)).convert("RGB"), pre), dtype=np.uint8)


def normalize(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(..., S, S, 3) uint8 pixels -> (..., 3, S, S) float32 network input.

    The same element-wise float32 arithmetic for one image or a batch, so pixels stored on the
    host (sk_edge.stored_reference) give the device exactly the tensors the host judged.
    """
    arr = pixels.astype(np.float32) / 255.0
    arr = (arr - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(arr, -1, -3))


def to_tensor(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """A decoded image as the network input: (3, S, S) float32, normalised."""
    return normalize(to_pixels(image, pre), pre)


def display_name(name: str) -> str:
    """A file name as it can be printed and stored in JSON: undecodable bytes shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _skip_reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (JPEG, PNG, BMP, WebP)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def load_image(path: str | Path, pre: Preprocess) -> np.ndarray:
    """Read and preprocess one file; raises OSError/ValueError on unreadable files."""
    with Image.open(path) as image:
        image.load()
        return to_tensor(image, pre)


@dataclass
class ImageStream:
    """Batches of preprocessed images, read lazily so memory does not grow with their number.

    Takes the first ``count`` readable files of ``paths`` (callers shuffle if they want a
    sample), or every readable file when ``count`` is None. Unreadable files are skipped and
    listed in :attr:`skipped`; as soon as the remaining files cannot make up ``count``,
    iteration raises with the numbers.
    :attr:`digest` hashes the names and bytes of the images used, in order.
    """

    paths: list[Path]
    pre: Preprocess
    batch: int
    count: int | None
    root: Path | None = None
    keep_pixels: bool = False  # also keep each image's uint8 pixels (before normalisation) in :attr:`pixels`
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list, repr=False)
    used: list[str] = field(default_factory=list)
    _hash: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)

    def _name(self, path: Path) -> str:
        return display_name(str(path.relative_to(self.root)) if self.root else path.name)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def _not_enough(self, rest: list[Path]) -> SkEdgeError:
        where = f"'{self.root}'" if self.root else "the given files"
        found = len(self.used)
        for path in rest:  # say exactly how many of the unread files are usable
            try:
                with Image.open(path) as image:
                    image.load()
                found += 1
            except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                self.skipped.append((self._name(path), _skip_reason(exc)))
        skipped = ""
        if self.skipped:
            names = ", ".join(f"{n} ({why})" for n, why in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            skipped = f"; {len(self.skipped)} unreadable skipped: {names}{more}"
        if found == 0:
            return SkEdgeError(f"no readable image in {where}{skipped}; add JPEG, PNG, BMP or WebP images there")
        return SkEdgeError(
            f"only {found} readable images in {where}, {self.count} asked for{skipped}; "
            f"add images or pass --num-images {found}"
        )

    def __iter__(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        batch: list[np.ndarray] = []
        names: list[str] = []
        for i, path in enumerate(self.paths):
            if self.count is not None and len(self.used) == self.count:
                break
            name = self._name(path)
            try:
                # Pillow identifies the file from its header before anything else is read, so a
                # huge file that is not an image costs a few bytes, not its size in memory.
                with Image.open(path) as image:
                    image.load()
                    pixels = to_pixels(image, self.pre)
                digest = artifacts.sha256_file(path)
            except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                self.skipped.append((name, _skip_reason(exc)))
                if self.count is not None and len(self.used) + len(self.paths) - i - 1 < self.count:
                    raise self._not_enough(self.paths[i + 1 :]) from None
                continue
            self._hash.update(name.encode() + b"\0" + bytes.fromhex(digest))
            self.used.append(name)
            batch.append(normalize(pixels, self.pre))
            if self.keep_pixels:
                self.pixels.append(pixels)
            names.append(name)
            if len(batch) == self.batch:
                yield np.stack(batch), names
                batch, names = [], []
        if batch:
            yield np.stack(batch), names
        if self.count is not None and len(self.used) < self.count:
            raise self._not_enough([])


def sample_paths(paths: list[Path], seed: int = 0) -> list[Path]:
    """A deterministic shuffle, so that taking the first N files samples every folder."""
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]
