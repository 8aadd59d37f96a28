"""Choosing a tensor's INT8 range (amax) from its histogram of |x|.

All four work on the same :class:`StreamingHistogram`, so ``calib.json`` can switch method
without running the images again. Symmetric INT8: scale = amax / 127.

- ``max``: the largest |x| seen. No clipping, coarsest steps.
- ``percentile``: the |x| below which ``p`` percent of the values lie.
- ``entropy``: TensorRT's threshold search (EntropyCalibration2, as presented in
  "8-bit Inference with TensorRT", Migacz, GTC 2017): the threshold whose 128-level
  quantized distribution is closest in KL divergence to the clipped original.
- ``mse``: the amax that minimises the expected squared error, rounding inside the
  range plus clipping outside it.

The first histogram bin is left out of the entropy search. After a ReLU it holds the
exact zeros (36-66 % of an SKNet's conv inputs), which quantize exactly at any scale; the
rest of it rounds to zero at any amax above 1/8 of the range. Counted, that spike
dominates both distributions and pulls the KL optimum to about a tenth of the real range,
clipping real signal: INT8 top-1 agreement of the reference model falls from 99 % to 16 %
(README, "The entropy hole"). NVIDIA's pytorch-quantization calibrator guards against the
same spike by replacing the first bin's count with the second's.
"""

from __future__ import annotations

import numpy as np

from .histogram import StreamingHistogram

METHODS = ("max", "percentile", "entropy", "mse")
QUANT_LEVELS = 128  # |q| in 0..127 for symmetric INT8, TensorRT's num_quantized_bins
# Floor for amax: a tensor that is always zero still needs a positive, finite scale.
MIN_AMAX = 1e-8


def amax_max(hist: StreamingHistogram) -> float:
    return hist.amax


def amax_percentile(hist: StreamingHistogram, percentile: float = 99.99) -> float:
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if hist.total == 0 or hist.range == 0:
        return hist.amax
    cdf = np.cumsum(hist.counts) / hist.total
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return min(hist.amax, (idx + 1) * hist.bin_width)


def _kl_divergences(counts: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """KL(P_i || Q_i) for every threshold bin i in [start, len(counts)].

    P_i: the first i bins, the outliers (the bins from i on) clipped into the last of them. Q_i: those i bins
    merged into QUANT_LEVELS groups, each group's mass spread evenly over the group's non-empty bins. Summed
    group by group rather than bin by bin: inside a group q is one value, so sum p log q is the group's mass
    times its log q, and sum p log p comes from one running sum. 128 terms per threshold instead of i (SKNet-50's
    54 searches: 2.9 s -> 0.09 s); tests/amax_reference.py holds the bin-by-bin definition it must agree with.
    """
    counts = np.asarray(counts)
    bins = len(counts)
    c = counts.astype(np.float64)
    mass_before = np.concatenate(([0.0], np.cumsum(c)))  # exact: integer counts, far below 2**53
    nonempty_before = np.concatenate(([0], np.cumsum(counts > 0)))
    c_log_c_before = np.concatenate(([0.0], np.cumsum(_x_log_x(c))))
    total = mass_before[bins]  # P's mass whatever the threshold: the outliers stay in it
    candidates = np.arange(start, bins + 1)
    out = np.empty(len(candidates))
    levels = np.arange(QUANT_LEVELS + 1)
    for s in range(0, len(candidates), _KL_CHUNK):
        i = candidates[s : s + _KL_CHUNK]
        # Group g holds the bins b with (b * QUANT_LEVELS) // i == g: [edges[g], edges[g + 1]).
        edges = (levels * i[:, None] + QUANT_LEVELS - 1) // QUANT_LEVELS
        mass = np.diff(mass_before[edges], axis=1)
        nonempty = np.diff(nonempty_before[edges], axis=1)
        kept = mass_before[i]  # Q's mass: the bins below the threshold
        outliers = total - kept
        last = c[i - 1]
        p_log_p = c_log_c_before[i - 1] + _x_log_x(last + outliers)
        filled = mass > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            log_q = np.log(mass / nonempty) - np.log(kept)[:, None]  # log of each group's q, normalised
            # The outliers sit in the last bin, which is in the last group.
            p_log_q = np.where(filled, mass * log_q, 0.0).sum(axis=1) + np.where(outliers > 0, outliers * log_q[:, -1], 0.0)
            kl = (p_log_p - p_log_q) / total - np.log(total)
        # Q empty, or P with mass where Q has none: the outliers land on an empty last bin.
        out[s : s + _KL_CHUNK] = np.where((kept == 0) | ((last == 0) & (outliers > 0)), np.inf, kl)
    return candidates, out


_KL_CHUNK = 256  # thresholds per vectorised step: 256 x 129 float64 arrays


def _x_log_x(x: np.ndarray) -> np.ndarray:
    """x log x, 0 where x is 0."""
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def amax_entropy(hist: StreamingHistogram, ignore_zero_bin: bool = True) -> float:
    if hist.total == 0 or hist.range == 0:
        return hist.amax
    counts = hist.counts.copy()
    if ignore_zero_bin:
        counts[0] = 0  # the exact-zero spike; see the module docstring
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return hist.amax
    used = int(nonzero[-1]) + 1
    if used <= QUANT_LEVELS:
        # Fewer occupied bins than INT8 levels: nothing to gain from clipping.
        return hist.amax
    candidates, kl = _kl_divergences(counts[:used], QUANT_LEVELS)
    best = candidates[len(kl) - 1 - int(np.argmin(kl[::-1]))]  # the largest threshold among ties
    return min(hist.amax, best * hist.bin_width)


def amax_mse(hist: StreamingHistogram) -> float:
    if hist.total == 0 or hist.range == 0:
        return hist.amax
    w = hist.bin_width
    centers = (np.arange(hist.bins) + 0.5) * w
    c = hist.counts.astype(np.float64)
    # suffix sums for the clipping term sum_{b >= k} c_b (x_b - a)^2
    s0 = np.cumsum(c[::-1])[::-1]
    s1 = np.cumsum((c * centers)[::-1])[::-1]
    s2 = np.cumsum((c * centers**2)[::-1])[::-1]
    count_before = np.concatenate(([0.0], np.cumsum(c)))
    square_before = np.concatenate(([0.0], np.cumsum(c * centers**2)))
    k = np.arange(QUANT_LEVELS // 8, hist.bins + 1)  # every candidate amax at once: a = k bins
    a = k * w
    step = a / 127.0
    below = np.minimum(k, hist.bins - 1)
    clip = np.where(k < hist.bins, s2[below] - 2 * a * s1[below] + a * a * s0[below], 0.0)
    # Inside the range: a value under half a step rounds to zero (error x^2, and exact zeros cost nothing);
    # above that, rounding error is uniform, variance step^2/12. The bins under half a step come first.
    to_zero = np.minimum(np.searchsorted(centers, step / 2), k)
    rounding = square_before[to_zero] + step * step / 12.0 * (count_before[k] - count_before[to_zero])
    err = clip + rounding
    best = int(np.argmin(err))  # the smallest amax among ties
    return min(hist.amax, float(a[best])) if np.isfinite(err[best]) else hist.amax


def compute_amax(hist: StreamingHistogram, method: str, percentile: float = 99.99) -> float:
    if method == "max":
        amax = amax_max(hist)
    elif method == "percentile":
        amax = amax_percentile(hist, percentile)
    elif method == "entropy":
        amax = amax_entropy(hist)
    elif method == "mse":
        amax = amax_mse(hist)
    else:
        raise ValueError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    return max(float(amax), MIN_AMAX)
