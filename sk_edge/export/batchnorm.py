"""BatchNorm folding arithmetic, shared by the PyTorch rewrite and the ONNX graph pass.

In inference BatchNorm is the per-channel affine map y = scale * x + shift with
scale = gamma / sqrt(var + eps) and shift = beta - mean * scale, so a convolution or
fully connected layer followed by it equals one with weight W * scale (per output
channel) and bias b * scale + shift. The arithmetic runs in float64 and is rounded once.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def bn_scale_shift(
    gamma: np.ndarray | None, beta: np.ndarray | None, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) of an inference-mode BatchNorm, in float64."""
    mean = np.asarray(mean, dtype=np.float64)
    scale = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    if gamma is not None:
        scale = scale * np.asarray(gamma, dtype=np.float64)
    shift = -mean * scale
    if beta is not None:
        shift = shift + np.asarray(beta, dtype=np.float64)
    return scale, shift


def fold_into_weights(
    weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fold a per-output-channel affine map into (weight, bias); output axis is 0."""
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = b * scale + shift
    return w.astype(weight.dtype), b.astype(weight.dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _np_or_none(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else _np(t)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` with ``bn`` (inference statistics) folded into it, with a bias.

    The copy keeps ``conv``'s class, so subclasses that only change padding (timm's
    ``Conv2dSame``) keep their behaviour.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale, shift = bn_scale_shift(_np_or_none(bn.weight), _np_or_none(bn.bias), _np(bn.running_mean), _np(bn.running_var), bn.eps)
    weight, bias = fold_into_weights(_np(conv.weight), _np_or_none(conv.bias), scale, shift)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)
    folded.bias = nn.Parameter(torch.from_numpy(bias), requires_grad=False)
    return folded
