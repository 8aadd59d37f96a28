"""Which model a command works on: the user's, the work directory's own, or the default; never a silent take-over."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import artifacts
from .errors import SkEdgeError, UsageError
from .names import EXPORT_JSON
from .workdir import load_export


@dataclass
class ModelRequest:
    """What picks the network, as the user gave it on the command line (None: not given)."""

    name: str | None = None
    weights: Path | None = None
    num_classes: int | None = None
    input_size: int | tuple[int, int] | str | None = None  # N, "HxW" or (H, W), read by parse_size
    args: dict = field(default_factory=dict)
    # Preprocessing asked for on the command line or in --preprocess FILE (sk_edge.preprocess):
    # a change re-exports the same model, it does not take the work directory over.
    preprocess: object | None = None
    # Set by resolve_model when nothing was asked for and the work directory holds an intact
    # export: the command continues with that export as it is (a randomly initialised model
    # could not be rebuilt identically anyway).
    reuse_export: bool = False

    def empty(self) -> bool:
        return (
            self.name is None
            and self.weights is None
            and self.num_classes is None
            and self.input_size is None
            and not self.args
            and self.preprocess is None
        )


# Files whose presence says a folder already holds an sk-edge build (its graphs, calibration, engines).
_ARTIFACT_PATTERNS = ("model.*.onnx", "model.*.json", "calib.json", "calib.cache", "*.engine", "verify.json", "reference.npz")


def refuse_unowned_artifacts(workdir: Path) -> None:
    """A work directory holding artifacts but no readable export.json is not taken over: without it nothing says
    what those artifacts are, and a new export would overwrite them."""
    if not workdir.is_dir():
        return
    found = sorted({p.name for pattern in _ARTIFACT_PATTERNS for p in workdir.glob(pattern)})
    if found:
        raise SkEdgeError(
            f"'{workdir}' holds {', '.join(found[:3])}{' ...' if len(found) > 3 else ''} but no readable {EXPORT_JSON} "
            "(deleted or damaged), so what they were made from is unknown: pass another -w, or --force to export "
            "again over them"
        )


def resolve_model(workdir: Path, request: ModelRequest, default_name: str, force: bool = False) -> ModelRequest:
    """The model a command works on: the user's, else the work directory's own, else ``default_name``.

    A work directory is never taken over silently: an option that differs from what its export
    was made from is refused with both named, unless ``force``. What the user left out is taken
    from the work directory's export (its weights, classes, input size, model arguments).
    """
    from .preprocess import parse_size
    from .sidecars import ExportInfo

    doc = artifacts.read_json(Path(workdir) / EXPORT_JSON)
    export = None
    if doc is not None and "inputs" in doc:
        try:
            export = ExportInfo.from_doc(doc, Path(workdir) / EXPORT_JSON)
        except SkEdgeError:
            if not force:
                raise
    if export is None and not force:
        refuse_unowned_artifacts(Path(workdir))
    if export is None:
        return replace(request, name=request.name or default_name, reuse_export=False)
    have = ModelRequest(
        name=export.model,
        weights=Path(export.weights_path) if export.weights_path else None,
        num_classes=export.num_classes,
        input_size=parse_size(export.preprocess_record["input_size"]),
        args=export.model_args,
    )
    if force:
        return replace(request, name=request.name or have.name, reuse_export=False)
    if request.empty():
        load_export(workdir)  # intact, or a one-line error saying how to redo it
        have.reuse_export = True
        return have
    differences = _differences(request, have, export.weights_sha256)
    if differences:
        raise UsageError(
            f"work directory '{workdir}' holds an export of {have.name}; you asked for {'; '.join(differences)}. "
            "Pass --force to replace its artifacts, or another -w"
        )
    if have.weights is not None and not have.weights.is_file() and request.weights is None:
        from .reference import NAME as REFERENCE, WEIGHTS as REFERENCE_WEIGHTS

        if have.name == REFERENCE and have.weights.name == REFERENCE_WEIGHTS.name:
            have.weights = None  # the bundled weights, wherever this installation keeps them
        else:
            raise SkEdgeError(
                f"the weights '{workdir}' was exported from, '{have.weights}', are not here; "
                "pass --weights with them (or another -w)"
            )
    if request.preprocess is not None:
        have.preprocess = request.preprocess  # the same model, exported again with this preprocessing
        if request.input_size is not None:
            have.input_size = parse_size(request.input_size)
    return have


def _differences(request: ModelRequest, have: ModelRequest, weights_sha256: str | None) -> list[str]:
    """Each option of ``request`` that differs from what the work directory's export was made from (``have``)."""
    from .preprocess import parse_size

    differences = []
    if request.name is not None and request.name != have.name:
        differences.append(f"model {request.name} (it holds {have.name})")
    if request.weights is not None:
        same = weights_sha256 and Path(request.weights).is_file() and artifacts.sha256_file(request.weights) == weights_sha256
        if not same:
            held = f"weights '{have.weights}'" if have.weights else "no weights (random initialisation)"
            differences.append(f"weights '{request.weights}' (it holds {held})")
    if request.num_classes is not None and request.num_classes != have.num_classes:
        differences.append(f"{request.num_classes} classes (it holds {have.num_classes})")
    if request.input_size is not None and parse_size(request.input_size) != have.input_size:
        differences.append(f"input size {request.input_size} (it holds {have.input_size})")
    if request.args and request.args != have.args:
        differences.append(f"model arguments {request.args} (it holds {have.args})")
    return differences
