"""Camera pixel formats to 8-bit RGB on the CPU: the same integer arithmetic as the C++ runtime's
``sk_edge/pixels.hpp`` (which its CUDA kernel fuses into preprocessing).

Frames come as numpy arrays the way cameras and GStreamer's ``appsink`` hand them over:

- ``rgb``, ``bgr``: (H, W, 3); ``rgba``, ``bgra``, ``bgrx``: (H, W, 4), the fourth byte dropped;
  ``gray8``: (H, W), replicated to R, G, B;
- ``nv12``, ``i420``: one (H * 3 / 2, W) buffer, the Y plane then the chroma (NV12: interleaved
  U, V; I420: U plane, V plane), as OpenCV and ``video/x-raw,format=NV12`` lay it out;
- ``yuyv``, ``uyvy``: (H, W, 2) or (H, 2 W), packed 4:2:2.

YUV is BT.601 or BT.709, limited or full range, chosen explicitly (the camera's driver says which);
chroma is read nearest, as OpenCV's ``cvtColor`` reads it. ``tests/test_pixels.py`` checks every
format against ``cvtColor`` on real photographs.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

FORMATS = ("rgb", "bgr", "rgba", "bgra", "bgrx", "gray8", "nv12", "i420", "yuyv", "uyvy")
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # Kr, Kb
YUV_BITS = 16


def yuv_coefficients(matrix: str = "bt601", full_range: bool = False) -> tuple[int, int, int, int, int, int]:
    """(y_scale, y_offset, r_v, g_u, g_v, b_u) in YUV_BITS fixed point, as ``sk_edge::yuv_coefficients``."""
    if matrix not in MATRICES:
        raise UsageError(f"YUV matrix must be one of {', '.join(MATRICES)}, got {matrix!r}")
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    ys, cs = (1.0, 1.0) if full_range else (255.0 / 219.0, 255.0 / 224.0)

    def fixed(x: float) -> int:
        return int(x * (1 << YUV_BITS) + (-0.5 if x < 0 else 0.5))

    return (
        fixed(ys),
        0 if full_range else 16,
        fixed(2 * (1 - kr) * cs),
        fixed(2 * kb * (1 - kb) / kg * cs),
        fixed(2 * kr * (1 - kr) / kg * cs),
        fixed(2 * (1 - kb) * cs),
    )


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """Full-resolution Y, U, V planes (uint8) to (H, W, 3) uint8 RGB."""
    ys, yo, rv, gu, gv, bu = yuv_coefficients(matrix, full_range)
    luma = ys * (y.astype(np.int64) - yo)
    u, v = u.astype(np.int64) - 128, v.astype(np.int64) - 128
    half = 1 << (YUV_BITS - 1)
    channels = [luma + rv * v, luma - gu * u - gv * v, luma + bu * u]
    return np.stack([np.clip((c + half) >> YUV_BITS, 0, 255) for c in channels], axis=-1).astype(np.uint8)


CHANNELS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "bgrx": 4, "gray8": 1}  # bytes per pixel, packed formats


def pixel_format(fmt: str) -> str:
    """``fmt`` as this module names formats (lower case), or a UsageError listing them."""
    if fmt.lower() not in FORMATS:
        raise UsageError(f"pixel format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt.lower()


def frame_size(shape: tuple[int, ...], fmt: str) -> tuple[int, int]:
    """(height, width) of a frame of array shape ``shape`` in pixel format ``fmt``; a UsageError for a shape
    that is not such a frame (the layouts in this module's docstring)."""
    if fmt in ("nv12", "i420"):
        if len(shape) != 2 or shape[0] % 3 or shape[0] // 3 % 2 or shape[1] % 2:
            raise UsageError(f"a {fmt} frame is one (H * 3 / 2, W) uint8 buffer with even H and W, got {shape}")
        return shape[0] * 2 // 3, shape[1]
    if fmt in ("yuyv", "uyvy"):
        if len(shape) == 3 and shape[2] == 2 and shape[1] % 2 == 0:
            return shape[0], shape[1]
        if len(shape) == 2 and shape[1] % 4 == 0:
            return shape[0], shape[1] // 2
        raise UsageError(f"a {fmt} frame is (H, W, 2) or (H, 2 W) uint8 with an even W, got {shape}")
    channels = CHANNELS[fmt]
    if shape[2:] != ((channels,) if channels > 1 else ()) or len(shape) < 2:
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise UsageError(f"a {fmt} frame is a uint8 array of shape {want}, got {shape}")
    return shape[0], shape[1]


def to_rgb(frame: np.ndarray, fmt: str, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """``frame`` in pixel format ``fmt`` as (H, W, 3) uint8 RGB."""
    fmt = pixel_format(fmt)
    frame = np.asarray(frame)
    h, w = frame_size(frame.shape, fmt)
    if frame.dtype != np.uint8:
        raise UsageError(f"a {fmt} frame is a uint8 array, got {frame.dtype}")
    if fmt in ("rgb", "bgr", "rgba", "bgra", "bgrx"):
        order = [0, 1, 2] if fmt in ("rgb", "rgba") else [2, 1, 0]
        return np.ascontiguousarray(frame[..., order])
    if fmt == "gray8":
        return np.repeat(frame[..., None], 3, axis=-1)
    if fmt in ("yuyv", "uyvy"):
        packed = frame.reshape(h, w // 2, 4)
        y = packed[..., [0, 2] if fmt == "yuyv" else [1, 3]].reshape(h, w)
        u, v = (packed[..., 1], packed[..., 3]) if fmt == "yuyv" else (packed[..., 0], packed[..., 2])
        return yuv_to_rgb(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1), matrix, full_range)
    y, chroma = frame[:h], frame[h:]
    if fmt == "nv12":
        uv = chroma.reshape(h // 2, w // 2, 2)
        u, v = uv[..., 0], uv[..., 1]
    else:
        flat = chroma.reshape(-1)
        u, v = flat[: h * w // 4].reshape(h // 2, w // 2), flat[h * w // 4 :].reshape(h // 2, w // 2)
    up = lambda p: np.repeat(np.repeat(p, 2, axis=0), 2, axis=1)  # noqa: E731 - nearest, as cvtColor
    return yuv_to_rgb(y, up(u), up(v), matrix, full_range)
