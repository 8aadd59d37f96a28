"""Precision in the graph: INT8 calibration (:mod:`.calibration`), Q/DQ insertion and FP16
conversion (:mod:`.stage`).

TensorRT 11 no longer calibrates or picks precisions; the ONNX graph carries them. This
package re-exports the stages' entry points; none of it needs PyTorch.
"""

from .calibration import CalibrationOptions, calibrate
from .stage import FP32_OPS, MIXED, OUTPUT_NAMES, PRECISIONS, SIDECAR_NAMES, build_fp16_graph, build_int8_graph, quantize_model

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
