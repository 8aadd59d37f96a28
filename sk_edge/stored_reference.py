"""The FP32 PyTorch reference, stored on the host for devices without PyTorch.

When ``sk-edge verify`` (or the verify step of ``build``) runs the PyTorch model, it writes
``reference.npz``: the images it judged on, as the uint8 pixels the model's preprocessing made
of them (resized, before normalisation: smaller than float tensors, and normalised again with
the same float32 arithmetic they give the same input bit for bit), the FP32 PyTorch logits,
their names and labels. Its sidecar ``reference.json`` names what they were computed from: the
exported graph and the state dict (by sha256), the preprocessing, and the images (by content).

On a Jetson without PyTorch, verify judges the engine against these outputs, which is the
reference the user trained, instead of the FP32 ONNX graph; on the host it saves re-running
PyTorch. A stored reference made for another export or preprocessing is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import artifacts
from .errors import SkEdgeError
from .images import normalize
from .preprocess import Preprocess
from .sidecars import ReferenceInfo
from .workdir import FP32_ONNX, REFERENCE_JSON, REFERENCE_NPZ, require_artifact

MADE_BY = "sk-edge verify --images DIR"


def _made_from(export) -> dict:
    """What the stored outputs depend on: the export (graph and weights) and the preprocessing."""
    return {
        "model": export.model,
        FP32_ONNX: export.fp32_sha256,
        "state_dict_sha256": export.state_dict_sha256,
        "preprocess": export.preprocess_record,
    }


@dataclass
class StoredReference:
    names: list[str]
    pixels: np.ndarray  # (N, H, W, 3) uint8
    logits: np.ndarray  # (N, classes) float32, FP32 PyTorch
    labels: dict[str, int] | None
    info: ReferenceInfo  # reference.json

    def batches(self, pre: Preprocess, batch: int) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """(network input, names, reference logits), ``batch`` images at a time."""
        for i in range(0, len(self.names), batch):
            yield normalize(self.pixels[i : i + batch], pre), self.names[i : i + batch], self.logits[i : i + batch]

    @property
    def description(self) -> str:
        return f"{self.info.description}, run on the host (torch {self.info.torch_version}, {self.info.created})"


def store(
    workdir: Path,
    export,
    names: list[str],
    pixels: list[np.ndarray],
    logits: np.ndarray,
    labels: dict[str, int] | None,
    images: dict,
    description: str,
) -> None:
    """Write reference.npz and reference.json (atomically, the sidecar last)."""
    import torch

    workdir = Path(workdir)
    label_array = np.array([labels.get(n, -1) if labels else -1 for n in names], dtype=np.int64)
    with artifacts.atomic_output(workdir / REFERENCE_NPZ) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                names=np.array(names, dtype=str),
                pixels=np.stack(pixels).astype(np.uint8),
                logits=np.asarray(logits, dtype=np.float32),
                labels=label_array,
            )
    ReferenceInfo.write(
        workdir / REFERENCE_JSON,
        workdir / REFERENCE_NPZ,
        _made_from(export),
        images,
        description,
        torch.__version__,
        count=len(names),
        labelled=int((label_array >= 0).sum()),
    )


def stored_for(workdir: Path, export) -> StoredReference | None:
    """The stored reference, when the work directory has one made for its current export.

    None when there is none; an error when the file does not match its sidecar; a
    :class:`StaleReference` when it was made for another export or preprocessing.
    """
    workdir = Path(workdir)
    if not (workdir / REFERENCE_NPZ).exists() and not (workdir / REFERENCE_JSON).exists():
        return None
    try:
        doc = require_artifact(workdir, REFERENCE_JSON, REFERENCE_NPZ, MADE_BY)
    except SkEdgeError:  # a missing or damaged half: one message, whichever half it is
        raise SkEdgeError(
            f"'{workdir / REFERENCE_NPZ}' does not match its {REFERENCE_JSON} (one is missing, or changed after it was "
            "written): delete both and re-run `sk-edge verify --images DIR` on the host (with PyTorch) to store them "
            "again, or pass --images DIR to judge without them"
        ) from None
    info = ReferenceInfo.from_doc(doc, workdir / REFERENCE_JSON)
    if info.made_from != _made_from(export):
        changed = [k for k, v in _made_from(export).items() if info.made_from.get(k) != v]
        raise StaleReference(
            f"'{workdir / REFERENCE_NPZ}' holds PyTorch outputs for another {' and '.join(changed) or 'export'} than the "
            "work directory's"
        )
    try:
        with np.load(workdir / REFERENCE_NPZ, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            pixels, logits, labels = data["pixels"], data["logits"], data["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise SkEdgeError(f"cannot read '{workdir / REFERENCE_NPZ}' ({exc}); re-run `{MADE_BY}` on the host") from None
    table = {n: int(y) for n, y in zip(names, labels) if y >= 0}
    if not (len(names) == len(pixels) == len(logits) == info.count):
        raise SkEdgeError(
            f"'{workdir / REFERENCE_NPZ}' holds {len(names)} names, {len(pixels)} images and {len(logits)} "
            f"outputs where {REFERENCE_JSON} says {info.count}; re-run `{MADE_BY}` on the host"
        )
    return StoredReference(names, pixels, logits, table or None, info)


class StaleReference(SkEdgeError):
    """reference.npz was made for another export or preprocessing."""
