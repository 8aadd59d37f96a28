"""Input preprocessing settings that travel with a model.

The export stage records them in ``export.json`` (and every engine sidecar) so that calibration,
verification, the runtimes and the application on the device prepare images exactly the same way.

Where they come from, first found wins, field by field: the command line (``--mean``,
``--resize``...), a ``--preprocess FILE.json``, the fields a checkpoint carries (sk-edge's own
top-level ``mean``/``std``/``input_size``/... or timm's ``pretrained_cfg``), the model's own
defaults. :func:`resolve` says which source gave each field, so export can print it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "resize" stretches to the input size (called "stretch" on the command line); "crop" resizes and
# takes the central window (torchvision's Resize + CenterCrop); "letterbox" fits the whole image
# and pads the rest with the mean colour (zero after normalisation).
RESIZE_MODES = ("crop", "resize", "letterbox")
CLI_RESIZE = {"crop": "crop", "stretch": "resize", "letterbox": "letterbox"}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CHANNEL_ORDERS = ("RGB", "BGR")
# "ignore": the pixels as stored, as torchvision's and timm's loaders read them; "apply": turned upright
# as the EXIF orientation tag says (what a photo viewer shows, and what OpenCV's imread does).
EXIF_ORIENTATIONS = ("ignore", "apply")
FIELDS = ("input_size", "mean", "std", "resize", "crop_pct", "interpolation", "channel_order", "exif_orientation")
# Sides beyond this are no network input (TensorRT's and ONNX Runtime's tensors, and the memory of a
# batch, give out first): refused as a typo (224000 for 224) before any work.
MAX_SIDE = 8192
# The resize before a centre crop is side / crop_pct: below this share the image is resized to over
# 20x its input side, which no eval transform does (timm's lowest is about 0.8).
MIN_CROP_PCT = 0.05


def parse_size(value) -> int | tuple[int, int]:
    """``64``, ``"64"``, ``"224x320"`` (height x width), ``[224, 320]`` or timm's ``(3, 224, 320)``."""
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"input size '{value}' is not N or HxW (for example 224 or 224x320)") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        numbers = list(value)[-2:] if len(value) == 3 else list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        numbers = [value]
    else:
        raise UsageError(f'input size {value!r} is not N or HxW (for example 224, "224x320" or [224, 320])')
    if len(numbers) not in (1, 2) or min(numbers) < 1:
        raise UsageError(f"input size {value!r} is not N or HxW with positive sides")
    if len(numbers) == 2 and numbers[0] != numbers[1]:
        return numbers[0], numbers[1]
    return numbers[0]


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the network input (NCHW float32).

    Attributes:
        input_size: side of a square network input, or (height, width).
        mean, std: per-channel (R, G, B) normalisation of pixel values scaled to [0, 1].
        resize: ``"crop"`` resizes so that the input is ``crop_pct`` of the image and takes the
            central window (torchvision/timm's eval transform); ``"resize"`` stretches the whole
            image to the input size; ``"letterbox"`` fits the whole image, keeping its aspect
            ratio, and pads with the mean colour.
        interpolation: Pillow resampling filter name (``"bilinear"``, ``"bicubic"``, ``"nearest"``).
        channel_order: the channel order the network was trained on (``"BGR"`` for OpenCV-trained models).
        exif_orientation: ``"ignore"`` (default: the stored pixels, as torchvision and timm load them)
            or ``"apply"`` (turn photos upright by their EXIF tag, as OpenCV's ``imread`` does).
    """

    input_size: int | tuple[int, int] = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    exif_orientation: str = "ignore"

    @property
    def height(self) -> int:
        return self.input_size[0] if isinstance(self.input_size, tuple) else self.input_size

    @property
    def width(self) -> int:
        return self.input_size[1] if isinstance(self.input_size, tuple) else self.input_size

    def validate(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"resize mode must be crop, stretch or letterbox, got '{self.resize}'")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{self.interpolation}'")
        if self.channel_order not in CHANNEL_ORDERS:
            raise UsageError(f"channel order must be RGB or BGR, got '{self.channel_order}'")
        if self.exif_orientation not in EXIF_ORIENTATIONS:
            raise UsageError(f"exif_orientation must be ignore or apply, got '{self.exif_orientation}'")
        if not isinstance(self.crop_pct, (int, float)) or not (MIN_CROP_PCT <= self.crop_pct <= 1):
            raise UsageError(f"crop_pct must be a number from {MIN_CROP_PCT} to 1 (timm's are 0.8 to 1), got {self.crop_pct!r}")
        if max(self.height, self.width) > MAX_SIDE:
            raise UsageError(
                f"input size {self.height}x{self.width} is over {MAX_SIDE} pixels a side; a network input is "
                "a few hundred (224, 384): check the number"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise UsageError(f"{name} must be three finite numbers (R,G,B), got {values}")
        if min(self.std) <= 0:
            raise UsageError(f"std must be positive, got {self.std}")

    def describe(self) -> str:
        resize = {"resize": "stretch", "crop": f"crop {self.crop_pct:g}", "letterbox": "letterbox"}[self.resize]
        exif = ", EXIF orientation applied" if self.exif_orientation == "apply" else ""
        return (
            f"{self.height}x{self.width}, {resize}, {self.interpolation}, mean ({', '.join(f'{v:g}' for v in self.mean)}), "
            f"std ({', '.join(f'{v:g}' for v in self.std)}), {self.channel_order}{exif}"
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(
            input_size=self.input_size if isinstance(self.input_size, int) else [self.height, self.width],
            mean=list(self.mean),
            std=list(self.std),
            layout="NCHW",
            scale=1 / 255,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k in ("mean", "std"):
            if k in kwargs:
                kwargs[k] = tuple(float(v) for v in kwargs[k])
        if "input_size" in kwargs:
            kwargs["input_size"] = parse_size(kwargs["input_size"])
        return cls(**kwargs)


def _number(value, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{what} from {source} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{what} from {source} must be a number, got {value!r}") from None


def _triple(value, what: str, source: str) -> tuple[float, float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} from {source} is not three numbers R,G,B (got {value!r})") from None
    if len(numbers) != 3:
        raise UsageError(f"{what} from {source} needs three numbers R,G,B, got {len(numbers)}")
    return (numbers[0], numbers[1], numbers[2])


@dataclass(frozen=True)
class PreprocessRequest:
    """Preprocessing fields from one source; None where that source says nothing."""

    source: str = "the command line"
    input_size: int | tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    channel_order: str | None = None
    exif_orientation: str | None = None

    def given(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f) is not None}

    @classmethod
    def from_fields(cls, fields: dict, source: str) -> "PreprocessRequest":
        """Fields as a user writes them (a --preprocess file, a checkpoint): CLI spellings accepted."""
        unknown = sorted(set(fields) - set(FIELDS) - {"layout", "scale"})
        if unknown:
            raise UsageError(f"{source} has unknown preprocessing field '{unknown[0]}' (known: {', '.join(FIELDS)})")
        kw: dict = {}
        if fields.get("input_size") is not None:
            kw["input_size"] = parse_size(fields["input_size"])
        for name in ("mean", "std"):
            if fields.get(name) is not None:
                kw[name] = _triple(fields[name], name, source)
        if fields.get("resize") is not None:
            mode = str(fields["resize"])
            kw["resize"] = CLI_RESIZE.get(mode, mode)
        if fields.get("crop_pct") is not None:
            kw["crop_pct"] = _number(fields["crop_pct"], "crop_pct", source)
        for name in ("resize", "interpolation", "channel_order", "exif_orientation"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                raise UsageError(f"{name} from {source} must be a string, got {fields[name]!r}")
        if fields.get("interpolation") is not None:
            kw["interpolation"] = fields["interpolation"]
        if fields.get("channel_order") is not None:
            kw["channel_order"] = fields["channel_order"].upper()
        if fields.get("exif_orientation") is not None:
            kw["exif_orientation"] = fields["exif_orientation"]
        return cls(source=source, **kw)

    @classmethod
    def from_json_file(cls, path: Path) -> "PreprocessRequest":
        try:
            fields = json.loads(Path(path).read_text())
        except OSError as exc:
            raise UsageError(f"cannot read --preprocess file '{path}': {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"--preprocess file '{path}' is not valid JSON ({exc})") from None
        if not isinstance(fields, dict):
            raise UsageError(f"--preprocess file '{path}' must hold a JSON object of preprocessing fields")
        return cls.from_fields(fields, f"--preprocess {path}")

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping, path: Path) -> "PreprocessRequest | None":
        """sk-edge's own top-level fields, or timm's ``pretrained_cfg`` (its ``crop_mode`` names the resize)."""
        own = {k: checkpoint[k] for k in FIELDS if k in checkpoint}
        cfg = checkpoint.get("pretrained_cfg")
        if not own and isinstance(cfg, dict):
            own = {k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation") if k in cfg}
            mode = cfg.get("crop_mode")
            if mode in ("center", "squash", "border"):
                own["resize"] = {"center": "crop", "squash": "resize", "border": "letterbox"}[mode]
        if not own:
            return None
        return cls.from_fields(own, f"the checkpoint {Path(path).name}")


def requests_from(fields: dict | None, file: Path | None, source: str) -> list[PreprocessRequest] | None:
    """The preprocessing a user asked for: ``fields`` given directly (named ``source``) before a
    ``--preprocess`` file, the first winning; None when neither was given."""
    requests = []
    if fields:
        requests.append(PreprocessRequest.from_fields(dict(fields), source))
    if file is not None:
        requests.append(PreprocessRequest.from_json_file(Path(file)))
    return requests or None


def resolve(default: Preprocess, requests: list[PreprocessRequest | None], default_source: str) -> tuple[Preprocess, dict]:
    """``default`` with each field taken from the first request that gives it; and field -> source."""
    values, sources = {}, {}
    for request in requests:
        if request is None:
            continue
        for name, value in request.given().items():
            if name not in values:
                values[name], sources[name] = value, request.source
    pre = dataclasses.replace(default, **values)
    pre.validate()
    return pre, {f: sources.get(f, default_source) for f in FIELDS}


def sources_line(sources: dict) -> str:
    """``from the checkpoint m3.pth: input_size, mean, std; the model's defaults: the rest``."""
    by_source: dict[str, list[str]] = {}
    for field, source in sources.items():
        by_source.setdefault(source, []).append(field)
    return "; ".join(f"{source}: {', '.join(fields)}" for source, fields in by_source.items())


# Where a field's value is not the user's or the checkpoint's (models.registry names these sources).
DEFAULT_SOURCES = ("the model's defaults", "timm's pretrained config")
# The fields a model's accuracy depends on (channel order and EXIF orientation defaults are nearly always right).
ACCURACY_FIELDS = ("input_size", "mean", "std", "resize", "crop_pct", "interpolation")


def defaulted_caution(sources: dict | None, trained_checkpoint: bool, resize: str = "crop") -> str | None:
    """A caution when a user's trained checkpoint is run with preprocessing nobody gave: a model fine-tuned at
    64x64 with mean/std 0.5 judged at timm's 224 ImageNet settings agrees with itself and is wrong.
    (crop_pct counts only for the crop resize.)"""
    if not trained_checkpoint or not sources:
        return None
    defaulted = [f for f in ACCURACY_FIELDS if sources.get(f) in DEFAULT_SOURCES and (f != "crop_pct" or resize == "crop")]
    if not defaulted:
        return None
    where = sources[defaulted[0]]
    return (
        f"preprocessing {', '.join(defaulted)} came from {where}, not from the checkpoint or you: if the model "
        "was trained otherwise, every figure here is for the wrong inputs; pass them (--input-size, --mean, --std, "
        "--resize, --crop-pct, --interpolation, or --preprocess FILE.json)"
    )


def upsampling_caution(short_sides: list[int], pre: Preprocess, what: str) -> str | None:
    """A caution when the images are much smaller than the input (median short side under half of it): a model
    trained on such images wants their size as its input size."""
    if not short_sides:
        return None
    median = sorted(short_sides)[len(short_sides) // 2]
    side = min(pre.height, pre.width)
    if 2 * median >= side:
        return None
    return (
        f"the {what} are upsampled: their median short side is {median} px for a {pre.height}x{pre.width} input; "
        f"a model trained on {median} px images wants --input-size {median}"
    )
