"""The export stage itself: a PyTorch SKNet becomes a clean FP32 ONNX graph.

``WORKDIR/model.fp32.onnx`` plus its sidecar ``WORKDIR/export.json``. The steps:

1. rewrite every SK unit into its deployment form (:mod:`.sk_rewrite`): BatchNorm folded,
   select step without Softmax or 5-D tensors;
2. ``torch.onnx.export`` with the exporter the options name (``auto`` by default: torch.export where it
   writes the opset, TorchScript at opset 17; see :data:`.options.EXPORTERS` for why);
3. graph clean-up with onnx-graphsurgeon (:mod:`.graph_passes`): Identity and Constant
   nodes out, any BatchNorm left folded, a global pool spelled one way whichever exporter wrote it;
4. the graph invariants (:mod:`.hygiene`), which also catch SK units the rewrite did not
   recognise;
5. parity of the graph on ONNX Runtime (CPU) against the *original* PyTorch model.

The stage is skipped when ``export.json`` was written for the same model weights,
settings, tool and library versions and ``model.fp32.onnx`` is intact.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch

from .. import artifacts
from ..backends.onnxruntime import OnnxRuntimeRunner
from ..backends.torch import TorchRunner
from ..errors import ParityError, SkEdgeError, UnsupportedModelError, UsageError
from ..models import BuiltModel
from ..models.complexity import count_macs, count_params
from ..names import EXPORT_JSON, FP32_ONNX
from ..sidecars import ExportInfo
from ..versions import library_versions
from .graph_passes import PassReport, clean_exported_graph
from .hygiene import graph_problems
from .parity import compare, parity_inputs
from .options import MAX_OPSET, MIN_OPSET, ExportOptions  # noqa: F401 - re-exported
from .sk_rewrite import RewriteReport, rewrite_sk_units

ONNX_NAME = FP32_ONNX  # the names table's, under the names this package has always exported
SIDECAR_NAME = EXPORT_JSON
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# torch's own deprecation notice for the TorchScript exporter, repeated on every call.
_KNOWN_NOISE = ("legacy TorchScript-based ONNX export", "The feature will be removed")


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    sidecar: dict
    skipped: bool


def state_dict_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def to_onnx(
    module: torch.nn.Module, input_shape: tuple[int, int, int], options: ExportOptions
) -> tuple[onnx.ModelProto, RewriteReport, PassReport, list[str]]:
    """Rewrite, export and clean ``module``; raise if the graph breaks an invariant.

    ``options.exporter`` picks torch's exporter (see :data:`~sk_edge.export.options.EXPORTERS`; ``auto`` is
    :meth:`~sk_edge.export.options.ExportOptions.resolved`); every pass after it works on plain ONNX, and
    :func:`~sk_edge.export.graph_passes.canonical_pooling` makes both exporters' graphs alike.
    """
    options.validate()
    options = options.resolved()
    rewritten, rewrite = rewrite_sk_units(module, options.select_form)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        if options.exporter == "torch-export":
            exported = _torch_export_onnx(rewritten, input_shape, options)
        else:
            exported = _torchscript_onnx(rewritten, input_shape, options)
    exporter_warnings = list(
        dict.fromkeys(
            str(w.message).splitlines()[0] for w in caught if not any(noise in str(w.message) for noise in _KNOWN_NOISE)
        )
    )
    model, passes = clean_exported_graph(onnx.load_from_string(exported))
    problems = graph_problems(model, allow_last_axis_softmax=options.select_form == "softmax4d")
    if problems:
        raise UnsupportedModelError(f"the exported graph breaks {len(problems)} sk-edge invariants, first: {problems[0]}")
    return model, rewrite, passes, exporter_warnings


def _torchscript_onnx(module: torch.nn.Module, input_shape: tuple[int, int, int], options: ExportOptions) -> bytes:
    """The serialized graph from torch's TorchScript-based exporter, at exactly ``options.opset``."""
    dynamic_axes = None
    if options.dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.zeros(options.trace_batch, *input_shape),),
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes file objects too; torch annotates paths only
        dynamo=False,
        opset_version=options.opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )
    return buffer.getvalue()


def _torch_export_onnx(module: torch.nn.Module, input_shape: tuple[int, int, int], options: ExportOptions) -> bytes:
    """The serialized graph from torch's torch.export-based exporter (it needs onnxscript: ExportOptions.validate)."""
    dynamic_shapes = None
    # A dynamic batch is traced at 2 even for --dynamic-batch 1: torch.export specialises a size-1 dim.
    batch = 2 if options.dynamic_batch else options.batch
    if options.dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},)
    try:
        program = torch.onnx.export(
            module,
            (torch.zeros(batch, *input_shape),),
            dynamo=True,
            opset_version=options.opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    except Exception as exc:  # torch.export raises many types; the first line says what failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"torch.export could not export the model ({first}); try --exporter torchscript") from exc
    assert program is not None  # dynamo=True always returns the program
    return program.model_proto.SerializeToString()


def _graph_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _trained_checkpoint(built) -> bool:
    """Whether the model's weights are a user's checkpoint (the bundled reference model's are its own)."""
    from ..reference import WEIGHTS as REFERENCE_WEIGHTS

    weights = getattr(built, "weights", None)
    return weights is not None and Path(weights).name != REFERENCE_WEIGHTS.name


def export_model(
    built: BuiltModel,
    workdir: str | Path,
    options: ExportOptions = ExportOptions(),
    force: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> ExportResult:
    """Export ``built`` into ``workdir``; skip when an up-to-date export is already there.

    ``built`` may come from :func:`sk_edge.models.build_model` or be assembled by hand
    around any module (e.g. a custom timm configuration).
    """
    options.validate()
    options = options.resolved()  # what export.json keys on and records: the exporter used, never "auto"
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"work directory '{workdir}' exists and is not a directory; pass another -w")
    onnx_path, sidecar_path = workdir / ONNX_NAME, workdir / SIDECAR_NAME
    module = built.module.eval()
    in_chans = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    input_shape = (in_chans, built.preprocess.height, built.preprocess.width)
    versions = library_versions()
    inputs, settings, key = _export_key(built, module, options, input_shape, versions)
    current = None if force else artifacts.up_to_date(sidecar_path, key)
    if current is not None:
        log(f"{onnx_path} is up to date (same model, weights, settings and tools); --force re-exports")
        return ExportResult(onnx_path, sidecar_path, current, skipped=True)

    t0 = time.perf_counter()
    _log_preprocessing(built, log)
    log(f"rewriting SK units and exporting {built.name} (opset {options.opset}, {options.exporter} exporter) ...")
    model, rewrite, passes, exporter_warnings = to_onnx(module, input_shape, options)
    if rewrite.count == 0:
        raise UsageError(
            f"{built.name} has no Selective Kernel units; sk-edge exports SKNets "
            "(see `sk-edge models`); for other CNNs use trtexec or Polygraphy directly"
        )
    log(
        f"  {rewrite.count} SK units rewritten ({', '.join(f'{n} {f}' for f, n in rewrite.summary()['select_forms'].items())}), "
        f"{len(model.graph.node)} nodes, {time.perf_counter() - t0:.1f}s"
    )
    for w in exporter_warnings:
        log(f"  exporter warning: {w}")
    serialized = model.SerializeToString()
    parity = _checked_parity(built, module, serialized, input_shape, options, log)
    with artifacts.atomic_output(onnx_path) as tmp:
        tmp.write_bytes(serialized)
    written = ExportInfo.write(
        sidecar_path,
        key,
        onnx_path,
        inputs=inputs,
        settings=settings,
        environment=versions,
        model=_model_record(built, module, model, input_shape, options),
        preprocess=built.preprocess.to_dict(),
        preprocess_sources=getattr(built, "preprocess_sources", None) or None,
        checkpoint_accuracy=getattr(built, "checkpoint_accuracy", None),
        class_names=getattr(built, "class_names", None),
        rewrite=rewrite.summary(),
        batchnorm=_batchnorm_accounting(module, model, rewrite, passes),
        graph_passes=passes.as_dict(),
        graph={
            "opset": _graph_opset(model),
            "exporter": options.exporter,
            "nodes": len(model.graph.node),
            "op_counts": _op_counts(model),
        },
        parity=parity,
        exporter_warnings=exporter_warnings,
    )
    log(f"wrote {onnx_path} and {sidecar_path} in {time.perf_counter() - t0:.1f}s")
    return ExportResult(onnx_path, sidecar_path, written.doc, skipped=False)


def _export_key(
    built: BuiltModel, module: torch.nn.Module, options: ExportOptions, input_shape: tuple[int, int, int], versions: dict
) -> tuple[dict, dict, str]:
    """(the export's inputs, its settings, its stage key): the model, its weights, the options and the tools."""
    weights = None
    if built.weights is not None:
        weights = {"path": str(built.weights), "sha256": artifacts.sha256_file(built.weights)}
    inputs = {
        "model": built.name,
        "family": built.family,
        "model_args": built.args,
        "weights": weights,
        "state_dict_sha256": state_dict_digest(module),
    }
    settings = {**asdict(options), "input_shape": list(input_shape)}
    key = artifacts.stage_key(
        {
            "stage": "export",
            "inputs": inputs,
            "settings": settings,
            "preprocess": built.preprocess.to_dict(),
            "class_names": getattr(built, "class_names", None),
            "torch": versions["torch"],
            "onnx": versions["onnx"],
        }
    )
    return inputs, settings, key


def _log_preprocessing(built: BuiltModel, log: Callable[[str], None]) -> None:
    """The preprocessing the export records, where each part came from, and a caution where it was guessed."""
    from ..preprocess import defaulted_caution, sources_line

    log(
        f"preprocessing: {built.preprocess.describe()}"
        + (f" (from {sources_line(built.preprocess_sources)})" if getattr(built, "preprocess_sources", None) else "")
    )
    caution = defaulted_caution(getattr(built, "preprocess_sources", None), _trained_checkpoint(built), built.preprocess.resize)
    if caution:
        log(f"caution: {caution}")


def _checked_parity(
    built: BuiltModel,
    module: torch.nn.Module,
    serialized: bytes,
    input_shape: tuple[int, int, int],
    options: ExportOptions,
    log: Callable[[str], None],
) -> dict:
    """The graph against the PyTorch module on ONNX Runtime (CPU); ParityError, before anything is written, if they differ."""
    log("checking parity with PyTorch on ONNX Runtime (CPU) ...")
    batch = min(options.dynamic_batch, 4) if options.dynamic_batch else options.batch
    with TorchRunner(module) as reference, OnnxRuntimeRunner(serialized) as candidate:
        parity = compare(reference, candidate, parity_inputs(input_shape), batch)
    log(
        f"  max |logit diff| {parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:.1e}), top-1 agreement {parity['top1_agreement']:.0%}"
    )
    if not parity["reference_finite"]:
        # Not the exporter's fault: the module itself overflows (finite weights far too large, or a broken checkpoint).
        raise SkEdgeError(
            f"{built.name} in PyTorch gives inf or NaN logits on N(0, 1) inputs: its weights overflow float32; "
            "nothing was written. Check the checkpoint (--weights) it was built from"
        )
    if not parity["passed"]:
        raise ParityError(
            f"the exported graph differs from {built.name} in PyTorch: max |logit diff| "
            f"{parity['max_abs_diff']:.3g} > tolerance {parity['tolerance']:.3g}; nothing was written. "
            "Please report this model to sk-edge"
        )
    return parity


def _model_record(
    built: BuiltModel, module: torch.nn.Module, model: onnx.ModelProto, input_shape: tuple[int, int, int], options: ExportOptions
) -> dict:
    """export.json's model section: its size, its input and output tensors, its largest batch."""
    out_batch: int | str = "batch" if options.dynamic_batch else options.batch
    in_chans = input_shape[0]
    return {
        "name": built.name,
        "params": count_params(module),
        "gmacs": round(count_macs(module, (input_shape[1], input_shape[2]), in_chans) / 1e9, 3),
        "input": {"name": INPUT_NAME, "shape": [out_batch, *input_shape], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [out_batch, _num_outputs(model)], "dtype": "float32"},
        "max_batch": options.dynamic_batch or options.batch,
    }


def _batchnorm_accounting(module: torch.nn.Module, model: onnx.ModelProto, rewrite: RewriteReport, passes: PassReport) -> dict:
    """Where each BatchNorm of the model went. Those neither the SK rewrite nor the graph
    pass folded, and that are not left in the graph, were fused by torch's exporter (the
    TorchScript exporter fuses Conv+BatchNorm in eval mode)."""
    total = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
    in_sk = rewrite.summary()["batchnorm_folded"]
    by_pass = passes.batchnorm_folded_into_conv + passes.batchnorm_folded_into_gemm + passes.batchnorm_to_scale
    left = sum(node.op_type == "BatchNormalization" for node in model.graph.node)
    return {
        "modules": total,
        "folded_by_sk_rewrite": in_sk,
        "folded_by_graph_pass": by_pass,
        "fused_by_torch_exporter": total - in_sk - by_pass - left,
        "left_in_graph": left,
    }


def _num_outputs(model: onnx.ModelProto) -> int | str:
    dim = model.graph.output[0].type.tensor_type.shape.dim[-1]
    return dim.dim_value if dim.HasField("dim_value") else dim.dim_param
