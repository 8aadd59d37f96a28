"""The options of calibration (``sk-edge calibrate``, and the build's calibrate stage), and the float-share bound.

Importable without onnx or torch: the command line reads its defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..fields import option
from .cache import DEFAULT_TRT_VERSION
from .histogram import DEFAULT_BINS
from .methods import METHODS

# The accuracy budget may keep at most this share of the MACs in floating point before the
# build fails: past it the engine is mostly FP16, and the likely cause is calibration images
# unlike the evaluation images, which more floating point only hides.
DEFAULT_MAX_FLOAT_SHARE = 0.25

# Chosen by measurement on the reference model: see docs/accuracy.md, "Calibration methods".
DEFAULT_METHOD = "entropy"

# What `sk-edge quantize` writes, and the precision of every layer an INT8 graph keeps out of INT8.
PRECISIONS = ("int8", "fp16")
MIXED = ("fp16", "fp32")
DEFAULT_MIXED = "fp16"  # TensorRT's fast path for what INT8 leaves out; fp32 for the most exact float layers


@dataclass(frozen=True)
class CalibrationOptions:
    method: str = field(default=DEFAULT_METHOD, metadata=option("How each tensor's INT8 range is chosen.", choices=METHODS))
    percentile: float = field(default=99.99, metadata=option("For --method percentile.", kind="float"))
    num_images: int = field(default=512, metadata=option("Images to calibrate on.", kind="int"))
    batch: int = field(
        default=4,
        metadata=option(  # peak memory grows with it; 4 runs as fast as 8 on 2 cores
            "Images per ONNX Runtime run (memory grows with it).", kind="int"
        ),
    )
    bins: int = DEFAULT_BINS
    trt_version: str = DEFAULT_TRT_VERSION
    # Also the max |x| of every other activation, for TensorRT's weakly typed (implicit INT8)
    # builds: the legacy DLA path and GPU builds on JetPack 5.1/6.0. Implicit INT8 falls back to
    # floating point for every layer that produces or consumes a tensor without a range, and the
    # Q/DQ plan quantizes only the tensors the strongly typed path needs (30 of 163 in SKNet-26).
    legacy_ranges: bool = field(
        default=False,
        metadata=option(
            "Also record every other activation's range in calib.cache, for weakly typed TensorRT builds (the DLA on "
            "JetPack 5.1-6.2, the GPU on 5.1/6.0); `build --dla-core` sets it.",
            kind="flag",
        ),
    )
    # The share of the folder held out to judge the build (sk_edge.evaluation): calibration
    # takes only the other files. None: every file may be calibrated on.
    holdout: float | None = None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.num_images < 1:
            raise UsageError(f"--num-images must be at least 1, got {self.num_images}")
        if self.batch < 1:
            raise UsageError(f"--batch must be at least 1, got {self.batch}")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise UsageError(f"the hold-out share must be between 0 and 1, got {self.holdout}")
