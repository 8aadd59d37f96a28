"""Camera pixel formats against OpenCV's cvtColor on real photographs (sk_edge.pixels).

The tolerance: OpenCV decodes YUV as BT.601 limited range with coefficients rounded to three
decimals in 20-bit fixed point; sk-edge uses the standard's exact coefficients in 16-bit fixed
point. That moves a channel by at most one 8-bit level, and most values agree exactly (checked).
BT.709 and full range, which cvtColor does not offer, are checked against the standards' formula.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sk_edge.errors import UsageError
from sk_edge.pixels import MATRICES, to_rgb, yuv_to_rgb
from sk_edge.reference.digits import ASSETS

PHOTOS = sorted((ASSETS / "backgrounds").glob("*.jpg"))[:6]


def camera_frames(bgr: np.ndarray) -> dict[str, np.ndarray]:
    """A photo as cameras deliver it: OpenCV's own I420, and the same samples as NV12, YUYV and UYVY."""
    h, w = bgr.shape[0] & ~1, bgr.shape[1] & ~1
    i420 = cv2.cvtColor(np.ascontiguousarray(bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420)
    y, u, v = i420[:h], i420[h:].reshape(-1)[: h * w // 4].reshape(h // 2, w // 2), i420[h:].reshape(-1)[h * w // 4:].reshape(h // 2, w // 2)
    nv12 = np.concatenate([y, np.stack([u, v], axis=-1).reshape(h // 2, w)])
    u2, v2 = np.repeat(u, 2, axis=0), np.repeat(v, 2, axis=0)  # 4:2:2: each chroma row for two luma rows
    yuyv = np.stack([y[:, 0::2], u2, y[:, 1::2], v2], axis=-1).reshape(h, w * 2)
    uyvy = np.stack([u2, y[:, 0::2], v2, y[:, 1::2]], axis=-1).reshape(h, w * 2)
    return {"i420": i420, "nv12": nv12, "yuyv": yuyv, "uyvy": uyvy}


OPENCV = {"i420": cv2.COLOR_YUV2RGB_I420, "nv12": cv2.COLOR_YUV2RGB_NV12, "yuyv": cv2.COLOR_YUV2RGB_YUYV,
          "uyvy": cv2.COLOR_YUV2RGB_UYVY}


@pytest.mark.parametrize("photo", PHOTOS, ids=[p.name for p in PHOTOS])
def test_yuv_formats_match_opencv_on_real_photographs(photo):
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    for fmt, frame in camera_frames(bgr).items():
        packed = frame.reshape(frame.shape[0], -1, 2) if fmt in ("yuyv", "uyvy") else frame
        want = cv2.cvtColor(packed, OPENCV[fmt])
        got = to_rgb(frame, fmt)
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1, (fmt, diff.max())
        assert (diff == 0).mean() >= 0.9, (fmt, (diff == 0).mean())


def test_packed_formats_and_grey_match_opencv_exactly():
    bgr = cv2.imread(str(PHOTOS[0]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cases = {"rgb": (rgb, rgb), "bgr": (bgr, rgb), "rgba": (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA), rgb),
             "bgra": (cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), rgb), "bgrx": (cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), rgb),
             "gray8": (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))}
    for fmt, (frame, want) in cases.items():
        assert np.array_equal(to_rgb(frame, fmt), want), fmt


@pytest.mark.parametrize("matrix", sorted(MATRICES))
@pytest.mark.parametrize("full_range", [False, True])
def test_every_matrix_and_range_follows_the_standard(matrix, full_range):
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    y, u, v = (a.reshape(-1).astype(np.uint8) for a in np.meshgrid(np.arange(0, 256, 3), np.arange(0, 256, 5), np.arange(0, 256, 5)))
    got = yuv_to_rgb(y, u, v, matrix, full_range).astype(int)
    ys = y.astype(float) if full_range else (y - 16.0) * 255 / 219
    cs = 1.0 if full_range else 255 / 224
    uu, vv = (u - 128.0) * cs, (v - 128.0) * cs
    want = np.stack([ys + 2 * (1 - kr) * vv, ys - (2 * kb * (1 - kb) * uu + 2 * kr * (1 - kr) * vv) / kg, ys + 2 * (1 - kb) * uu], -1)
    assert np.abs(got - np.clip(np.rint(want), 0, 255)).max() <= 1


def test_bad_frames_are_one_line_errors():
    with pytest.raises(UsageError, match="pixel format must be one of"):
        to_rgb(np.zeros((4, 4, 3), np.uint8), "yuv444")
    with pytest.raises(UsageError, match=r"a nv12 frame is one \(H \* 3 / 2, W\) uint8 buffer"):
        to_rgb(np.zeros((5, 4), np.uint8), "nv12")
    with pytest.raises(UsageError, match="a rgba frame is a uint8 array of shape"):
        to_rgb(np.zeros((4, 4, 3), np.uint8), "rgba")
    with pytest.raises(UsageError, match="YUV matrix must be one of"):
        to_rgb(np.zeros((6, 4), np.uint8), "nv12", matrix="bt2020")


def test_camera_frames_become_the_batch_the_host_judged():
    """An NV12 camera frame through the runtime's frames_to_batch: the same tensor as its RGB image through the
    loader that judged the model (so a device fed NV12 sees what verify saw)."""
    from PIL import Image

    from sk_edge.images import to_tensor
    from sk_edge.preprocess import Preprocess
    from sk_edge.runtime import frames_to_batch

    bgr = cv2.imread(str(PHOTOS[1]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    nv12 = camera_frames(bgr)["nv12"]
    pre = Preprocess(input_size=96, resize="crop")
    batch = frames_to_batch([nv12, nv12], pre, "nv12")
    assert batch.shape == (2, 3, 96, 96) and batch.dtype == np.float32
    assert np.array_equal(batch[0], to_tensor(Image.fromarray(to_rgb(nv12, "nv12")), pre))
