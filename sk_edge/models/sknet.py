"""Selective Kernel Networks as described in the paper.

Li, Wang, Hu, Yang: "Selective Kernel Networks", CVPR 2019 (arXiv:1903.06586).

This is the *reference* form: written to read like the paper (Split, Fuse, Select with a
softmax across branches on a 5-D stack), because it is what people train. The export
stage replaces every :class:`SelectiveKernelConv` with an equivalent deployment form
(BatchNorm folded, no 5-D tensors, no Softmax); see :mod:`sk_edge.export.sk_rewrite`.

SKNet-26/50/101 are ResNeXt-style bottleneck networks whose grouped 3x3 convolution is
replaced by an SK convolution, with the paper's defaults M=2 branches, G=32 groups,
reduction r=16 and minimum attention width L=32 (Table 1 of the paper).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def attention_width(channels: int, reduction: int, min_dim: int) -> int:
    """The paper's d = max(C / r, L): width of the fused descriptor z."""
    return max(channels // reduction, min_dim)


class SelectiveKernelConv(nn.Module):
    """SK convolution (Split, Fuse, Select), section 3.1 of the paper.

    Split: M branches of 3x3 grouped convolutions with dilation 1..M (the paper's 5x5
    branch is a 3x3 with dilation 2), each followed by BatchNorm and ReLU.
    Fuse: U = sum of the branches, s = global average pool of U, z = ReLU(BN(FC(s))) with
    d = max(C/r, L) channels.
    Select: one FC per branch maps z back to C channels; a softmax across the branches
    gives the attention a_m, and V = sum_m a_m * U_m.

    The FCs are 1x1 convolutions on the pooled (B, C, 1, 1) descriptor, which is the same
    map as a Linear layer and keeps every tensor 4-D.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        branches: int = 2,
        groups: int = 32,
        reduction: int = 16,
        min_dim: int = 32,
    ):
        super().__init__()
        if branches < 2:
            raise ValueError(f"an SK convolution needs at least 2 branches, got {branches}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide both channel counts ({in_channels}, {out_channels})")
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel_size=3,
                    stride=stride,
                    padding=dilation,
                    dilation=dilation,
                    groups=groups,
                    bias=False,
                ),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for dilation in range(1, branches + 1)
        )
        d = attention_width(out_channels, reduction, min_dim)
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels, d, kernel_size=1, bias=False),
            nn.BatchNorm2d(d),
            nn.ReLU(inplace=True),
        )
        self.select = nn.ModuleList(nn.Conv2d(d, out_channels, kernel_size=1, bias=False) for _ in range(branches))

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-branch, per-channel attention a, shape (B, M, C, 1, 1); sums to 1 over M."""
        return self._split_and_attend(x)[1]

    def _split_and_attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # (B, M, C, H, W)
        s = F.adaptive_avg_pool2d(feats.sum(dim=1), 1)
        z = self.fuse(s)
        logits = torch.stack([fc(z) for fc in self.select], dim=1)  # (B, M, C, 1, 1)
        return feats, torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, attn = self._split_and_attend(x)
        return (feats * attn).sum(dim=1)


class SKBottleneck(nn.Module):
    """ResNeXt bottleneck with the grouped 3x3 convolution replaced by an SK convolution.

    1x1 conv (in -> mid), SK conv (mid -> mid, carries the stride), 1x1 conv (mid -> out),
    identity or projection shortcut, ReLU after the residual sum.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, **sk_args):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
        )
        self.sk = SelectiveKernelConv(mid_channels, mid_channels, stride=stride, **sk_args)
        self.conv3 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.sk(self.conv1(x)))
        return self.act(out + self.shortcut(x))


class SKNet(nn.Module):
    """SKNet: a 7x7 stem, four stages of :class:`SKBottleneck`, global pooling and an FC.

    Args:
        layers: bottlenecks per stage; (3, 4, 6, 3) is SKNet-50.
        num_classes: classifier outputs.
        branches: M, kernels per SK unit (dilations 1..M).
        groups: G, groups of every branch convolution.
        reduction: r, attention reduction ratio.
        min_dim: L, minimum attention width.
        base_width: SK width of the first stage; stage i uses base_width * 2**i, and its
            output is twice that (128 -> 256 in the paper's first stage).
        stem_width: channels of the 7x7 stem.
        in_chans: input channels.

    The network downsamples by 32 (:attr:`total_stride`); input height and width should
    be multiples of it.
    """

    total_stride = 32

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        branches: int = 2,
        groups: int = 32,
        reduction: int = 16,
        min_dim: int = 32,
        base_width: int = 128,
        stem_width: int = 64,
        in_chans: int = 3,
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        sizes = dict(
            num_classes=num_classes,
            groups=groups,
            reduction=reduction,
            min_dim=min_dim,
            base_width=base_width,
            stem_width=stem_width,
            in_chans=in_chans,
        )
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of 1 or more, got {value!r}")
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        sk_args = dict(branches=branches, groups=groups, reduction=reduction, min_dim=min_dim)
        stages = []
        in_channels = stem_width
        for i, depth in enumerate(layers):
            mid = base_width * 2**i
            out = mid * 2
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(SKBottleneck(in_channels, mid, out, stride, **sk_args))
                in_channels = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.fc(x)


def sknet26(**kwargs) -> SKNet:
    """SKNet-26: (2, 2, 2, 2) bottlenecks."""
    return SKNet(layers=(2, 2, 2, 2), **kwargs)


def sknet50(**kwargs) -> SKNet:
    """SKNet-50: (3, 4, 6, 3) bottlenecks, the paper's Table 1."""
    return SKNet(layers=(3, 4, 6, 3), **kwargs)


def sknet101(**kwargs) -> SKNet:
    """SKNet-101: (3, 4, 23, 3) bottlenecks."""
    return SKNet(layers=(3, 4, 23, 3), **kwargs)
