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
FIELDS = ("input_size", "mean", "std", "resize", "crop_pct", "interpolation", "channel_order")


def parse_size(value) -> int | tuple[int, int]:
    """``64``, ``"64"``, ``"224x320"`` (height x width), ``[224, 320]`` or timm's ``(3, 224, 320)``."""
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"input size '{value}' is not N or HxW (for example 224 or 224x320)") from None
    elif isinstance(value, (list, tuple)):
        numbers = [int(v) for v in value][-2:] if len(value) == 3 else [int(v) for v in value]
    else:
        numbers = [int(value)]
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
    """

    input_size: int | tuple[int, int] = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    channel_order: str = "RGB"

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
        if not (0 < self.crop_pct <= 1) or not math.isfinite(self.crop_pct):
            raise UsageError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise UsageError(f"{name} must be three finite numbers (R,G,B), got {values}")
        if min(self.std) <= 0:
            raise UsageError(f"std must be positive, got {self.std}")

    def describe(self) -> str:
        resize = {"resize": "stretch", "crop": f"crop {self.crop_pct:g}", "letterbox": "letterbox"}[self.resize]
        return (f"{self.height}x{self.width}, {resize}, {self.interpolation}, mean ({', '.join(f'{v:g}' for v in self.mean)}), "
                f"std ({', '.join(f'{v:g}' for v in self.std)}), {self.channel_order}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(input_size=self.input_size if isinstance(self.input_size, int) else [self.height, self.width],
                 mean=list(self.mean), std=list(self.std), layout="NCHW", scale=1 / 255)
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


def _triple(value, what: str, source: str) -> tuple[float, float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} from {source} is not three numbers R,G,B (got {value!r})") from None
    if len(numbers) != 3:
        raise UsageError(f"{what} from {source} needs three numbers R,G,B, got {len(numbers)}")
    return numbers  # type: ignore[return-value]


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
            kw["crop_pct"] = float(fields["crop_pct"])
        if fields.get("interpolation") is not None:
            kw["interpolation"] = str(fields["interpolation"])
        if fields.get("channel_order") is not None:
            kw["channel_order"] = str(fields["channel_order"]).upper()
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
    def from_checkpoint(cls, checkpoint: dict, path: Path) -> "PreprocessRequest | None":
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
