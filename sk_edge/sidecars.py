"""Typed views of the sidecars the stages read: one place that knows their layout and checks their schema.

``export.json`` is read by nearly every stage (calibration, quantize, the engine, verify, bench,
sensitivity, analyze, serving, the stored reference). Each reads it through :class:`ExportInfo`,
which checks the sidecar's schema version once and names a missing field in one line, instead of
indexing the same key paths in every module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import SIDECAR_SCHEMA
from .errors import SkEdgeError
from .preprocess import Preprocess
from .workdir import FP32_ONNX


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: str = "float32"

    @classmethod
    def from_doc(cls, doc: dict) -> "TensorSpec":
        return cls(doc["name"], tuple(doc["shape"]), doc.get("dtype", "float32"))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ExportInfo:
    """What export.json says of the exported model."""

    model: str  # the name it was built from: sknet26, timm:skresnet18, ...
    family: str
    model_args: dict
    weights_path: str | None
    weights_sha256: str | None
    state_dict_sha256: str
    fp32_sha256: str
    input: TensorSpec
    output: TensorSpec
    preprocess: Preprocess
    preprocess_record: dict  # the preprocessing exactly as recorded (what other sidecars copy and compare)
    input_shape: tuple  # (C, H, W)
    batch: int
    dynamic_batch: int | None
    class_names: list[str] | None
    doc: dict = field(repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return int(self.output.shape[-1])

    @property
    def max_batch(self) -> int:
        return self.dynamic_batch or self.batch or 1

    @classmethod
    def from_doc(cls, doc: dict, source: str | Path) -> "ExportInfo":
        schema = doc.get("schema")
        if schema != SIDECAR_SCHEMA:
            raise SkEdgeError(f"'{source}' has sidecar schema {schema}, and this sk-edge reads schema {SIDECAR_SCHEMA}; "
                              "re-export with this sk-edge (sk-edge export --force)")
        try:
            inputs, settings, model = doc["inputs"], doc["settings"], doc["model"]
            weights = inputs.get("weights") or {}
            return cls(
                model=inputs["model"], family=inputs.get("family", ""), model_args=inputs.get("model_args") or {},
                weights_path=weights.get("path"), weights_sha256=weights.get("sha256"),
                state_dict_sha256=inputs["state_dict_sha256"], fp32_sha256=doc["outputs"][FP32_ONNX]["sha256"],
                input=TensorSpec.from_doc(model["input"]), output=TensorSpec.from_doc(model["output"]),
                preprocess=Preprocess.from_dict(doc["preprocess"]), preprocess_record=doc["preprocess"],
                input_shape=tuple(settings["input_shape"]), batch=settings.get("batch") or 1,
                dynamic_batch=settings.get("dynamic_batch"), class_names=doc.get("class_names"), doc=doc,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SkEdgeError(f"'{source}' lacks or garbles the field {exc}; re-export (sk-edge export --force)") from None
