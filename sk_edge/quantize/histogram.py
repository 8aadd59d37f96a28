"""A streaming histogram of |x| whose range grows without losing counts.

Calibration sees a tensor batch by batch and cannot know its final range in advance.
The histogram keeps a fixed number of bins over [0, range]; when a batch exceeds the
range, the range grows by a power of two and every 2**k old bins merge exactly into one
new bin, so no count is ever split or approximated. Memory is one int64 array per
tensor, whatever the number of images.
"""

from __future__ import annotations

import math

import numpy as np

from .bin_counting import kernel

DEFAULT_BINS = 2048
# Below about this many values NumPy's passes are as fast as the kernel's call (measured on two cores, one thread
# counting, a copy of the values included: 1 K values 10 vs 15 us, 4 K 16 vs 16 us, 32 K 82 vs 33 us, 512 K 1295 vs
# 314 us). SKNet-50's tensors at 224, batch 4, and the reference model's at batch 4 are above.
KERNEL_MIN_VALUES = 4096


class NonFiniteValues(ValueError):
    """A tensor to count holds inf or NaN: no range can be taken from it."""


def finite_top(top: float) -> float:
    """``top``, a tensor's largest |x|, or NonFiniteValues where it is inf or NaN: the one check every range and
    running max of calibration goes through (the histogram's two paths, the legacy maxima)."""
    if not math.isfinite(top):
        raise NonFiniteValues("holds inf or NaN")
    return top


class StreamingHistogram:
    """Histogram of absolute values with exact power-of-two range growth."""

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 128 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 128, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.range = 0.0  # upper edge of the last bin; 0 until data arrives
        self.amax = 0.0  # exact largest |x| seen
        self.total = 0
        self.kernel_counted = 0  # of `total`, the values numba's kernel counted (the rest: NumPy): calib.json says which

    @classmethod
    def from_counts(cls, counts: np.ndarray, range_: float, amax: float) -> "StreamingHistogram":
        hist = cls(len(counts))
        hist.counts = np.asarray(counts, dtype=np.int64).copy()
        hist.range, hist.amax, hist.total = float(range_), float(amax), int(hist.counts.sum())
        return hist

    @property
    def bin_width(self) -> float:
        return self.range / self.bins

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, self.bins + 1)

    def _grow(self, new_max: float) -> None:
        factor_log2 = math.ceil(math.log2(new_max / self.range))
        factor = 1 << factor_log2
        if factor >= self.bins:
            merged = np.zeros(self.bins, dtype=np.int64)
            merged[0] = self.counts.sum()
        else:
            merged = np.zeros(self.bins, dtype=np.int64)
            merged[: self.bins // factor] = self.counts.reshape(-1, factor).sum(axis=1)
        self.counts = merged
        self.range *= factor

    def update(self, x: np.ndarray, consume: bool = False) -> None:
        """Count ``x``'s absolute values. ``consume``: ``x`` is a float32 array the caller is done with, used as
        scratch (calibration's tapped outputs: the largest tensors are counted without a copy of them)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size and self._count_with_kernel(x):
            return
        self._update_numpy(x, consume)

    def _count_with_kernel(self, x: np.ndarray) -> bool:
        """Count ``x`` with numba's kernel; False where there is none or ``x`` is small (the NumPy path counts).
        Values above the range (the first batch's: all but zeros) make it grow to their largest, as the NumPy path
        does, and the kernel counts again: two fast passes where the NumPy path took five slow ones."""
        count = kernel() if x.size >= KERNEL_MIN_VALUES else None
        if count is None:
            return False
        flat = np.ascontiguousarray(x).ravel()
        counts, top, outside = count(flat, self.range, self._scale(), self.bins)
        if outside:
            self._take_range(finite_top(top))
            counts, top, outside = count(flat, self.range, self._scale(), self.bins)
            if outside:  # cannot happen (the range now holds the largest value): counted by NumPy rather than lost
                return False
        self.counts += counts
        self.amax = max(self.amax, top)
        self.total += flat.size
        self.kernel_counted += flat.size
        return True

    def _scale(self) -> np.float32:
        # With no range yet only zeros are inside it: bin 0 whatever the scale.
        return np.float32(self.bins / self.range if self.range else 0.0)

    def _take_range(self, top: float) -> None:
        """The range after seeing a value of ``top`` above it: ``top`` itself for the first, else a power-of-two growth."""
        if self.range == 0.0:
            self.range = top
        elif top > self.range:
            self._grow(top)

    def _update_numpy(self, x: np.ndarray, consume: bool) -> None:
        in_place = consume and x.flags.writeable and x.flags.c_contiguous
        a = np.abs(x, out=x if in_place else None).ravel()
        if a.size == 0:
            return
        top = finite_top(float(a.max()))
        self.amax = max(self.amax, top)
        if top == 0.0 and self.range == 0.0:
            self.counts[0] += a.size
            self.total += a.size
            return
        self._take_range(top)
        # The same float32 product and truncation as ever (so the same bins), in place where it can be:
        # calibration spends its time beside inference here.
        np.multiply(a, self.bins / self.range, out=a)
        # intp indices: bincount converts any other integer type first, a second pass. An index at or past
        # `bins` (a value equal to the range) is counted there and folded into the last bin: what clamping
        # every index gives, without a pass over all of them.
        counts = np.bincount(a.astype(np.intp), minlength=self.bins + 1)
        counts[self.bins - 1] += counts[self.bins :].sum()
        self.counts += counts[: self.bins]
        self.total += a.size

    def to_dict(self) -> dict:
        # Trailing empty bins carry no information; JSON stays small.
        nonzero = np.flatnonzero(self.counts)
        used = int(nonzero[-1]) + 1 if nonzero.size else 0
        return {"bins": self.bins, "range": self.range, "amax": self.amax, "counts": self.counts[:used].tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamingHistogram":
        counts = np.zeros(int(d["bins"]), dtype=np.int64)
        counts[: len(d["counts"])] = d["counts"]
        return cls.from_counts(counts, d["range"], d["amax"])
