"""Reading what earlier stages left in a work directory, refusing what is missing or stale."""

from __future__ import annotations

from pathlib import Path

from . import artifacts
from .errors import SkEdgeError, UsageError

from .names import (  # noqa: F401 - the name table, re-exported for every caller of sk_edge.workdir
    EXPORT_JSON,
    FP32_ONNX,
    CALIB_JSON,
    CALIB_CACHE,
    GRAPH_NAMES,
    GRAPH_SIDECARS,
    REFERENCE_NPZ,
    REFERENCE_JSON,
    BUDGET_JSON,
    EVAL_DIR,
    CALIB_DIR,
    render_temporary,
    engine_name,
    engine_names,
    engine_target,
    layers_name,
    runtime_cache_name,
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
            f"'{path}' does not match its {sidecar_name} (changed after it was written?); re-run `{made_by} -w {workdir} --force`"
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
        require_artifact(workdir, CALIB_JSON, CALIB_CACHE, "sk-edge calibrate --images DIR"), workdir / CALIB_JSON
    )
    if calib.fp32_sha256 != export.fp32_sha256:
        raise SkEdgeError(
            f"'{workdir / CALIB_JSON}' was made for another model.fp32.onnx; re-run `sk-edge calibrate -w {workdir} --images DIR`"
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
    graph = GraphInfo.from_doc(
        require_artifact(workdir, GRAPH_SIDECARS[precision], GRAPH_NAMES[precision], made_by),
        workdir / GRAPH_SIDECARS[precision],
        precision,
    )
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
