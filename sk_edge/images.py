"""Image loading shared by every stage: calibration, verification, analysis, the runtime.

Files are decoded with Pillow (the extensions torchvision's ImageFolder reads: JPEG, PNG, BMP,
WebP, TIFF, PPM, PGM), converted to RGB (EXIF orientation ignored, as torchvision's and timm's
loaders do, unless the preprocessing says ``exif_orientation="apply"``), resized the way the model's :class:`~sk_edge.preprocess.Preprocess` says, scaled
to [0, 1], normalised with mean/std and laid out NCHW float32. Unreadable or corrupt
files are skipped and reported by name, never fatal on their own; too few readable
images is an error that says how many were found.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import artifacts
from .errors import SkEdgeError, UsageError
from .preprocess import Preprocess

# torchvision's IMG_EXTENSIONS: a class stored as .tif must not be an empty class that renumbers the rest.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
FORMATS = "JPEG, PNG, BMP, WebP, TIFF, PPM or PGM"
# What Pillow raises on a file it cannot decode: a damaged file is skipped and named, never a traceback.
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _walk_images(directory: Path) -> Iterator[Path]:
    """Image files below ``directory``, following symlinked folders as ImageFolder does (each real folder once,
    so a link to a parent cannot loop)."""
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(directory, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        for name in files:
            path = Path(top) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                yield path


def find_images(directory: str | Path) -> list[Path]:
    """Every image file below ``directory`` (recursively, symlinked folders followed), in a stable sorted order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"image directory '{directory}' does not exist or is not a directory")
    paths = sorted(_walk_images(directory))
    if not paths:
        raise SkEdgeError(f"no images in '{directory}': sk-edge reads {', '.join(IMAGE_EXTENSIONS)} files (searched recursively)")
    return paths


def resized_size(width: int, height: int, pre: Preprocess) -> tuple[int, int]:
    """(width, height) an image is resized to before the crop or the padding: torchvision's rules.

    crop, square input S: the short side to floor(S / crop_pct), the long side in proportion,
    truncated (torchvision's Resize(int), which timm's eval transform uses); crop, H x W input:
    the smallest size, aspect kept and rounded, that covers floor(H / crop_pct) x floor(W / crop_pct)
    (timm's ResizeKeepRatio, its eval transform for a non-square size);
    stretch: the input size; letterbox: the largest size that fits, aspect kept, rounded.
    """
    if pre.resize == "resize":
        return pre.width, pre.height
    if pre.resize == "letterbox":
        scale = min(pre.width / width, pre.height / height)
        return max(1, min(pre.width, round(width * scale))), max(1, min(pre.height, round(height * scale)))
    if pre.height != pre.width:  # timm's ResizeKeepRatio: cover the (H, W) / crop_pct window, aspect kept
        target_h, target_w = math.floor(pre.height / pre.crop_pct), math.floor(pre.width / pre.crop_pct)
        ratio = min(height / target_h, width / target_w)
        return round(width / ratio), round(height / ratio)
    target = math.floor(pre.width / pre.crop_pct)
    if width <= height:
        return target, int(target * height / width)
    return int(target * width / height), target


def resample(image: Image.Image, size: tuple[int, int], filter_name: str) -> Image.Image:
    """Pillow's resize, one axis at a time: the width first, then the height.

    Pillow resizes both axes in one call with a separable filter, rounding to 8 bits between the
    two passes, and since 13.0 it may run the vertical pass first, which moves some pixels by one
    level. Asking for one axis per call fixes the order, so the pixels are the same under every
    Pillow release (a Jetson's may be older than the host's) and the C++ runtime's reference
    reproduces them exactly.
    """
    method = _RESAMPLING.get(filter_name, Image.Resampling.BILINEAR)
    width, height = size
    if width != image.width:
        image = image.resize((width, image.height), method)
    if height != image.height:
        image = image.resize((width, height), method)
    return image


def _resize(image: Image.Image, pre: Preprocess) -> Image.Image:
    new_w, new_h = resized_size(image.width, image.height, pre)
    image = resample(image, (new_w, new_h), pre.interpolation)
    if pre.resize == "resize":
        return image
    if pre.resize == "letterbox":
        # The rest is the mean colour, so that padding normalises to (about) zero.
        fill = tuple(int(round(m * 255)) for m in pre.mean)
        canvas = Image.new("RGB", (pre.width, pre.height), fill)
        canvas.paste(image, ((pre.width - new_w) // 2, (pre.height - new_h) // 2))
        return canvas
    # torchvision's CenterCrop: offsets rounded (half to even, as Python's round).
    left, top = int(round((new_w - pre.width) / 2.0)), int(round((new_h - pre.height) / 2.0))
    return image.crop((left, top, left + pre.width, top + pre.height))


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


def _oriented(image: Image.Image, pre: Preprocess) -> Image.Image:
    """The image turned as its EXIF orientation says, when the preprocessing applies it.

    Off by default: torchvision's and timm's loaders (``Image.open(f).convert("RGB")``) ignore the
    tag, so a model trained with them saw rotated photos as stored. Damaged metadata is not the
    pixels' fault: the image is then used as stored.
    """
    if pre.exif_orientation != "apply":
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF; the pixels are still good
        return image


def to_pixels(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """A decoded image resized as the model expects: (S, S, 3) uint8 RGB, before normalisation."""
    return np.asarray(_resize(_to_8bit(_oriented(image, pre)).convert("RGB"), pre), dtype=np.uint8)


def normalize(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(..., S, S, 3) uint8 pixels -> (..., 3, S, S) float32 network input.

    The same element-wise float32 arithmetic for one image or a batch, so pixels stored on the
    host (sk_edge.stored_reference) give the device exactly the tensors the host judged.
    """
    arr: np.ndarray = pixels.astype(np.float32) / 255.0
    arr = (arr - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    if pre.channel_order == "BGR":  # mean and std are R, G, B: normalise first, then reorder
        arr = arr[..., ::-1]
    return np.ascontiguousarray(np.moveaxis(arr, -1, -3))


def to_tensor(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """A decoded image as the network input: (3, S, S) float32, normalised."""
    return normalize(to_pixels(image, pre), pre)


def display_name(name: str) -> str:
    """A file name as it can be printed and stored in JSON: undecodable bytes shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _skip_reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return f"not an image Pillow can read ({FORMATS})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def load_image(path: str | Path, pre: Preprocess) -> np.ndarray:
    """Read and preprocess one file; raises OSError/ValueError on unreadable files."""
    with Image.open(path) as image:
        image.load()
        return to_tensor(image, pre)


# An image's identity by content, whatever its name or folder: the first 64 bits of its file's sha256
# (a chance collision in a few thousand images is about 1e-12).
CONTENT_ID_CHARS = 16


def content_id(path: Path) -> str:
    return artifacts.sha256_file(path)[:CONTENT_ID_CHARS]


def _digest_entry(name: str, sha256: str) -> bytes:
    """One image in a digest of images: its name and its content's sha256."""
    return name.encode() + b"\0" + bytes.fromhex(sha256)


def images_digest(names: list[str], paths: list[Path]) -> str:
    """The images by name and content, as :attr:`ImageStream.digest` computes it when every file reads."""
    digest = hashlib.sha256()
    for name, path in zip(names, paths):
        digest.update(_digest_entry(name, artifacts.sha256_file(path)))
    return digest.hexdigest()


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
    content_ids: list[str] = field(default_factory=list, repr=False)  # content_id() of each image used
    short_sides: list[int] = field(default_factory=list, repr=False)  # each used image's short side, as stored
    _hash: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)

    def _name(self, path: Path) -> str:
        return display_name(path.relative_to(self.root).as_posix() if self.root else path.name)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def refuse_if_too_few(self) -> None:
        """Raise now, before any work, when fewer files than ``count`` were given (saying how many are readable):
        iteration would raise the same, but only after the caller's set-up."""
        if self.count is not None and len(self.paths) < self.count:
            raise self._not_enough(self.paths)

    def _not_enough(self, rest: list[Path]) -> SkEdgeError:
        where = f"'{self.root}'" if self.root else "the given files"
        found = len(self.used)
        for path in rest:  # say exactly how many of the unread files are usable
            try:
                with Image.open(path) as image:
                    image.load()
                found += 1
            except DECODE_ERRORS as exc:
                self.skipped.append((self._name(path), _skip_reason(exc)))
        skipped = ""
        if self.skipped:
            names = ", ".join(f"{n} ({why})" for n, why in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            skipped = f"; {len(self.skipped)} unreadable skipped: {names}{more}"
        if found == 0:
            return SkEdgeError(f"no readable image in {where}{skipped}; add {FORMATS} images there")
        return SkEdgeError(
            f"only {found} readable images in {where}, {self.count} asked for{skipped}; add images or pass --num-images {found}"
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
                    short_side = min(image.size)
                digest = artifacts.sha256_file(path)
            except DECODE_ERRORS as exc:
                self.skipped.append((name, _skip_reason(exc)))
                if self.count is not None and len(self.used) + len(self.paths) - i - 1 < self.count:
                    raise self._not_enough(self.paths[i + 1 :]) from None
                continue
            self._hash.update(_digest_entry(name, digest))
            self.used.append(name)
            self.content_ids.append(digest[:CONTENT_ID_CHARS])
            self.short_sides.append(short_side)
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
