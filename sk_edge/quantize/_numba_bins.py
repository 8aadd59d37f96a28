"""The numba kernel behind sk_edge.quantize.bin_counting (imported only when numba is installed)."""

import numba
import numpy as np


def count_within(flat: np.ndarray, range_: float, scale: np.float32, bins: int) -> tuple[np.ndarray, float, int]:
    """(counts of the values with |x| <= range_, the largest |x|, how many were outside: above range_ or NaN).
    A few chunks per thread: the values are not spread evenly over a tensor (a ReLU's zeros come in runs)."""
    return _count_within(flat, range_, scale, bins, numba.get_num_threads() * 4)


# numba.get_num_threads() inside the kernel would make it uncachable ("dynamic globals"): it comes as `chunks`.
@numba.njit(parallel=True, nogil=True, cache=True)
def _count_within(flat, range_, scale, bins, chunks):  # pragma: no cover - compiled; tests check its results
    """(counts of the values with |x| <= range_, the largest |x|, how many were outside: above range_ or
    NaN). A caller that sees any outside grows the range and counts again: these counts are then void."""
    step = (flat.size + chunks - 1) // chunks
    local = np.zeros((chunks, bins), dtype=np.int64)
    tops = np.zeros(chunks, dtype=np.float32)
    outside = np.zeros(chunks, dtype=np.int64)
    for c in numba.prange(chunks):
        top = np.float32(0.0)
        for i in range(c * step, min(flat.size, (c + 1) * step)):
            a = abs(flat[i])
            if a > top:
                top = a
            if a <= range_:  # False for NaN, so NaN is "outside" and the caller raises
                k = int(a * scale)
                local[c, min(k, bins - 1)] += 1
            else:
                outside[c] += 1
        tops[c] = top
    return local.sum(axis=0), float(tops.max()), int(outside.sum())
