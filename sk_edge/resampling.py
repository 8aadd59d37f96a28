"""Pillow's 8-bit resize as integer coefficients: what the GPU preprocessing kernels read.

The C++ runtime computes these on the host (``axis_coefficients`` and ``plan_resize`` in
``cpp/src/preprocess_cpu.cpp``) and its kernels (``cpp/include/sk_edge/preprocess_kernels.cuh``)
apply them; the Python runtime launches the same kernels on frames already in GPU memory
(sk_edge.frame_kernels), so it computes the same coefficients, rule for rule, here.

:func:`resize_reference` applies them with numpy, both passes rounded to 8 bits as Pillow does.
``tests/test_resampling.py`` checks that it equals sk_edge.images.to_pixels (Pillow itself) byte
for byte on real photographs, for every filter and resize mode: so the coefficients the kernels
get are Pillow's, and the reference is what the kernels are checked against on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .images import resized_size
from .preprocess import Preprocess

PRECISION_BITS = 32 - 8 - 2  # Pillow's for 8-bit images: sk_edge::kPrecisionBits


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5  # Pillow's (and Keys') choice
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}  # weight function, support


@dataclass(frozen=True)
class AxisCoefficients:
    """One axis of a resize: output pixel ``i`` is ``sum(weights[i, t] * input[first[i] + t] for t < count[i])``."""

    first: np.ndarray  # int32 (out_size,)
    count: np.ndarray  # int32 (out_size,)
    weights: np.ndarray  # int32 (out_size, taps), PRECISION_BITS fixed point

    @property
    def taps(self) -> int:
        return int(self.weights.shape[1])


def _fixed(w: float) -> int:
    # Rounded half away from zero into fixed point, as Pillow does (C's truncating cast).
    return int(-0.5 + w * (1 << PRECISION_BITS) if w < 0 else 0.5 + w * (1 << PRECISION_BITS))


def _nearest(in_size: int, out_size: int, scale: float) -> AxisCoefficients:
    """Pillow's NEAREST (ImagingScaleAffine): the input pixel under each output pixel's centre, the centre
    advanced by repeated addition of the scale in double; ``(x + 0.5) * scale`` lands elsewhere where the
    sum rounds below an integer (256 -> 224: 25 of 224 columns)."""
    first, centre = np.zeros(out_size, np.int32), scale * 0.5
    for x in range(out_size):
        first[x] = min(in_size - 1, int(centre))
        centre += scale
    return AxisCoefficients(first, np.ones(out_size, np.int32), np.full((out_size, 1), 1 << PRECISION_BITS, np.int32))


def axis_coefficients(in_size: int, out_size: int, filter_name: str) -> AxisCoefficients:
    """Pillow's coefficients for resizing ``in_size`` pixels to ``out_size`` with ``filter_name``."""
    if in_size <= 0 or out_size <= 0:
        raise UsageError("cannot resize an empty image")
    scale = in_size / out_size
    if filter_name == "nearest":
        return _nearest(in_size, out_size, scale)
    if filter_name not in FILTERS:
        raise UsageError(f"interpolation must be one of bilinear, bicubic, nearest, got {filter_name!r}")
    weight, base_support = FILTERS[filter_name]
    filterscale = max(scale, 1.0)  # shrinking widens the filter: that is what anti-aliases
    support = base_support * filterscale
    taps = math.ceil(support) * 2 + 1
    first, count = np.zeros(out_size, np.int32), np.zeros(out_size, np.int32)
    weights = np.zeros((out_size, taps), np.int32)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(0, int(center - support + 0.5))
        xmax = min(in_size, int(center + support + 0.5)) - xmin
        k = [weight((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        total = sum(k)
        weights[xx, :xmax] = [_fixed(w / total if total != 0.0 else w) for w in k]
        first[xx], count[xx] = xmin, xmax
    return AxisCoefficients(first, count, weights)


@dataclass(frozen=True)
class ResizePlan:
    """An image's resized size and where each output pixel reads it: output (x, y) is resized
    (x + offset_x, y + offset_y), or the fill colour outside it (letterbox)."""

    resized_width: int
    resized_height: int
    offset_x: int
    offset_y: int
    out_width: int
    out_height: int


def plan_resize(width: int, height: int, pre: Preprocess) -> ResizePlan:
    """sk_edge.images._resize's geometry (torchvision's Resize and CenterCrop, or the letterbox)."""
    if width <= 0 or height <= 0:
        raise UsageError(f"the image is empty ({width}x{height})")
    new_w, new_h = resized_size(width, height, pre)
    if pre.resize == "resize":
        off_x = off_y = 0
    elif pre.resize == "letterbox":
        off_x, off_y = -((pre.width - new_w) // 2), -((pre.height - new_h) // 2)
    else:  # crop: offsets rounded half to even, as Python's round
        off_x, off_y = int(round((new_w - pre.width) / 2.0)), int(round((new_h - pre.height) / 2.0))
    return ResizePlan(new_w, new_h, off_x, off_y, pre.width, pre.height)


def letterbox_fill(pre: Preprocess) -> tuple[int, int, int]:
    """The padding colour, R, G, B: the mean, so that padding normalises to (about) zero."""
    r, g, b = (int(round(m * 255)) for m in pre.mean)
    return r, g, b


def _clip8(sums: np.ndarray) -> np.ndarray:
    # The rounding term is added before the (arithmetic, so flooring) shift, as the kernels do.
    return np.clip((sums + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255).astype(np.uint8)


def _pass(pixels: np.ndarray, coefficients: AxisCoefficients, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` (1: columns, 0: rows) of (H, W, 3) uint8, kept at 8 bits."""
    sums = np.zeros(pixels.shape[:axis] + (len(coefficients.first),) + pixels.shape[axis + 1 :], np.int64)
    limit = pixels.shape[axis] - 1
    for t in range(coefficients.taps):
        # Taps past an output pixel's count have weight 0; their (clamped) index reads a real pixel.
        index = np.minimum(coefficients.first + t, limit)
        w = coefficients.weights[:, t].astype(np.int64)
        taken = np.take(pixels, index, axis=axis).astype(np.int64)
        sums += taken * (w[None, :, None] if axis == 1 else w[:, None, None])
    return _clip8(sums)


def resize_reference(rgb: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 RGB to the model's (height, width, 3) uint8 pixels, as the kernels compute them."""
    height, width = rgb.shape[:2]
    plan = plan_resize(width, height, pre)
    mid = _pass(rgb, axis_coefficients(width, plan.resized_width, pre.interpolation), axis=1)
    resized = _pass(mid, axis_coefficients(height, plan.resized_height, pre.interpolation), axis=0)
    out = np.empty((plan.out_height, plan.out_width, 3), np.uint8)
    out[:] = letterbox_fill(pre)
    ys = np.arange(plan.out_height) + plan.offset_y
    xs = np.arange(plan.out_width) + plan.offset_x
    inside_y, inside_x = (ys >= 0) & (ys < plan.resized_height), (xs >= 0) & (xs < plan.resized_width)
    out[np.ix_(inside_y, inside_x)] = resized[np.ix_(ys[inside_y], xs[inside_x])]
    return out
