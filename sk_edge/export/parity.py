"""Numerical parity between the original PyTorch model and the exported graph."""

from __future__ import annotations

from typing import Callable

import numpy as np

PARITY_SEED = 0
PARITY_SAMPLES = 8
# Float32 rounding through ~50 layers stays near 1e-6 relative; 1e-5 relative (1e-4 at
# logits of magnitude 10) leaves room for reordered sums yet catches any real mismatch.
RELATIVE_TOLERANCE = 1e-5


def parity_inputs(shape: tuple[int, int, int], samples: int = PARITY_SAMPLES, seed: int = PARITY_SEED) -> np.ndarray:
    """A fixed batch of standard-normal inputs (the scale of normalised images)."""
    return np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)


def _run_batched(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])


def compare(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    candidate_batch: int,
) -> dict:
    """Max |logit difference| and top-1 agreement of ``candidate`` against ``reference``.

    ``candidate_batch`` is the batch the candidate graph accepts (its static batch, or a
    batch within its dynamic range); the reference sees the same samples.
    """
    ref = _run_batched(reference, x, candidate_batch)
    out = _run_batched(candidate, x, candidate_batch)
    max_abs_logit = float(np.abs(ref).max())
    diff = float(np.abs(ref - out).max())
    tolerance = RELATIVE_TOLERANCE * max(10.0, max_abs_logit)
    return {
        "samples": int(len(x)),
        "inputs": f"{len(x)} x N(0, 1), seed {PARITY_SEED}",
        "max_abs_diff": diff,
        "max_abs_logit": max_abs_logit,
        "tolerance": tolerance,
        "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "reference_finite": bool(np.isfinite(ref).all()),
        "passed": bool(diff <= tolerance),
    }
