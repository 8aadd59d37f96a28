"""Versions of the libraries that shape sk-edge's artifacts, for sidecars and ``sk-edge info``."""

from __future__ import annotations

from importlib import metadata

from . import __version__

_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnx-graphsurgeon", "timm", "tensorrt", "pycuda")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_installed() -> bool:
    """Whether PyTorch is importable here: the host side, or a device without it (the FP32 graph or the
    stored outputs stand in for the reference there)."""
    from importlib.util import find_spec

    return find_spec("torch") is not None


def library_versions() -> dict[str, str | None]:
    """sk-edge and its libraries' installed versions (None when not installed)."""
    return {"sk-edge": __version__, **{name: package_version(name) for name in _LIBRARIES}}
