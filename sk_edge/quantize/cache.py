"""TensorRT's calibration-cache text format, so legacy TensorRT flows can reuse our calibration.

The first line names the TensorRT version and calibrator, e.g.
``TRT-100300-EntropyCalibration2``; every other line is ``tensor_name: HEX`` where HEX is
the big-endian IEEE-754 bit pattern of the float32 scale (amax / 127). This is what
``IInt8Calibrator.read_calibration_cache`` hands back to the builder and what
``trtexec --calib=FILE`` reads. Tensor names are the ONNX tensor names of the FP32 graph,
which TensorRT's ONNX parser keeps.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..artifacts import atomic_output

CALIBRATOR = "EntropyCalibration2"
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.1/6.2; the legacy implicit-INT8 path ends with 10.x


def version_number(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    parts = [int(p) for p in version.split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def encode_scale(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def decode_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.strip().rjust(8, "0")))[0]


def write_cache(path: str | Path, amax: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION) -> None:
    lines = [f"TRT-{version_number(trt_version)}-{CALIBRATOR}"]
    lines += [f"{name}: {encode_scale(value / 127.0)}" for name, value in amax.items()]
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, tensor name -> scale) from a calibration cache."""
    header, *body = Path(path).read_text().splitlines()
    scales = {}
    for line in body:
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        if not sep:
            raise ValueError(f"'{path}': line '{line}' is not 'name: hex'")
        scales[name.strip()] = decode_scale(value)
    return header, scales
