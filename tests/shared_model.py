"""The SKNet-26 M=3 model trained outside the project (tests/data/models/README.md), as a work directory.

Shared by tests/test_judging.py and benchmarks/ort_judging.py, so both measure the same graph.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "models"
M3_CHECKPOINT = DATA / "sknet26m3_digits.pth"
M3_ARGS = {"branches": 3, "groups": 8, "reduction": 8, "min_dim": 16, "base_width": 32, "stem_width": 16}


def export_m3(workdir: Path) -> None:
    """Export the M=3 model with the preprocessing it was trained with (mean 0.5, std 0.25, no crop)."""
    import torch

    from sk_edge.export import export_model
    from sk_edge.models import build_model
    from sk_edge.preprocess import Preprocess

    checkpoint = torch.load(M3_CHECKPOINT, weights_only=True, map_location="cpu")
    built = build_model("sknet26", checkpoint["num_classes"], checkpoint["input_size"], M3_CHECKPOINT, M3_ARGS)
    built.preprocess = Preprocess(input_size=checkpoint["input_size"], mean=tuple(checkpoint["mean"]),
                                  std=tuple(checkpoint["std"]), resize="resize", crop_pct=1.0)
    export_model(built, workdir)
