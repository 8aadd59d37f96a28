"""The entropy and MSE searches written threshold by threshold, as sk-edge computed them until it summed them
group by group (sk_edge/quantize/methods.py): the definition the fast searches must keep agreeing with."""

import numpy as np

from sk_edge.quantize.methods import QUANT_LEVELS


def kl_by_bins(counts: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """KL(P_i || Q_i) for every threshold bin i in [start, len(counts)], one threshold at a time."""
    nbins = len(counts)
    counts = counts.astype(np.float64)
    candidates = np.arange(start, nbins + 1)
    out = np.empty(len(candidates))
    for k, i in enumerate(candidates):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        group = (np.arange(i) * QUANT_LEVELS) // i
        nonzero = counts[:i] > 0
        group_mass = np.bincount(group, weights=counts[:i], minlength=QUANT_LEVELS)
        group_size = np.bincount(group, weights=nonzero, minlength=QUANT_LEVELS)
        q = np.where(nonzero, group_mass[group] / np.maximum(group_size[group], 1), 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if p_sum == 0 or q_sum == 0:
            out[k] = np.inf
            continue
        p, q = p / p_sum, q / q_sum
        mask = p > 0
        if np.any(q[mask] == 0):
            out[k] = np.inf
            continue
        out[k] = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
    return candidates, out


def mse_by_bins(counts: np.ndarray, range_: float, amax: float) -> float:
    """The amax of least expected squared error, one candidate at a time."""
    bins = len(counts)
    w = range_ / bins
    centers = (np.arange(bins) + 0.5) * w
    c = counts.astype(np.float64)
    s0 = np.cumsum(c[::-1])[::-1]
    s1 = np.cumsum((c * centers)[::-1])[::-1]
    s2 = np.cumsum((c * centers**2)[::-1])[::-1]
    best_a, best_err = amax, np.inf
    for k in range(QUANT_LEVELS // 8, bins + 1):
        a = k * w
        step = a / 127.0
        clip = (s2[k] - 2 * a * s1[k] + a * a * s0[k]) if k < bins else 0.0
        x = centers[:k]
        rounding = np.where(x < step / 2, x * x, step * step / 12.0)
        err = clip + float(np.dot(c[:k], rounding))
        if err < best_err:
            best_a, best_err = a, err
    return min(amax, best_a)


def best_threshold(candidates: np.ndarray, kl: np.ndarray) -> int:
    """The largest threshold among the least divergent, as amax_entropy picks it."""
    return int(candidates[len(kl) - 1 - int(np.argmin(kl[::-1]))])
