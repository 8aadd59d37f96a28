"""PyTorch backend: the FP32 reference every other backend is measured against."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .runner import Lifecycle


class TorchRunner(Lifecycle):
    """Runs a PyTorch module in eval mode under ``torch.inference_mode``; numpy in, numpy out."""

    def __init__(self, module: nn.Module, device: str = "cpu"):
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()
