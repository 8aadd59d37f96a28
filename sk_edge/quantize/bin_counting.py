"""Counting |x| into histogram bins in one parallel pass, when numba is installed.

Calibration's histograms were five NumPy passes over every tapped tensor (abs, max, scale, cast, bincount),
each on one core: about 31 ms per image of SKNet-50 at 224 beside a 60 ms inference (issue 24). This kernel
reads each value once, on every core, and gives the very same bins: the same float32 product
``|x| * float32(bins / range)``, truncated, with a value at the range's top counted in the last bin.

numba is optional (the ``calibration`` extra, part of ``export``): without it ``kernel()`` is None and the
histogram counts with NumPy, bin for bin the same (tests/test_bin_counting.py compares the two). The kernel
lives in its own module, imported only here: importing numba costs about half a second, and a function
defined at a module's top level is what numba can cache on disk.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import numpy as np

CountWithin = Callable[[np.ndarray, float, np.float32, int], tuple[np.ndarray, float, int]]


@functools.cache
def kernel() -> CountWithin | None:
    """The compiled counting kernel, or None without numba (or with ``SK_EDGE_BIN_COUNTING=numpy``, the A/B of
    benchmarks/calibration.py and a way round a numba that misbehaves). numba compiles it on first use and
    caches it on disk, so only the first calibration on a machine pays the compilation (a few seconds)."""
    if os.environ.get("SK_EDGE_BIN_COUNTING") == "numpy":
        return None
    try:
        from ._numba_bins import count_within
    except ImportError:
        return None
    return count_within


def counted_with() -> str:
    """What counts the bins here, as calib.json records it: "numba <version>" or "numpy"."""
    if kernel() is None:
        return "numpy"
    import numba

    return f"numba {numba.__version__}"
