"""Precision in the graph: INT8 calibration (:mod:`.calibration`), Q/DQ insertion and FP16
conversion (:mod:`.stage`).

TensorRT 11 no longer calibrates or picks precisions; the ONNX graph carries them. This
package re-exports the stages' entry points; none of it needs PyTorch.
"""

from __future__ import annotations

from importlib import import_module

# Loaded on first use, so that the command line can read the options and their defaults without onnx.
_MODULE_OF = {
    "calibrate": ".calibration",
    **{name: ".options" for name in ("CalibrationOptions", "DEFAULT_MIXED", "MIXED", "PRECISIONS")},
    **{
        name: ".stage"
        for name in ("FP32_OPS", "OUTPUT_NAMES", "SIDECAR_NAMES", "build_fp16_graph", "build_int8_graph", "quantize_model")
    },
}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "calibrate",
    "CalibrationOptions",
    "quantize_model",
    "build_int8_graph",
    "build_fp16_graph",
    "FP32_OPS",
    "PRECISIONS",
    "MIXED",
    "OUTPUT_NAMES",
    "SIDECAR_NAMES",
]
