"""Typed views of the sidecars the stages read: one place that knows their layout and checks their schema.

Every artifact a stage reads comes with a JSON sidecar (:mod:`sk_edge.artifacts`). Each sidecar
is read through one frozen dataclass here, built by ``from_doc``, which checks the sidecar's
``schema`` version and ``kind`` and names a missing or garbled field in one line with the command
that writes it again, instead of every module indexing the same key paths:

- ``export.json``: :class:`ExportInfo`
- ``calib.json``: :class:`CalibrationInfo`
- ``model.int8.json`` / ``model.fp16.json`` (a precision's graph): :class:`GraphInfo`
- ``model.<precision>[.dla].engine.json``: :class:`EngineInfo` (read on devices too: no torch here)
- ``reference.json`` (the stored PyTorch outputs): :class:`ReferenceInfo`

Each view writes its sidecar too (``write``): the document is built by :func:`sk_edge.artifacts.sidecar`, read
through ``from_doc`` *before* it is written (a writer that leaves out a field the reader needs fails at build
time, with nothing written, rather than on the device), then written atomically; ``write`` hands back the
view. The stages decide the sections' contents; the layout is known here only. ``doc`` keeps the document
as read, for the reports that copy a section of it whole. :mod:`sk_edge.workdir` checks each artifact's
bytes against its sidecar before handing out the view.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from . import artifacts
from .artifacts import SIDECAR_SCHEMA
from .errors import SkEdgeError
from .preprocess import Preprocess
from .names import CALIB_CACHE, FP32_ONNX, REFERENCE_NPZ

# The ``kind`` each view reads (artifacts.sidecar writes "sk-edge/<stage>").
EXPORT_KIND = "sk-edge/export"
CALIBRATION_KIND = "sk-edge/calibration"
GRAPH_KINDS = {"int8": "sk-edge/quantize-int8", "fp16": "sk-edge/quantize-fp16"}
ENGINE_KIND = "sk-edge/engine"
REFERENCE_KIND = "sk-edge/reference"

View = TypeVar("View")


def _write(path: Path, doc: dict, read: Callable[[dict, Path], View]) -> View:
    """``doc`` read through its view, then written to ``path`` atomically; the view."""
    view = read(doc, path)
    artifacts.write_json(path, doc)
    return view


def check_header(doc: object, source: str | Path, kinds: tuple[str, ...], fix: str) -> dict:
    """``doc`` when it is a sidecar of one of ``kinds`` in the schema this sk-edge reads; else a one-line error."""
    if doc is None:
        raise SkEdgeError(f"'{source}' is missing or is not valid JSON; {fix}")
    if not isinstance(doc, dict):
        raise SkEdgeError(f"'{source}' is not an sk-edge sidecar; {fix}")
    schema = doc.get("schema")
    if schema != SIDECAR_SCHEMA:
        raise SkEdgeError(f"'{source}' has sidecar schema {schema}, and this sk-edge reads schema {SIDECAR_SCHEMA}; {fix}")
    if doc.get("kind") not in kinds:
        raise SkEdgeError(f"'{source}' is a sidecar of kind {doc.get('kind') or 'none'}, not {' or '.join(kinds)}; {fix}")
    return doc


@contextlib.contextmanager
def _fields(source: str | Path, fix: str) -> Iterator[None]:
    """Turn a missing or mistyped field met while building a view into one line naming it."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as exc:
        what = exc if isinstance(exc, KeyError) else f"({exc})" if str(exc) else f"({type(exc).__name__})"
        raise SkEdgeError(f"'{source}' lacks or garbles the field {what}; {fix}") from None


def _only_output(doc: dict) -> tuple[str, str]:
    """(name, sha256) of the one artifact a sidecar describes."""
    ((name, meta),) = doc["outputs"].items()
    return name, str(meta["sha256"])


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

    @property
    def model_record(self) -> dict:
        """The model section as recorded (name, size, input and output; copied whole into the graph's sidecar)."""
        return dict(self.doc["model"])

    @classmethod
    def write(cls, path: Path, key: str, onnx_path: Path, **sections) -> "ExportInfo":
        """Write export.json (``path``) for the FP32 graph ``onnx_path``, with the stage's ``sections`` (inputs,
        settings, model, preprocess, the graph and parity reports, ...)."""
        return _write(path, artifacts.sidecar("export", key, {FP32_ONNX: onnx_path}, **sections), cls.from_doc)

    @classmethod
    def from_doc(cls, doc: dict | None, source: str | Path) -> "ExportInfo":
        fix = "re-export with this sk-edge (sk-edge export --force)"
        doc = check_header(doc, source, (EXPORT_KIND,), fix)
        with _fields(source, "re-export (sk-edge export --force)"):
            inputs, settings, model = doc["inputs"], doc["settings"], doc["model"]
            weights = inputs.get("weights") or {}
            return cls(
                model=inputs["model"],
                family=inputs.get("family", ""),
                model_args=inputs.get("model_args") or {},
                weights_path=weights.get("path"),
                weights_sha256=weights.get("sha256"),
                state_dict_sha256=inputs["state_dict_sha256"],
                fp32_sha256=doc["outputs"][FP32_ONNX]["sha256"],
                input=TensorSpec.from_doc(model["input"]),
                output=TensorSpec.from_doc(model["output"]),
                preprocess=Preprocess.from_dict(doc["preprocess"]),
                preprocess_record=doc["preprocess"],
                input_shape=tuple(settings["input_shape"]),
                batch=settings.get("batch") or 1,
                dynamic_batch=settings.get("dynamic_batch"),
                class_names=doc.get("class_names"),
                doc=doc,
            )


@dataclass(frozen=True)
class CalibrationInfo:
    """What calib.json says of a calibration: the ranges chosen, and what they were measured on."""

    key: str
    histogram_key: str | None
    method: str
    fp32_sha256: str  # the model.fp32.onnx it calibrated
    cache_sha256: str  # the calib.cache it wrote
    images: dict  # as recorded: dir, found, used, content_sha256, skipped, and the hold-out when there was one
    settings: dict  # CalibrationOptions as given, and the provider that ran
    tensors: dict = field(repr=False)  # per quantized tensor: amax, scale, amax_by_method, clipped_fraction, roles, histogram
    legacy_ranges: dict | None = field(repr=False)  # the max of every other activation, for weakly typed (DLA) builds
    doc: dict = field(repr=False, compare=False)

    @property
    def provider(self) -> str:
        return str(self.settings.get("provider", "?"))

    def amax(self, names) -> dict[str, float]:
        """The chosen range of each tensor in ``names`` (a KeyError names a tensor it has none for)."""
        return {n: float(self.tensors[n]["amax"]) for n in names}

    def calibration_max(self, name: str) -> float:
        """The largest |x| the calibration images gave ``name``."""
        return float(self.tensors[name]["amax_by_method"]["max"])

    @classmethod
    def write(
        cls,
        path: Path,
        cache: Path,
        key: str,
        histogram_key: str,
        fp32_sha256: str,
        images: dict,
        settings: dict,
        method: str,
        tensors: dict,
        legacy_ranges: dict | None,
        **report,
    ) -> "CalibrationInfo":
        """Write ``path`` (calib.json) for ``cache`` (calib.cache), with ``report``'s sections (the plan, the spread)
        beside the fields."""
        doc = artifacts.sidecar(
            "calibration",
            key,
            {cache.name: cache},
            histogram_key=histogram_key,
            inputs={"model": {"path": FP32_ONNX, "sha256": fp32_sha256}, "images": images},
            settings=settings,
            method=method,
            **report,
            tensors=tensors,
            legacy_ranges=legacy_ranges or None,
        )
        return _write(path, doc, cls.from_doc)

    @classmethod
    def from_doc(cls, doc: dict | None, source: str | Path) -> "CalibrationInfo":
        fix = f"re-run `sk-edge calibrate -w {Path(source).parent} --images DIR --force`"
        doc = check_header(doc, source, (CALIBRATION_KIND,), fix)
        with _fields(source, fix):
            tensors = doc["tensors"]
            if not isinstance(tensors, dict) or not all("amax" in t for t in tensors.values()):
                raise ValueError("tensors[*].amax")
            return cls(
                key=doc["key"],
                histogram_key=doc.get("histogram_key"),
                method=doc["method"],
                fp32_sha256=doc["inputs"]["model"]["sha256"],
                cache_sha256=doc["outputs"][CALIB_CACHE]["sha256"],
                images=doc["inputs"]["images"],
                settings=doc["settings"],
                tensors=tensors,
                legacy_ranges=doc.get("legacy_ranges") or None,
                doc=doc,
            )


@dataclass(frozen=True)
class GraphInfo:
    """What model.int8.json / model.fp16.json say of a precision's graph."""

    precision: str
    key: str
    graph_name: str
    graph_sha256: str
    fp32_sha256: str  # the model.fp32.onnx it was written from
    calibration_key: str | None  # INT8: the calibration its ranges came from
    calibration_method: str | None
    mixed: str | None
    keep_float: tuple[str, ...]  # layers the accuracy budget kept in floating point
    float_nodes: dict = field(repr=False)  # INT8: nodes left in floating point, and why
    precision_mix: dict | None  # INT8: the share of MACs in INT8 / FP16 / FP32
    doc: dict = field(repr=False, compare=False)

    @classmethod
    def write(cls, path: Path, precision: str, key: str, graph_path: Path, **sections) -> "GraphInfo":
        """Write ``model.<precision>.json`` (``path``) for the graph ``graph_path``, with the stage's ``sections``."""
        doc = artifacts.sidecar(f"quantize-{precision}", key, {graph_path.name: graph_path}, **sections)
        return _write(path, doc, lambda d, p: cls.from_doc(d, p, precision))

    @classmethod
    def from_doc(cls, doc: dict | None, source: str | Path, precision: str) -> "GraphInfo":
        fix = f"re-run `sk-edge quantize -w {Path(source).parent} --precision {precision} --force`"
        doc = check_header(doc, source, (GRAPH_KINDS[precision],), fix)
        with _fields(source, fix):
            name, sha = _only_output(doc)
            calibration = doc["inputs"].get("calibration")
            settings = doc["settings"]
            if precision == "int8" and not calibration:
                raise KeyError("inputs.calibration")
            return cls(
                precision=precision,
                key=doc["key"],
                graph_name=name,
                graph_sha256=sha,
                fp32_sha256=doc["inputs"]["model"]["sha256"],
                calibration_key=calibration["key"] if calibration else None,
                calibration_method=calibration.get("method") if calibration else None,
                mixed=settings.get("mixed"),
                keep_float=tuple(settings.get("keep_float") or ()),
                float_nodes=(doc.get("plan") or {}).get("float_nodes") or {},
                precision_mix=doc.get("precision_mix"),
                doc=doc,
            )


@dataclass(frozen=True)
class EngineInfo:
    """What ``model.<precision>.engine.json`` says of a TensorRT engine: where it may run, what it was built from,
    and what the app must feed it (read by :mod:`sk_edge.runtime` on the device, and by the C++ runtime's twin)."""

    precision: str
    key: str
    engine_name: str
    engine_sha256: str
    onnx_name: str  # the graph it was built from (the precision's own, or the FP32 graph on the weakly typed path)
    onnx_sha256: str
    calib_cache_sha256: str | None  # weakly typed INT8 builds: the calib.cache it read
    tensorrt_version: str
    gpu: dict | None  # name and compute capability of the GPU it was built on
    platform: dict | None  # machine and whether a Jetson (absent in sidecars from before sk-edge recorded it)
    jetson: dict | None
    dla_core: int | None
    hardware_compatible: bool
    legacy: bool  # built on the weakly typed path (builder flags and calib.cache)
    input: TensorSpec | None
    output: TensorSpec | None
    preprocess_record: dict | None
    class_names: list[str] | None
    layers_summary: dict
    dla: dict | None
    doc: dict = field(repr=False, compare=False)
    flavour: str = "tensorrt"  # "rtx": built by TensorRT for RTX
    compute_capabilities: tuple[str, ...] | None = None  # TensorRT-RTX: the targets ("86", "120")
    default_targets: bool = False  # TensorRT-RTX: NVIDIA's default set (which also covers later GPUs)

    @property
    def target(self) -> str:
        """The engine target that runs it: "tensorrt" or "rtx"."""
        return "rtx" if self.flavour == "rtx" else "tensorrt"

    @property
    def preprocess(self) -> Preprocess | None:
        return Preprocess.from_dict(self.preprocess_record) if self.preprocess_record else None

    @classmethod
    def write(cls, path: Path, key: str, engine_path: Path, **sections) -> "EngineInfo":
        """Write the engine's sidecar (``path``) for ``engine_path``, with the stage's ``sections`` (inputs, settings,
        tensorrt, gpu, platform, model, preprocess, layers, ...): what the Python and C++ runtimes read."""
        return _write(path, artifacts.sidecar("engine", key, {engine_path.name: engine_path}, **sections), cls.from_doc)

    @classmethod
    def from_doc(cls, doc: dict | None, source: str | Path) -> "EngineInfo":
        fix = "rebuild the engine with `sk-edge build`"
        doc = check_header(doc, source, (ENGINE_KIND,), fix)
        with _fields(source, fix):
            name, sha = _only_output(doc)
            settings, inputs, model = doc["settings"], doc["inputs"], doc.get("model") or {}
            dla_core = settings.get("dla_core")
            rtx = doc.get("rtx")
            return cls(
                precision=settings["precision"],
                key=doc["key"],
                engine_name=name,
                engine_sha256=sha,
                onnx_name=inputs["onnx"]["name"],
                onnx_sha256=inputs["onnx"]["sha256"],
                calib_cache_sha256=inputs.get("calib_cache_sha256"),
                tensorrt_version=str(doc["tensorrt"]["version"]),
                gpu=doc.get("gpu"),
                platform=doc.get("platform") or None,
                jetson=doc.get("jetson"),
                dla_core=None if dla_core is None else int(dla_core),
                hardware_compatible=bool(settings.get("hardware_compatible")),
                legacy=bool(settings.get("legacy_weakly_typed")),
                input=TensorSpec.from_doc(model["input"]) if "input" in model else None,
                output=TensorSpec.from_doc(model["output"]) if "output" in model else None,
                preprocess_record=doc.get("preprocess"),
                class_names=doc.get("class_names"),
                layers_summary=doc.get("layers_summary") or {},
                dla=doc.get("dla"),
                doc=doc,
                flavour=str(doc["tensorrt"].get("flavour") or "tensorrt"),
                compute_capabilities=tuple(str(c) for c in rtx["compute_capabilities"]) if rtx else None,
                default_targets=bool(rtx and rtx.get("default_targets")),
            )


@dataclass(frozen=True)
class ReferenceInfo:
    """What reference.json says of the stored FP32 PyTorch outputs (reference.npz)."""

    key: str
    npz_sha256: str
    made_from: dict  # the export (model name, graph and state-dict sha256) and preprocessing they depend on
    images: dict  # the images judged, as verify recorded them
    description: str  # the reference model, in words
    torch_version: str
    created: str
    count: int
    labelled: int
    doc: dict = field(repr=False, compare=False)

    @classmethod
    def write(
        cls, path: Path, npz: Path, made_from: dict, images: dict, description: str, torch_version: str, count: int, labelled: int
    ) -> "ReferenceInfo":
        """Write ``path`` (reference.json) for the outputs in ``npz``."""
        key = artifacts.stage_key({"stage": "reference", **made_from, "images": images})
        doc = artifacts.sidecar(
            "reference",
            key,
            {npz.name: npz},
            inputs=made_from,
            images=images,
            reference={"description": description, "torch": torch_version, "images": count, "labelled": labelled},
        )
        return _write(path, doc, cls.from_doc)

    @classmethod
    def from_doc(cls, doc: dict | None, source: str | Path) -> "ReferenceInfo":
        fix = "delete it and reference.npz, and re-run `sk-edge verify --images DIR` on the host (with PyTorch)"
        doc = check_header(doc, source, (REFERENCE_KIND,), fix)
        with _fields(source, fix):
            made = doc["reference"]
            if not isinstance(doc["inputs"], dict) or not isinstance(doc["images"], dict):
                raise TypeError("inputs and images must be objects")
            return cls(
                key=doc["key"],
                npz_sha256=doc["outputs"][REFERENCE_NPZ]["sha256"],
                made_from=doc["inputs"],
                images=doc["images"],
                description=made["description"],
                torch_version=str(made["torch"]),
                created=str(doc["created"]),
                count=int(made["images"]),
                labelled=int(made.get("labelled", 0)),
                doc=doc,
            )
