"""Input preprocessing settings that travel with a model.

The export stage records them in ``export.json`` so that calibration, verification and
the application on the device prepare images exactly the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the network input (NCHW float32).

    Attributes:
        input_size: side of the square network input, in pixels.
        mean, std: per-channel normalisation applied to pixel values scaled to [0, 1].
        crop_pct: ``resize`` mode ``"crop"`` resizes the short side to
            ``input_size / crop_pct`` and takes the central square; ``"resize"`` stretches
            the whole image to ``input_size`` and ignores ``crop_pct``.
        interpolation: Pillow resampling filter name (``"bilinear"``, ``"bicubic"``...).
    """

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(mean=list(self.mean), std=list(self.std), channel_order="RGB", layout="NCHW", scale=1 / 255)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k in ("mean", "std"):
            if k in kwargs:
                kwargs[k] = tuple(float(v) for v in kwargs[k])
        return cls(**kwargs)
