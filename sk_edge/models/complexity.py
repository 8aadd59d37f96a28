"""Parameter and multiply-accumulate counts.

GMACs are counted the way the SKNet paper (and the ResNeXt paper before it) counts
"FLOPs": one multiply-add per weight per output position of every convolution and fully
connected layer; BatchNorm, activations, pooling and element-wise ops are not counted.
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a (1, in_chans, size, size) or (1, in_chans, H, W) input."""
    height, width = input_size if isinstance(input_size, tuple) else (input_size, input_size)
    total = 0

    def on_conv(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        total += out[0].numel() * per_output

    def on_linear(mod: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * mod.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, height, width))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total
