"""Reading what earlier stages left in a work directory, refusing what is missing or stale."""

from __future__ import annotations

from pathlib import Path

from . import artifacts
from .errors import SkEdgeError

EXPORT_JSON = "export.json"
FP32_ONNX = "model.fp32.onnx"
# The graph of each precision, as the quantize stage names them; the first that exists in
# this order is what a command uses when none is named.
GRAPH_NAMES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "fp32": FP32_ONNX}


def engine_name(precision: str, dla_core: int | None = None) -> str:
    """``model.int8.engine``; ``model.int8.dla.engine`` for a DLA build."""
    return f"model.{precision}{'.dla' if dla_core is not None else ''}.engine"


def first_built(workdir: Path, engines: bool = False) -> str:
    """The first of int8, fp16, fp32 whose graph (or, with ``engines``, engine) is in ``workdir``."""
    for precision, graph in GRAPH_NAMES.items():
        if (Path(workdir) / (engine_name(precision) if engines else graph)).is_file():
            return precision
    return "fp32"


def require_artifact(workdir: Path, sidecar_name: str, artifact_name: str, made_by: str) -> dict:
    """The sidecar of ``artifact_name``, after checking the artifact is there and intact.

    ``made_by`` is the command that makes it, for the error message.
    """
    workdir = Path(workdir)
    sidecar = artifacts.read_json(workdir / sidecar_name)
    path = workdir / artifact_name
    if sidecar is None or not path.is_file():
        raise SkEdgeError(f"no {artifact_name} in '{workdir}'; run `{made_by} -w {workdir}` first")
    meta = sidecar.get("outputs", {}).get(artifact_name)
    if meta is None or artifacts.sha256_file(path) != meta.get("sha256"):
        raise SkEdgeError(
            f"'{path}' does not match its {sidecar_name} (changed after it was written?); "
            f"re-run `{made_by} -w {workdir} --force`"
        )
    return sidecar


def load_export(workdir: Path) -> dict:
    """export.json of ``workdir``, with model.fp32.onnx checked against it."""
    return require_artifact(workdir, EXPORT_JSON, FP32_ONNX, "sk-edge export")
