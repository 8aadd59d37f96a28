"""Reading what earlier stages left in a work directory, refusing what is missing or stale."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import artifacts
from .errors import SkEdgeError, UsageError

from .names import (  # noqa: F401 - the name table, re-exported for every caller of sk_edge.workdir
    EXPORT_JSON, FP32_ONNX, CALIB_JSON, CALIB_CACHE, GRAPH_NAMES, GRAPH_SIDECARS, REFERENCE_NPZ, REFERENCE_JSON, BUDGET_JSON, EVAL_DIR, CALIB_DIR, render_temporary, _ATOMIC_TEMPORARY, _RENDER_TEMPORARIES, engine_name, engine_names, engine_target, layers_name, runtime_cache_name,
)


def built_engines(workdir: Path, precisions=tuple(GRAPH_NAMES)) -> list[tuple[str, str]]:
    """(precision, file name) of every engine in ``workdir``: INT8, FP16, FP32, each GPU before DLA."""
    return [(p, name) for p in precisions for name in engine_names(p) if (Path(workdir) / name).is_file()]


def first_built(workdir: Path) -> str:
    """The first of int8, fp16, fp32 whose graph is in ``workdir``."""
    for precision, graph in GRAPH_NAMES.items():
        if (Path(workdir) / graph).is_file():
            return precision
    return "fp32"


def require_artifact(workdir: Path, sidecar_name: str, artifact_name: str, made_by: str) -> dict:
    """The sidecar of ``artifact_name``, after checking the artifact is there and intact.

    ``made_by`` is the command that makes it, for the error message.
    """
    workdir = Path(workdir)
    sidecar = artifacts.read_json(workdir / sidecar_name)
    path = workdir / artifact_name
    if not path.is_file():
        raise SkEdgeError(f"no {artifact_name} in '{workdir}'; run `{made_by} -w {workdir}` first")
    if sidecar is None:
        raise SkEdgeError(
            f"no readable {sidecar_name} in '{workdir}' to check {artifact_name} against (deleted or damaged?); "
            f"re-run `{made_by} -w {workdir} --force`"
        )
    meta = sidecar.get("outputs", {}).get(artifact_name)
    if meta is None or artifacts.sha256_file(path) != meta.get("sha256"):
        raise SkEdgeError(
            f"'{path}' does not match its {sidecar_name} (changed after it was written?); "
            f"re-run `{made_by} -w {workdir} --force`"
        )
    return sidecar


def load_export(workdir: Path):
    """export.json of ``workdir`` as a typed :class:`~sk_edge.sidecars.ExportInfo`, with model.fp32.onnx
    checked against it and its schema version checked."""
    from .sidecars import ExportInfo

    doc = require_artifact(workdir, EXPORT_JSON, FP32_ONNX, "sk-edge export")
    return ExportInfo.from_doc(doc, Path(workdir) / EXPORT_JSON)


def load_calibration(workdir: Path, export=None):
    """calib.json as a :class:`~sk_edge.sidecars.CalibrationInfo`, with calib.cache checked against it and
    both made for the current FP32 graph (``export``: the work directory's ExportInfo, when the caller has it)."""
    from .sidecars import CalibrationInfo

    workdir = Path(workdir)
    export = export or load_export(workdir)
    calib = CalibrationInfo.from_doc(
        require_artifact(workdir, CALIB_JSON, CALIB_CACHE, "sk-edge calibrate --images DIR"), workdir / CALIB_JSON)
    if calib.fp32_sha256 != export.fp32_sha256:
        raise SkEdgeError(
            f"'{workdir / CALIB_JSON}' was made for another model.fp32.onnx; "
            f"re-run `sk-edge calibrate -w {workdir} --images DIR`"
        )
    return calib


def load_graph(workdir: Path, precision: str):
    """The sidecar of ``precision``'s graph, after checking the whole chain it came from: a
    :class:`~sk_edge.sidecars.GraphInfo` (the :class:`~sk_edge.sidecars.ExportInfo` for FP32).

    The graph must match its sidecar byte for byte, and the sidecar must name the inputs the
    work directory holds now: the current model.fp32.onnx and, for INT8, the current
    calibration. A graph made before a re-export or a re-calibration is refused, so no verdict
    is ever about a graph older than its inputs.
    """
    from .sidecars import GraphInfo

    if precision not in GRAPH_NAMES:
        raise UsageError(f"precision must be one of {', '.join(GRAPH_NAMES)}, got {precision!r}")
    workdir = Path(workdir)
    export = load_export(workdir)
    if precision == "fp32":
        return export
    made_by = f"sk-edge quantize --precision {precision}"
    graph = GraphInfo.from_doc(require_artifact(workdir, GRAPH_SIDECARS[precision], GRAPH_NAMES[precision], made_by),
                               workdir / GRAPH_SIDECARS[precision], precision)
    if graph.fp32_sha256 != export.fp32_sha256:
        raise SkEdgeError(
            f"'{workdir / GRAPH_NAMES[precision]}' was made from another model.fp32.onnx than the one here; "
            f"re-run `{made_by} -w {workdir}`"
        )
    if precision == "int8":
        calib = load_calibration(workdir, export)
        if graph.calibration_key != calib.key:
            raise SkEdgeError(
                f"'{workdir / GRAPH_NAMES[precision]}' was quantized with an earlier calibration "
                f"({graph.calibration_method or '?'}) than calib.json's ({calib.method}); "
                f"re-run `{made_by} -w {workdir}`"
            )
    return graph


def read_view(workdir: Path, name: str, precision: str | None = None):
    """The typed view of the sidecar ``name`` in ``workdir``, schema and fields checked, bytes not re-hashed.

    For a caller that ran the matching ``load_*`` (which checks every artifact against its
    sidecar) earlier in the same command, and needs the sidecar again without hashing twice.
    """
    from . import sidecars

    path = Path(workdir) / name
    doc = artifacts.read_json(path)
    if name == EXPORT_JSON:
        return sidecars.ExportInfo.from_doc(doc, path)
    if name == CALIB_JSON:
        return sidecars.CalibrationInfo.from_doc(doc, path)
    if name == REFERENCE_JSON:
        return sidecars.ReferenceInfo.from_doc(doc, path)
    if name in GRAPH_SIDECARS.values():
        return sidecars.GraphInfo.from_doc(doc, path, precision or next(p for p, n in GRAPH_SIDECARS.items() if n == name))
    if name.endswith(".engine.json"):
        return sidecars.EngineInfo.from_doc(doc, path)
    raise ValueError(f"{name} is not a sidecar sk-edge reads")


def graph_chain(workdir: Path, precision: str, graph: dict | None = None) -> dict:
    """The sha256 of every artifact ``precision``'s graph came from, for reports (verify.json).

    Read from the sidecars, whose every file :func:`load_graph` or :func:`load_engine` (which the
    caller ran before judging) has checked against them: nothing is hashed twice. ``graph``
    ({name: sha256}) names the graph an engine was built from when it is not the precision's own
    (the weakly typed paths build from the FP32 graph).
    """
    export = read_view(workdir, EXPORT_JSON)
    chain = {"export": {FP32_ONNX: export.fp32_sha256, "weights": export.weights_sha256}}
    if precision == "int8":
        calib = read_view(workdir, CALIB_JSON)
        chain["calibration"] = {CALIB_CACHE: calib.cache_sha256, "key": calib.key, "method": calib.method}
    if graph is not None:
        chain["graph"] = graph
    elif precision != "fp32":
        own = read_view(workdir, GRAPH_SIDECARS[precision])
        chain["graph"] = {own.graph_name: own.graph_sha256}
    return chain


def load_engine(workdir: Path, precision: str, dla_core: int | None = None, name: str | None = None):
    """The sidecar of ``precision``'s engine (or of the engine file ``name``) as a
    :class:`~sk_edge.sidecars.EngineInfo`, checked against the engine and against the graph it was built from."""
    from .sidecars import EngineInfo

    workdir = Path(workdir)
    name = name or engine_name(precision, dla_core)
    made_by = f"sk-edge build --from . --precision {precision}"
    engine = EngineInfo.from_doc(require_artifact(workdir, name + ".json", name, made_by), workdir / (name + ".json"))
    current = workdir / engine.onnx_name
    if not current.is_file() or artifacts.sha256_file(current) != engine.onnx_sha256:
        raise SkEdgeError(
            f"'{workdir / name}' is stale: it was built from a {engine.onnx_name} that is no longer "
            f"in '{workdir}'; rebuild it with `{made_by}` in that folder"
        )
    if engine.onnx_name == GRAPH_NAMES[precision]:
        load_graph(workdir, precision)
    cache_sha = engine.calib_cache_sha256
    if cache_sha and (not (workdir / CALIB_CACHE).is_file() or artifacts.sha256_file(workdir / CALIB_CACHE) != cache_sha):
        raise SkEdgeError(f"'{workdir / name}' was built with another calib.cache than the one here; rebuild it with `{made_by}`")
    return engine


def _check_writable(workdir: Path) -> None:
    """Create ``workdir`` if needed and prove it takes a file, before any heavy work."""
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"work directory '{workdir}' exists and is not a directory; pass another -w")
    for parent in workdir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"work directory '{workdir}' is under '{parent}', which is a file; pass another -w")
            break
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_output(workdir / ".sk-edge-write-probe") as tmp:
            tmp.write_bytes(b"sk-edge")
        (workdir / ".sk-edge-write-probe").unlink()
    except OSError as exc:
        raise SkEdgeError(f"cannot write in work directory '{workdir}': {describe_os_error(exc)}") from None


def remove_stale_temporaries(workdir: Path) -> list[str]:
    """Temporary files of sk-edge's own naming left by a run killed inside its write window.

    Only called while holding the work directory's lock, so no live sk-edge process owns them.
    """
    removed = []
    for path in workdir.iterdir():
        name = path.name
        if _ATOMIC_TEMPORARY.match(name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
        elif name in _RENDER_TEMPORARIES and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue  # a user's own ".something.tmp" is never touched
        removed.append(name)
    return removed


_HELD: dict[str, bool] = {}  # real paths of the work directories this process holds


@contextlib.contextmanager
def locked(workdir: str | os.PathLike, log=lambda msg: None) -> Iterator[Path]:
    """Hold ``workdir`` for one command: writable, exclusively locked, without stale temporaries.

    The lock is an flock on the directory itself (nothing is left behind in it, and it is
    released when the process ends, however it ends). A second sk-edge command on the same
    work directory fails at once with one line, instead of interleaving its writes with the first.
    """
    import fcntl

    workdir = Path(workdir)
    key = os.path.realpath(workdir)
    if _HELD.get(key):  # this process holds it already (sk_edge.build called by the CLI): one lock, not two
        yield workdir
        return
    created = not workdir.exists()
    _check_writable(workdir)
    try:
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SkEdgeError(f"cannot lock work directory '{workdir}': {describe_os_error(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SkEdgeError(
                f"work directory '{workdir}' is in use by another sk-edge command; "
                "wait for it to finish or pass another -w"
            ) from None
        removed = remove_stale_temporaries(workdir)
        if removed:
            log(f"removed {len(removed)} temporary file(s) left by an interrupted run: {', '.join(removed[:3])}")
        _HELD[key] = True
        yield workdir
    finally:
        _HELD.pop(key, None)
        os.close(fd)  # releases the lock
        if created:  # a command that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                workdir.rmdir()


def describe_os_error(exc: OSError) -> str:
    """An OSError as a short phrase with what to do about it."""
    what = exc.strerror or type(exc).__name__
    where = f" ('{exc.filename}')" if exc.filename else ""
    hint = {
        errno.ENOSPC: "free some disk space or pass a -w on another disk",
        errno.EDQUOT: "free some disk space or pass a -w on another disk",
        errno.EROFS: "the file system is read-only; pass a writable -w",
        errno.EACCES: "no permission; pass a -w you can write to",
        errno.EPERM: "no permission; pass a -w you can write to",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENOENT: "check the path",
    }.get(exc.errno, "check the path and the disk")
    return f"{what}{where}; {hint}"


# --- which model a command works on ------------------------------------------------------


@dataclass
class ModelRequest:
    """What picks the network, as the user gave it on the command line (None: not given)."""

    name: str | None = None
    weights: Path | None = None
    num_classes: int | None = None
    input_size: int | tuple[int, int] | None = None
    args: dict = field(default_factory=dict)
    # Preprocessing asked for on the command line or in --preprocess FILE (sk_edge.preprocess):
    # a change re-exports the same model, it does not take the work directory over.
    preprocess: object | None = None
    # Set by resolve_model when nothing was asked for and the work directory holds an intact
    # export: the command continues with that export as it is (a randomly initialised model
    # could not be rebuilt identically anyway).
    reuse_export: bool = False

    def empty(self) -> bool:
        return self.name is None and self.weights is None and self.num_classes is None \
            and self.input_size is None and not self.args and self.preprocess is None


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
            "again over them")


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
        return ModelRequest(request.name or default_name, request.weights, request.num_classes, request.input_size, request.args,
                            request.preprocess)
    have = ModelRequest(
        name=export.model,
        weights=Path(export.weights_path) if export.weights_path else None,
        num_classes=export.num_classes,
        input_size=parse_size(export.preprocess_record["input_size"]),
        args=export.model_args,
    )
    if force:
        return ModelRequest(request.name or have.name, request.weights, request.num_classes, request.input_size, request.args,
                            request.preprocess)
    if request.empty():
        load_export(workdir)  # intact, or a one-line error saying how to redo it
        have.reuse_export = True
        return have
    differences = []
    if request.name is not None and request.name != have.name:
        differences.append(f"model {request.name} (it holds {have.name})")
    if request.weights is not None:
        same = export.weights_sha256 and Path(request.weights).is_file() and \
            artifacts.sha256_file(request.weights) == export.weights_sha256
        if not same:
            held = f"weights '{have.weights}'" if have.weights else "no weights (random initialisation)"
            differences.append(f"weights '{request.weights}' (it holds {held})")
    if request.num_classes is not None and request.num_classes != have.num_classes:
        differences.append(f"{request.num_classes} classes (it holds {have.num_classes})")
    if request.input_size is not None and parse_size(request.input_size) != have.input_size:
        differences.append(f"input size {request.input_size} (it holds {have.input_size})")
    if request.args and request.args != have.args:
        differences.append(f"model arguments {request.args} (it holds {have.args})")
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
