"""The name table of a work directory: every artifact sk-edge writes there, in one place.

A leaf module (it imports nothing of sk-edge), so that the typed sidecar views (sk_edge.sidecars) and
the checked loaders (sk_edge.workdir) both read it without importing each other.
"""

from __future__ import annotations

import re

EXPORT_JSON = "export.json"
FP32_ONNX = "model.fp32.onnx"
CALIB_JSON = "calib.json"
CALIB_CACHE = "calib.cache"
# The graph of each precision, as the quantize stage names them; the first that exists in
# this order is what a command uses when none is named.
GRAPH_NAMES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "fp32": FP32_ONNX}
# The sidecar each graph is checked against.
GRAPH_SIDECARS = {"int8": "model.int8.json", "fp16": "model.fp16.json", "fp32": EXPORT_JSON}
# The FP32 PyTorch outputs on the images that judged the build, and their pixels, stored on the
# host so that a device without PyTorch judges against the real reference (sk_edge.stored_reference).
REFERENCE_NPZ = "reference.npz"
REFERENCE_JSON = "reference.json"
# The INT8 graph measured within the build's accuracy budget on its judging images (pipeline.fit_accuracy_budget):
# a later build with the same graph, images and budget skips the measurement.
BUDGET_JSON = "budget.json"
# The reference model's SK-Digits images, rendered into the work directory once (held-out, calibration).
EVAL_DIR = "eval_images"
CALIB_DIR = "calib_images"


def render_temporary(folder: str) -> str:
    """The folder a render is written into before it is renamed to ``folder`` (atomic)."""
    return f".{folder}.tmp"


# What sk-edge's own writes leave when killed inside their write window, and nothing else: a file from
# artifacts.atomic_output (tempfile.mkstemp: ".NAME." + 8 random characters + ".tmp"), or a render folder.
_ATOMIC_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_RENDER_TEMPORARIES = frozenset(render_temporary(f) for f in (EVAL_DIR, CALIB_DIR))


def engine_name(precision: str, dla_core: int | None = None, target: str = "tensorrt") -> str:
    """``model.int8.engine``; ``model.int8.dla.engine`` for a DLA build; ``model.int8.rtx.engine`` for TensorRT-RTX."""
    suffix = ".dla" if dla_core is not None else ".rtx" if target == "rtx" else ""
    return f"model.{precision}{suffix}.engine"


def engine_names(precision: str) -> tuple[str, str, str]:
    """The engines a precision can have: built for the GPU, for a DLA core, and by TensorRT-RTX."""
    return engine_name(precision), engine_name(precision, dla_core=0), engine_name(precision, target="rtx")


def engine_target(name: str) -> str:
    """ "rtx" for an engine file TensorRT-RTX built (by its name), else "tensorrt"."""
    return "rtx" if name.endswith(".rtx.engine") else "tensorrt"


def layers_name(engine: str) -> str:
    """The fused layer plan of an engine: ``model.int8.engine`` -> ``model.int8.layers.json``."""
    return engine.removesuffix(".engine") + ".layers.json"


def runtime_cache_name(engine: str) -> str:
    """TensorRT-RTX's runtime cache (kernels compiled on the user's GPU) kept beside its engine."""
    return engine.removesuffix(".engine") + ".runtime.cache"
