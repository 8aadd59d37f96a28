"""The bundled reference model: an SKNet-26 at a quarter of the paper's width, trained on
SK-Digits (:mod:`sk_edge.reference.digits`), and what it needs to be judged.

It is the default model of ``sk-edge build``, so that drift and latency numbers on a fresh
machine come from a trained network and real images. Trained by
``benchmarks/train_reference.py``; its accuracy is in the README.
"""

from __future__ import annotations

from pathlib import Path

from ..preprocess import Preprocess

NAME = "sknet26-digits"
WEIGHTS = Path(__file__).parent / "sknet26_digits.pt"
NUM_CLASSES = 10
INPUT_SIZE = 64
# Paper defaults M=2, r=16, L=32 scaled with the width: r=8, L=16 keep d = max(C/r, L)
# above the number of groups at every stage.
ARCH = dict(layers=(2, 2, 2, 2), base_width=32, stem_width=16, groups=8, reduction=8, min_dim=16)
# Channel statistics of 3000 training renders (SK-Digits, seed 123).
PREPROCESS = Preprocess(
    input_size=INPUT_SIZE, mean=(0.322, 0.307, 0.276), std=(0.189, 0.179, 0.191), resize="resize", crop_pct=1.0
)


def build(num_classes: int = NUM_CLASSES, **kwargs):
    """The reference architecture (an :class:`~sk_edge.models.sknet.SKNet`), randomly initialised."""
    from ..models.sknet import SKNet  # here, not at the top: sk_edge.models imports this module

    return SKNet(num_classes=num_classes, **{**ARCH, **kwargs})
