"""Fine-tune an SKNet, then build and judge its INT8 engine, from Python: sk-edge's library API.

    python examples/train_and_build.py --steps 40 --workdir work

The training part is a stand-in for yours: it fine-tunes the bundled SK-Digits model for a few
steps and saves a checkpoint with its preprocessing (mean, std, input size), which sk-edge reads
back. The last lines are what a training script adds to end with a verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sk_edge
from sk_edge.images import to_tensor
from sk_edge.models import build_model
from sk_edge.reference import PREPROCESS, digits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps of 32 images")
    parser.add_argument("--workdir", type=Path, default=Path("work"))
    args = parser.parse_args()
    torch.manual_seed(0)

    # --- your training: here, a short fine-tune of the bundled model on SK-Digits training renders
    model = build_model("sknet26-digits").module.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = digits.sample("train", args.steps * 32, seed=11)
    for _step in range(args.steps):
        chunk = [next(batches) for _ in range(32)]
        x = torch.from_numpy(np.stack([to_tensor(Image.fromarray(img), PREPROCESS) for img, _, _ in chunk]))
        y = torch.tensor([label for _, label, _ in chunk])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.workdir.parent / f"{args.workdir.name}-finetuned.pth"
    # The preprocessing beside the weights: sk-edge reads mean, std and input_size from the checkpoint.
    torch.save({"state_dict": model.state_dict(), "mean": list(PREPROCESS.mean), "std": list(PREPROCESS.std),
                "input_size": PREPROCESS.input_size}, checkpoint)
    print(f"fine-tuned {args.steps} steps, last loss {loss.item():.3f}; saved {checkpoint}", file=sys.stderr)

    # --- what a training script adds: an INT8 build and its verdict
    outcome = sk_edge.build(model="sknet26-digits", weights=checkpoint, precision="int8", workdir=args.workdir,
                            preprocess={"resize": "stretch"}, force=True, log=lambda line: print(line, file=sys.stderr))
    print(outcome.summary)
    if not outcome.passed:
        print(f"not safe to ship: {outcome.failure}", file=sys.stderr)
        return 1
    print(f"INT8 for {outcome.precision_mix['int8_mac_share']:.1%} of the MACs; "
          f"top-1 agreement {outcome.verdict['metrics']['top1_agreement']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
