"""How a graph is exported: options that need no PyTorch, so that a command that only checks whether
an export is up to date (a no-op build, the device) does not import it."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

from ..errors import UsageError
from ..fields import option

# Split with a sizes input needs opset 13, as do per-channel Q/DQ for the INT8 stage;
# TensorRT 10.3 (JetPack 6) parses opsets up to 20.
MIN_OPSET, MAX_OPSET = 13, 20
# The SK select forms of sk_rewrite (kept here, beside the option that names them).
SELECT_FORMS = ("auto", "sigmoid", "softmax4d", "exp")
# torch's two ONNX exporters. "torch-export" (the torch.export-based exporter, dynamo=True, needs onnxscript)
# is torch's path forward: after graph_passes its graphs equal the other's op for op, with identical logits,
# on every family (benchmarks/exporters.py), but it writes opset 18 or newer only (onnx's version converter
# fails on its ReduceMean going down to 17) and takes 5-15 s per model on 2 cores. "torchscript"
# (torch.onnx.export(dynamo=False), which torch deprecates) writes exactly the opset asked for in about 1 s.
# "auto", the default, is torch.export wherever it can write the opset asked for, TorchScript for opset 17
# (the default: JetPack 5.1/6.0's TensorRT 8.5/8.6 read the FP32 graph of their weakly typed INT8 path).
EXPORTERS = ("auto", "torchscript", "torch-export")
TORCH_EXPORT_MIN_OPSET = 18


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (before any model is built)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


@dataclass(frozen=True)
class ExportOptions:
    """How the graph is exported.

    Attributes:
        batch: static batch size (ignored when ``dynamic_batch`` is set).
        dynamic_batch: make the batch dimension dynamic, up to this size (the TensorRT
            optimisation profile's max).
        opset: ONNX opset.
        select_form: SK select form, see :mod:`sk_edge.export.sk_rewrite`.
        exporter: torch's exporter, one of :data:`EXPORTERS` (``auto``: :meth:`resolved`).
    """

    batch: int = field(default=1, metadata=option("Static batch size.", kind="int"))
    dynamic_batch: int | None = field(
        default=None, metadata=option("Dynamic batch dimension, 1..MAX.", kind="int", metavar="MAX")
    )
    opset: int = field(default=17, metadata=option(f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}).", kind="int"))
    select_form: str = field(
        default="auto", metadata=option("SK select rewrite: auto = sigmoid for 2 branches, exp otherwise.", choices=SELECT_FORMS)
    )
    exporter: str = field(
        default="auto",
        metadata=option(
            f"torch's ONNX exporter: torch-export (torch.export-based; opset {TORCH_EXPORT_MIN_OPSET}+, needs onnxscript), "
            "torchscript, or auto: torch-export where it can write the opset, torchscript otherwise (opset 17).",
            choices=EXPORTERS,
        ),
    )

    @classmethod
    def recorded(cls, settings: dict) -> "ExportOptions":
        """The options an export.json's ``settings`` were made with (one written before ``exporter`` was recorded was
        made by TorchScript, the only exporter then)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"exporter": "torchscript", **{k: v for k, v in settings.items() if k in names}})

    def resolved(self) -> "ExportOptions":
        """These options with ``exporter="auto"`` made concrete: torch.export where it writes the opset asked for
        (18 and newer, with onnxscript installed), TorchScript otherwise. What export.json records and keys on."""
        if self.exporter != "auto":
            return self
        writes_opset = self.opset >= TORCH_EXPORT_MIN_OPSET and _importable("onnxscript")
        return dataclasses.replace(self, exporter="torch-export" if writes_opset else "torchscript")

    def differences(self, recorded: "ExportOptions") -> list[str]:
        """The options that differ from an earlier export's, as ``--opset 18 (it has 17)`` (empty: up to date).

        One rule for ``export`` and ``build``: the same model with other options is exported again,
        never "up to date". ``auto`` is compared as the exporter it stands for."""
        mine, theirs = dataclasses.asdict(self.resolved()), dataclasses.asdict(recorded.resolved())
        if self.dynamic_batch is not None or recorded.dynamic_batch is not None:
            mine.pop("batch"), theirs.pop("batch")  # a dynamic export has no static batch
        return [f"--{k.replace('_', '-')} {mine[k]} (it has {theirs[k]})" for k in mine if mine[k] != theirs[k]]

    def validate(self) -> None:
        if self.batch < 1:
            raise UsageError(f"--batch must be at least 1, got {self.batch}")
        if self.dynamic_batch is not None and self.batch != 1:
            raise UsageError("--batch and --dynamic-batch exclude each other; pass one")
        if self.dynamic_batch is not None and self.dynamic_batch < 1:
            raise UsageError(f"--dynamic-batch must be at least 1, got {self.dynamic_batch}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(f"--opset {self.opset} is not supported; use {MIN_OPSET} to {MAX_OPSET} (17 is the default)")
        if self.select_form not in SELECT_FORMS:
            raise UsageError(f"--select-form must be one of {', '.join(SELECT_FORMS)}")
        if self.exporter not in EXPORTERS:
            raise UsageError(f"--exporter must be one of {', '.join(EXPORTERS)}")
        if self.exporter == "torch-export" and self.opset < TORCH_EXPORT_MIN_OPSET:
            raise UsageError(
                f"--exporter torch-export writes opset {TORCH_EXPORT_MIN_OPSET} or newer; "
                f"add --opset {TORCH_EXPORT_MIN_OPSET} (or use --exporter torchscript for opset {self.opset})"
            )
        if self.exporter == "torch-export" and not _importable("onnxscript"):
            raise UsageError("--exporter torch-export needs onnxscript: pip install 'sk-edge[torch-export]'")

    @property
    def trace_batch(self) -> int:
        # A dynamic graph is traced at batch 2 so that nothing gets specialised to 1.
        return min(2, self.dynamic_batch) if self.dynamic_batch else self.batch
