"""NVIDIA's cuda-python as the runtime uses it: its modules under either spelling, and its results.

The Python runtime's CUDA-graph replay (the driver bindings) and its GPU preprocessing of camera frames
(the driver bindings and NVRTC) are its only users; both import lazily, so the runtime loads without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SkEdgeError

_BEFORE_12_6 = {"driver": "cuda.cuda", "nvrtc": "cuda.nvrtc"}  # cuda-python < 12.6 spelled them so


def bindings(name: str, need: str) -> Any:
    """``cuda.bindings.<name>`` (``driver``, ``nvrtc``), or a SkEdgeError naming ``need``, what asked for it."""
    try:
        return importlib.import_module(f"cuda.bindings.{name}")
    except ImportError:
        try:
            return importlib.import_module(_BEFORE_12_6[name])
        except ImportError:
            raise SkEdgeError(f"{need} needs NVIDIA's cuda-python (pip install cuda-python, matching the CUDA release)") from None


def result(returned: tuple, what: str) -> Any:
    """cuda-python returns (error, *values): a SkEdgeError "<what> failed: <error>", else the value(s)."""
    err, *values = returned
    if int(err) != 0:
        raise SkEdgeError(f"{what} failed: {err}")
    return values[0] if len(values) == 1 else (values or None)
