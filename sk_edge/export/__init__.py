"""Export stage: a PyTorch SKNet becomes a clean FP32 ONNX graph (:mod:`.stage`).

This package re-exports the stage's names without importing PyTorch: they are loaded on first
use, so the device side (which has no PyTorch) can import light modules such as
:mod:`.parity` through this package. Names that need PyTorch raise a one-line error there.
"""

from __future__ import annotations

from importlib import import_module

_STAGE_NAMES = (
    "ONNX_NAME",
    "SIDECAR_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "MIN_OPSET",
    "MAX_OPSET",
    "ExportOptions",
    "ExportResult",
    "export_model",
    "state_dict_digest",
    "to_onnx",
)

__all__ = list(_STAGE_NAMES)


_OPTION_NAMES = ("ExportOptions", "MIN_OPSET", "MAX_OPSET", "SELECT_FORMS")


def __getattr__(name: str):
    if name in _OPTION_NAMES:  # no PyTorch needed
        return getattr(import_module(".options", __name__), name)
    if name in _STAGE_NAMES:
        return getattr(import_module(".stage", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
