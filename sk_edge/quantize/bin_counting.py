"""Counting |x| into histogram bins with numba, on every core, when numba is installed.

Calibration's histograms were five NumPy passes over every tapped tensor (abs, max, scale, cast, bincount),
each on one core: about 31 ms per image of SKNet-50 at 224 beside a 60 ms inference (issue 24). The kernel
reads each value once and gives the very same bins: the same float32 product ``|x| * float32(bins / range)``,
truncated, with a value at the range's top counted in the last bin. Calibration counts a batch's tensors on
``counting_threads()`` threads at once, one tensor per thread (the kernel releases the GIL).

numba is optional (the ``calibration`` extra, part of ``export``): without it ``kernel()`` is None and the
histogram counts with NumPy, bin for bin the same (tests/test_bin_counting.py compares the two). The kernel
lives in its own module, imported only here: importing numba costs about half a second, and a function
defined at a module's top level is what numba can cache on disk.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

if TYPE_CHECKING:  # histogram.py imports this module
    from .histogram import StreamingHistogram

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


def counting_threads() -> int:
    """The threads that count a batch's tensors: the cores this process may run on (ONNX Runtime's threads, which
    use the same cores, are idle while the histograms count: they stop spinning as each run returns)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def counting_pool() -> ThreadPoolExecutor:
    """The threads calibration counts on. Their first task loads the kernel while the caller goes on building its
    session (numba's import and the first call, which loads the compiled kernel from numba's cache: 1.3 s together
    on this project's machine); a thread that needs the kernel sooner waits for it."""
    pool = ThreadPoolExecutor(counting_threads(), thread_name_prefix="sk-edge-bins")
    pool.submit(_load_kernel)
    return pool


def _load_kernel() -> None:
    count = kernel()
    if count is not None:
        count(np.zeros(8, dtype=np.float32), 1.0, np.float32(1.0), 128)


def counted_with(histograms: Iterable[StreamingHistogram]) -> str:
    """What counted these histograms' values, as calib.json records it: "numpy", "numba <version>", or the share
    of each. Derived from the histograms, not from what is installed: tensors under the kernel's cut are counted
    by NumPy even where numba is."""
    histograms = list(histograms)
    total = sum(h.total for h in histograms)
    by_kernel = sum(h.kernel_counted for h in histograms)
    if by_kernel == 0:
        return "numpy"
    import numba

    if by_kernel == total:
        return f"numba {numba.__version__}"
    return f"numba {numba.__version__} for {100 * by_kernel / total:.1f}% of the values, numpy for the rest"
