"""The GPU kernels' resize coefficients (sk_edge.resampling) against Pillow itself, on real photographs.

The Python runtime launches the C++ runtime's kernels on frames in GPU memory with coefficients it
computes in Python; resize_reference applies those coefficients with numpy exactly as the kernels do
(two passes, each rounded to 8 bits). Equality with sk_edge.images.to_pixels, which is Pillow, byte
for byte, means the kernels are fed Pillow's coefficients and that the reference the GPU test
compares with is the host's preprocessing.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sk_edge.errors import UsageError
from sk_edge.images import to_pixels
from sk_edge.preprocess import Preprocess
from sk_edge.reference.digits import ASSETS
from sk_edge.resampling import axis_coefficients, plan_resize, resize_reference

PHOTOS = sorted((ASSETS / "backgrounds").glob("*.jpg"))[:3]
SIZES = {"square224": 224, "160x200": (160, 200), "odd37": 37}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("resize", ["crop", "resize", "letterbox"])
def test_the_kernels_coefficients_resize_real_photographs_as_pillow_does(resize, interpolation):
    for photo in PHOTOS:
        with Image.open(photo) as image:
            rgb = np.asarray(image.convert("RGB"))
        # The photograph, a crop of odd size that is upscaled, and a wide strip.
        for pixels in (rgb, np.ascontiguousarray(rgb[:23, :37]), np.ascontiguousarray(rgb[:40])):
            for size in SIZES.values():
                pre = Preprocess(input_size=size, resize=resize, interpolation=interpolation)
                expected = to_pixels(Image.fromarray(pixels), pre)
                got = resize_reference(pixels, pre)
                assert np.array_equal(got, expected), (photo.name, pixels.shape, size)


def test_nearest_advances_the_centre_as_pillow_does():
    # 256 -> 224: (x + 0.5) * 256 / 224 is exactly 4.0 at x = 3, where Pillow's running sum is just below it.
    first = axis_coefficients(256, 224, "nearest").first
    assert first[3] == 3
    row = np.arange(256, dtype=np.int32)[None, :]
    pillow = np.asarray(Image.fromarray(row, "I").resize((224, 1), Image.Resampling.NEAREST))[0]
    assert np.array_equal(first, pillow)


def test_the_plan_places_the_crop_and_the_letterbox():
    crop = plan_resize(640, 480, Preprocess(input_size=224, crop_pct=0.875))
    assert (crop.resized_width, crop.resized_height, crop.offset_x, crop.offset_y) == (341, 256, 58, 16)
    box = plan_resize(640, 480, Preprocess(input_size=224, resize="letterbox"))
    assert (box.resized_width, box.resized_height, box.offset_x, box.offset_y) == (224, 168, 0, -28)
    with pytest.raises(UsageError, match="empty"):
        axis_coefficients(0, 4, "bilinear")
    with pytest.raises(UsageError, match="interpolation must be one of"):
        axis_coefficients(8, 4, "lanczos")
