"""Reading what earlier stages left in a work directory, refusing what is missing or stale."""

from __future__ import annotations

from pathlib import Path

from . import artifacts
from .errors import SkEdgeError

EXPORT_JSON = "export.json"
FP32_ONNX = "model.fp32.onnx"


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
