"""TensorRT engines from sk-edge's precision-carrying ONNX graphs.

The main path is one code path for TensorRT 10.3 (JetPack 6.1/6.2) up to 11.x: the ONNX
graph carries the precision (Q/DQ for INT8, FP16 tensors and casts), the network is
strongly typed, and no precision builder flag is set. TensorRT 11 only knows this mode;
TensorRT 10.x has it beside weak typing.

A second, legacy path exists for the DLA on TensorRT 8.5 to 10.7 (Orin on JetPack 5.1 to
6.2; NVIDIA: "TensorRT 10.7 was the last 10.x release that supported DLA"): INT8 on the DLA
there needs implicit quantization, so that path parses the FP32 graph into a weakly typed
network, sets the INT8 and FP16 builder flags, and feeds sk-edge's ``calib.cache`` (its header
rewritten for the TensorRT that reads it) through a calibrator that only reads the cache. TensorRT
10.8 to 11.4.0 have no DLA on Jetson; 11.4.1 restores it on Jetson AGX Orin with JetPack 7.2.2+
for strongly typed networks only ("Working with DLA", 11.4.1), so there the DLA build is the main
path with the DLA as default device.

TensorRT for RTX (``--target rtx``, NVIDIA's ``tensorrt_rtx`` module) is another *flavour* of
TensorRT, not a version: strongly typed networks only, no DLA, no calibrator, no hardware
compatibility level, a timing cache that is a no-op (and that makes the builder look for a GPU),
targets named as compute capabilities, and engines built on a machine without a GPU ("CPU-only
AOT") that are compiled for the user's GPU when loaded (JIT). Its builder has no engine
inspector that runs without a GPU, so the layer plan comes from the builder's own ``Layers:``
message (:mod:`sk_edge.backends.layer_plan`).

Every difference between TensorRT versions and flavours is decided in :class:`TrtFeatures`;
nothing else in sk-edge looks at the version number or the flavour. ``tensorrt`` is imported lazily, so this
module imports on machines without it (CI, laptops) and the API-surface test can hand it
a stand-in module built from the real bindings' surface.

Names used here were checked against the TensorRT Python API documentation (10.x and
11.x: Builder, IBuilderConfig, OnnxParser, ICudaEngine, EngineInspector) and, by
``tests/test_tensorrt_api.py``, against the bindings' surface of 8.5 (names derived from
NVIDIA's binding sources), 8.6.1, 10.3.0, 10.7.0, 10.13.3.9, 10.16.1.11 and 11.4.0.106.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import SkEdgeError, UsageError
from .layer_plan import PlanLayer, is_layers_message, parse_builder_layers, parse_inspector_layers

MIN_VERSION = (10, 3)  # strongly typed networks with Q/DQ and FP16 I/O casts: JetPack 6.1+
MIN_LEGACY_VERSION = (8, 5)  # execute_async_v3 / named I/O tensors: JetPack 5.1+
OPT_LEVELS = range(0, 6)  # IBuilderConfig.builder_optimization_level, TensorRT's default 3


# The engine targets: TensorRT for Jetson and desktop GPUs, TensorRT for RTX for desktop RTX GPUs.
TARGETS = ("tensorrt", "rtx")
# TensorRT-RTX's compute capabilities, as ComputeCapability names them (SM75 = Turing, only on
# request; NVIDIA's default engine covers compute capability 8.0, 8.6, 8.9, 12.0 and later).
RTX_SMS = ("75", "80", "86", "89", "120", "121")
RTX_DEFAULT_SMS = ("80", "86", "89", "120")


class TensorRTUnavailable(SkEdgeError):
    """TensorRT (or a GPU for it) is not there; the caller may fall back to ONNX Runtime."""


def import_tensorrt(target: str = "tensorrt"):
    """The module of ``target`` (``tensorrt``, or TensorRT-RTX's), or :class:`TensorRTUnavailable` saying why not."""
    if target == "rtx":
        return _import_tensorrt_rtx()
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed here (pip install 'sk-edge[tensorrt]' on a desktop; on a Jetson, "
            "JetPack's bindings in a virtualenv made with --system-site-packages)"
        ) from None
    except OSError as exc:  # the bindings are there but libnvinfer is not
        raise TensorRTUnavailable(f"TensorRT's Python bindings found but its libraries failed to load: {exc}") from None
    return tensorrt


def _import_tensorrt_rtx():
    # NVIDIA's full package installs ``tensorrt_rtx``; the standalone wheels on PyPI
    # (tensorrt-rtx-cu13-bindings + -libs) the same bindings as ``tensorrt_rtx_bindings``.
    import importlib

    for name in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
        except OSError as exc:
            raise TensorRTUnavailable(f"TensorRT-RTX's Python bindings found but its libraries failed to load: {exc}") from None
    raise TensorRTUnavailable("TensorRT-RTX is not installed here (pip install 'sk-edge[rtx]')")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:4])


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT can do, decided from its flavour and version in one place.

    ``flavour`` is "tensorrt" (NVIDIA TensorRT, Jetson and desktop) or "rtx" (TensorRT for RTX,
    whose 1.x version numbers are not comparable with TensorRT's).
    """

    version: tuple[int, ...]
    flavour: str = "tensorrt"

    @classmethod
    def of(cls, trt) -> "TrtFeatures":
        rtx = getattr(trt, "__name__", "").split(".")[0].startswith("tensorrt_rtx")
        return cls(parse_version(trt.__version__), "rtx" if rtx else "tensorrt")

    @property
    def rtx(self) -> bool:
        return self.flavour == "rtx"

    @property
    def name(self) -> str:
        return "TensorRT-RTX" if self.rtx else "TensorRT"

    @property
    def text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def label(self) -> str:
        """ "TensorRT 10.3.0" or "TensorRT-RTX 1.7.1.116", for messages."""
        return f"{self.name} {self.text}"

    @property
    def strongly_typed(self) -> bool:
        return self.rtx or self.version >= MIN_VERSION

    @property
    def strongly_typed_flag(self) -> bool:
        # 10.x: strong typing is opt-in with this flag. 11.x and TensorRT-RTX: always on; the flag
        # is deprecated and ignored there, so it is not passed.
        return not self.rtx and self.version < (11,)

    @property
    def compute_capabilities(self) -> bool:
        # TensorRT-RTX targets a list of compute capabilities (IBuilderConfig.set_compute_capability)
        # and builds on a machine without a GPU; TensorRT builds for the GPU it runs on.
        return self.rtx

    @property
    def needs_gpu_to_build(self) -> bool:
        return not self.rtx

    @property
    def timing_cache(self) -> bool:
        # TensorRT-RTX: the timing cache has no effect on the engine and makes the builder query
        # for a GPU, defeating CPU-only builds (TensorRT-RTX 1.1 release notes).
        return not self.rtx

    @property
    def engine_inspector(self) -> bool:
        # The inspector needs a deserialized engine, which TensorRT-RTX only makes on a GPU:
        # its plan is read from the builder's "Layers:" message instead.
        return not self.rtx

    @property
    def int8_qdq_convolutions(self) -> bool:
        # TensorRT-RTX 1.6.1's builder stops on the Q/DQ INT8 convolutions of sk-edge's graphs
        # ("MyelinCheckException: cudnn_impl.cpp:89", measured on the 1.6.1.120 wheel, FP16 and FP32
        # build); 1.7.1 builds them and plans them in INT8.
        return not self.rtx or self.version >= (1, 7)

    @property
    def runtime_cache(self) -> bool:
        # TensorRT-RTX compiles kernels when an engine is loaded; IRuntimeCache keeps them between runs.
        return self.rtx

    @property
    def explicit_batch_flag(self) -> bool:
        # Needed before 10.0 (the legacy path on 8.x); deprecated and ignored in 10.x,
        # removed in 11.
        return not self.rtx and self.version < (10,)

    @property
    def weak_typing(self) -> bool:
        # BuilderFlag.INT8/FP16 and IInt8Calibrator: removed in 11; TensorRT-RTX never had them.
        return not self.rtx and self.version < (11,)

    @property
    def optimization_level(self) -> bool:
        # IBuilderConfig.builder_optimization_level and trtexec --builderOptimizationLevel came
        # with 8.6: 8.5 (JetPack 5.1) has neither. TensorRT-RTX has it.
        return self.rtx or self.version >= (8, 6)

    @property
    def hardware_compatibility(self) -> bool:
        # IBuilderConfig.hardware_compatibility_level: 8.6 on. TensorRT-RTX engines are portable
        # across their compute capabilities instead.
        return not self.rtx and self.version >= (8, 6)

    @property
    def dla_legacy(self) -> bool:
        # Weakly typed DLA builds (INT8/FP16 flags, calibrator): up to 10.7, the last 10.x with DLA.
        return not self.rtx and self.version < (10, 8)

    @property
    def dla_strongly_typed(self) -> bool:
        # 11.4.1: DLA on Jetson AGX Orin with JetPack 7.2.2+, strongly typed networks only.
        # 10.8-11.4.0 have none on Jetson (11.4.0: Windows on ARM only); Thor has no DLA.
        return not self.rtx and self.version >= (11, 4, 1)

    @property
    def dla(self) -> bool:
        return self.dla_legacy or self.dla_strongly_typed

    @property
    def calib_cache_header(self) -> str:
        """The first line TensorRT expects in a calibration cache; it skips a cache whose header differs."""
        from ..quantize.cache import CALIBRATOR, version_number

        return f"TRT-{version_number(self.text)}-{CALIBRATOR}"

    def require_dla(self) -> None:
        if self.rtx:
            raise SkEdgeError(f"{self.label} has no DLA (desktop RTX GPUs only); build for a Jetson with --target tensorrt")
        if not self.dla:
            raise SkEdgeError(
                f"TensorRT {self.text} has no DLA support on Jetson (10.7 was the last 10.x with DLA; 11.4.1 "
                "restores it on Jetson AGX Orin with JetPack 7.2.2+); build for the GPU (no --dla-core)"
            )

    @property
    def parser_error_node_name(self) -> bool:
        return self.rtx or self.version >= (10,)

    def require_main_path(self) -> None:
        if not self.strongly_typed:
            raise SkEdgeError(
                f"TensorRT {self.text} cannot build sk-edge's precision-carrying graphs (strongly typed "
                f"networks need TensorRT >= {'.'.join(map(str, MIN_VERSION))}: JetPack 6.1 or later); "
                "on older JetPacks use the legacy DLA path (--dla-core N) or upgrade"
            )


@dataclass
class BuildOptions:
    """Builder settings users set from the command line."""

    workspace_mib: int = 1024
    opt_level: int = 3
    dynamic_batch: int | None = None  # max batch of the optimisation profile (min 1)
    opt_batch: int | None = None  # profile's opt batch [default: max]
    dla_core: int | None = None
    hardware_compatible: bool = False  # AMPERE_PLUS: one engine for every Ampere+ desktop GPU
    timing_cache: Path | None = None
    target: str = "tensorrt"  # or "rtx": TensorRT for RTX, for desktop RTX GPUs
    rtx_sms: tuple[str, ...] | None = None  # TensorRT-RTX compute capabilities ("86", "120"); None: NVIDIA's default set

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got '{self.target}'")
        if self.target == "rtx":
            if self.dla_core is not None:
                raise UsageError(
                    "--target rtx has no DLA (TensorRT-RTX is for desktop RTX GPUs); use --target tensorrt on a Jetson"
                )
            if self.hardware_compatible:
                raise UsageError(
                    "--hardware-compatible is for --target tensorrt; a TensorRT-RTX engine covers the GPUs --rtx-sm names"
                )
            unknown = [sm for sm in self.rtx_sms or () if sm not in RTX_SMS]
            if unknown or self.rtx_sms == ():
                raise UsageError(
                    f"--rtx-sm takes compute capabilities among {', '.join(RTX_SMS)} (e.g. 86,89,120), "
                    f"got '{','.join(self.rtx_sms or ())}'"
                )
        elif self.rtx_sms is not None:
            raise UsageError("--rtx-sm is for --target rtx")
        if self.workspace_mib < 16:
            raise UsageError(f"--workspace must be at least 16 MiB, got {self.workspace_mib}")
        if self.opt_level not in OPT_LEVELS:
            raise UsageError(f"--opt-level must be 0 to 5, got {self.opt_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise UsageError(f"--dla-core must be 0 or more, got {self.dla_core}")
        if self.dla_core is not None and self.hardware_compatible:
            raise UsageError("--dla-core and --hardware-compatible exclude each other (DLA engines are Jetson-only)")

    @property
    def compute_capabilities(self) -> tuple[str, ...]:
        """The TensorRT-RTX targets the engine covers: the ones asked for, else NVIDIA's default set."""
        return tuple(self.rtx_sms) if self.rtx_sms else RTX_DEFAULT_SMS

    def settings(self) -> dict:
        d = asdict(self)
        d["timing_cache"] = None  # where the cache lives does not change the engine
        d["rtx_sms"] = list(self.rtx_sms) if self.rtx_sms else None
        return d


@dataclass
class BuiltEngine:
    plan: bytes
    timing_cache: bytes | None
    layers: list[PlanLayer] = field(default_factory=list)  # the fused plan, as TensorRT reports it
    report: dict = field(default_factory=dict)  # what it was read from: the inspector's JSON, or the builder's message
    trt_version: str = ""
    flavour: str = "tensorrt"
    dla_layers: list[dict] = field(default_factory=list)  # DLA builds: which layers the DLA accepts
    warnings: list[str] = field(default_factory=list)  # the builder's warnings, once each
    int8_hint: str | None = None  # what to change when the plan does not honour the graph's INT8


def _log_severity(trt):
    return trt.Logger(trt.Logger.WARNING)


def _capturing_logger(trt: Any):  # the tensorrt or tensorrt_rtx module, untyped
    """An ILogger that keeps the builder's ``Layers:`` message (VERBOSE) and its warnings and errors.

    TensorRT-RTX reports its fused plan only through the logger; the other VERBOSE messages
    (thousands per build) are dropped as they come.
    """

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.layers_message: str | None = None
            self.warnings: dict[str, int] = {}
            self.errors: list[str] = []

        def log(self, severity, msg):
            if is_layers_message(msg):
                self.layers_message = msg
            elif severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings[msg.strip()] = self.warnings.get(msg.strip(), 0) + 1

    return CapturingLogger()


def _parse(trt, network, logger, onnx_path: Path, features: TrtFeatures) -> None:
    parser = trt.OnnxParser(network, logger)
    # parse() with the path lets the parser find external weight files beside the model.
    if parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = ""
        if features.parser_error_node_name:
            where = f"node '{err.node_name()}' ({err.node_operator()}): "
        errors.append(f"{where}{err.desc()}")
    raise SkEdgeError(
        f"TensorRT {features.text} cannot parse '{onnx_path.name}': "
        + (errors[0] if errors else "no error reported")
        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    )


def _cache_calibrator(trt, cache: bytes):
    """An IInt8EntropyCalibrator2 that only replays sk-edge's calib.cache."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None  # never asked while the cache covers every tensor

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data):
            return None

    return CacheCalibrator()


def retarget_calib_cache(cache: bytes, features: TrtFeatures) -> bytes:
    """``cache`` with the header of the TensorRT that will read it.

    TensorRT ignores a calibration cache whose header names another version or calibrator
    (NVIDIA/TensorRT#1378), and a cache-only calibrator then has no data at all.
    """
    _, sep, body = cache.partition(b"\n")
    return features.calib_cache_header.encode() + sep + body


def _check_build_request(features: TrtFeatures, options: BuildOptions, legacy: bool, precision: str) -> None:
    """Refuse what the running TensorRT cannot build, in one line naming the fix."""
    if precision == "int8" and not legacy and not features.int8_qdq_convolutions:
        raise SkEdgeError(
            f"{features.label} cannot build INT8 Q/DQ convolutions (its builder stops on them); "
            "pip install 'sk-edge[rtx]' for TensorRT-RTX 1.7.1, or build --precision fp16"
        )
    if (options.target == "rtx") != features.rtx:
        wanted = "TensorRT-RTX" if options.target == "rtx" else "TensorRT"
        raise SkEdgeError(f"--target {options.target} needs {wanted}, and the module given is {features.label}")
    if options.dla_core is not None:
        features.require_dla()
    if legacy:
        if not features.weak_typing:
            raise SkEdgeError(f"{features.label} has no weakly typed builds; the legacy DLA path needs TensorRT <= 10.7")
        if features.version < MIN_LEGACY_VERSION:
            raise SkEdgeError(f"TensorRT {features.text} is older than 8.5 (JetPack 5.1), which sk-edge's runtime needs")
    else:
        features.require_main_path()
    if options.hardware_compatible and not features.hardware_compatibility:
        raise SkEdgeError(f"{features.label} has no hardware-compatible engines (8.6 or later); drop --hardware-compatible")


def _configure(
    trt,
    builder,
    network,
    features: TrtFeatures,
    options: BuildOptions,
    input_name: str,
    input_shape: tuple[int, ...],
    log: Callable[[str], None],
):
    """The builder config of everything but precision: memory, optimisation level, profile, targets."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if features.optimization_level:
        config.builder_optimization_level = options.opt_level
    elif options.opt_level != 3:
        log(f"  TensorRT {features.text} has no builder optimisation levels; --opt-level {options.opt_level} is ignored")
    # DETAILED keeps per-layer types and tactics for the layer plan (the inspector's, or TensorRT-RTX's log).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.dynamic_batch:
        profile = builder.create_optimization_profile()
        rest = tuple(input_shape[1:])
        opt = options.opt_batch or options.dynamic_batch
        profile.set_shape(input_name, (1, *rest), (opt, *rest), (options.dynamic_batch, *rest))
        config.add_optimization_profile(profile)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if features.compute_capabilities and options.rtx_sms:
        # Without a call the builder targets NVIDIA's default set (Ampere and newer RTX).
        config.num_compute_capabilities = len(options.rtx_sms)
        for i, sm in enumerate(options.rtx_sms):
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), i)
    return config


def _set_weak_precision(trt, config, features: TrtFeatures, precision: str, calib_cache: bytes | None) -> None:
    """The weakly typed path's precision flags and cache-only calibrator."""
    if precision == "fp32":
        return
    # The precision flags come first: can_run_on_DLA answers for the precisions set.
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calib_cache is None:
            raise SkEdgeError("a weakly typed INT8 build needs calib.cache; run `sk-edge calibrate` first")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _cache_calibrator(trt, retarget_calib_cache(calib_cache, features))


def _dla_layers(trt, network, config, options: BuildOptions) -> list[dict]:
    """TensorRT's own per-layer DLA verdict, before fusion: what runs on the DLA, what falls back."""
    if options.dla_core is None:
        return []
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = options.dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return [
        {"layer": layer.name, "type": str(layer.type), "dla": bool(config.can_run_on_DLA(layer))}
        for layer in (network.get_layer(i) for i in range(network.num_layers))
    ]


def _attach_timing_cache(config, options: BuildOptions, log: Callable[[str], None]) -> bytes:
    """Read the machine's timing cache into ``config``; returns what was read (for the merge on save)."""
    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    # ignore_mismatch=False: a cache from another device or version is not used.
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
        log("  the timing cache does not match this device or TensorRT version; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return cache_bytes


def build_engine(
    onnx_path: Path,
    input_name: str,
    input_shape: tuple[int, ...],
    options: BuildOptions,
    calib_cache: bytes | None = None,
    legacy: bool = False,
    trt=None,
    log: Callable[[str], None] = lambda msg: None,
    precision: str = "int8",
) -> BuiltEngine:
    """Build a serialized engine from ``onnx_path`` with TensorRT, or TensorRT-RTX for ``options.target == "rtx"``.

    ``legacy`` selects the weakly typed path (FP32 graph + the builder flags of ``precision`` +
    ``calib_cache`` for INT8), for the DLA up to 10.7 and the GPU on 8.5/8.6; otherwise the
    graph's own types decide every layer's precision.
    """
    trt = trt or import_tensorrt(options.target)
    features = TrtFeatures.of(trt)
    _check_build_request(features, options, legacy, precision)
    logger = _log_severity(trt) if features.engine_inspector else _capturing_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if features.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if not legacy and features.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(trt, network, logger, onnx_path, features)

    config = _configure(trt, builder, network, features, options, input_name, input_shape, log)
    if legacy:
        _set_weak_precision(trt, config, features, precision, calib_cache)
    dla_layers = _dla_layers(trt, network, config, options)
    cache_bytes = _attach_timing_cache(config, options, log) if features.timing_cache else b""

    targets = f", for compute capabilities {', '.join(options.compute_capabilities)}" if features.compute_capabilities else ""
    log(f"  building with {features.label} (optimisation level {options.opt_level}{targets}) ...")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = getattr(logger, "errors", [])
        raise SkEdgeError(
            f"{features.label} failed to build an engine from '{onnx_path.name}'"
            + (f": {errors[-1]}" if errors else " (see its messages above)")
        )
    plan_bytes = bytes(plan)
    timing = None
    if features.timing_cache:
        new_cache = config.get_timing_cache()
        if new_cache is not None:
            timing = (
                save_timing_cache(config, new_cache, options.timing_cache, cache_bytes)
                if options.timing_cache
                else bytes(new_cache.serialize())
            )
    if features.engine_inspector:
        opt_shape = (options.opt_batch or options.dynamic_batch, *input_shape[1:]) if options.dynamic_batch else None
        report = inspect_engine(plan_bytes, input_name, opt_shape, trt=trt)
        layers, warnings = parse_inspector_layers(report), []
    else:
        if not logger.layers_message:
            raise SkEdgeError(
                f"{features.label} built '{onnx_path.name}' but reported no layer plan, so what the engine "
                "runs in which precision cannot be checked; report this as a bug"
            )
        report = {"builder_message": logger.layers_message}
        layers = parse_builder_layers(logger.layers_message)
        warnings = [f"{msg} (x{n})" if n > 1 else msg for msg, n in logger.warnings.items()]
    hint = None
    if features.rtx and "75" in (options.rtx_sms or ()):
        hint = "TensorRT-RTX plans INT8 convolutions for Turing (SM75) in FP16: leave 75 out of --rtx-sm, or build --precision fp16 for Turing"
    return BuiltEngine(plan_bytes, timing, layers, report, features.text, features.flavour, dla_layers, warnings, hint)


def save_timing_cache(config, cache, path: Path, read_at_start: bytes) -> bytes:
    """Write ``cache`` to the machine-wide ``path``, merged with whatever other builds wrote meanwhile.

    Builds run in parallel on one machine share the cache file; written as is, the last writer
    would drop the others' timings. Under an exclusive lock, what is on disk now is read back and,
    if another build changed it since this one started, combined into ``cache`` before the write
    (Polygraphy's EngineBytesFromNetwork does the same).
    """
    import fcntl

    from ..artifacts import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        on_disk = path.read_bytes() if path.is_file() else b""
        if on_disk and on_disk != read_at_start:
            cache.combine(config.create_timing_cache(on_disk), False)
        data = bytes(cache.serialize())
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    return data


def inspect_engine(plan: bytes, input_name: str | None = None, shape: tuple[int, ...] | None = None, trt=None) -> dict:
    """The engine inspector's per-layer JSON for ``plan`` (built with DETAILED verbosity).

    With dynamic shapes the inspector reports formats as "N/A" unless it is given an
    execution context whose input shape is set, so ``shape`` (the profile's opt) is set.
    """
    trt = trt or import_tensorrt()
    runtime = trt.Runtime(_log_severity(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise SkEdgeError("TensorRT could not load the engine it just built")
    inspector = engine.create_engine_inspector()
    if shape is not None:
        context = engine.create_execution_context()
        context.set_input_shape(input_name, shape)
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}


# --- engines on disk -------------------------------------------------------------------


def engine_sidecar_path(engine: Path) -> Path:
    """``model.int8.engine`` -> ``model.int8.engine.json`` (``model.int8.json`` is the graph's)."""
    return engine.with_name(engine.name + ".json")


def host_platform() -> dict:
    """The CPU architecture and whether this is a Jetson: engines do not cross between them."""
    import platform

    from ..environment import jetson_info

    return {"machine": platform.machine(), "jetson": bool(jetson_info())}


def same_tensorrt_version(a: str, b: str) -> bool:
    """Whether two TensorRT version strings name the same release.

    Bindings and libraries spell one release differently ("10.3.0" from a wheel, "10.3.0.26" from
    the C++ library with its build number, "8.5.2.2" on JetPack): the components both give must
    agree, and there must be at least three. The C++ runtime applies the same rule.
    """
    if a == b:
        return True
    try:
        pa, pb = [int(x) for x in a.split(".")], [int(x) for x in b.split(".")]
    except ValueError:
        return False
    n = min(len(pa), len(pb))
    return n >= 3 and pa[:n] == pb[:n]


# TensorRT-RTX engine files start with this magic; the four bytes at _RTX_VERSION_AT are the
# release that wrote it (major, minor, patch, build: 01 07 01 74 for 1.7.1.116), as observed on the
# 1.7.1 wheel. Read only to say which release made a foreign engine; the sidecar's sha256 and
# Runtime.get_engine_validity are the checks.
_RTX_MAGIC = b"vtrt"
_RTX_VERSION_AT = 0x18


def rtx_header_version(plan: bytes) -> str | None:
    """The TensorRT-RTX release an engine file's header names, or None when it is not such a header."""
    if len(plan) < _RTX_VERSION_AT + 4 or not plan.startswith(_RTX_MAGIC):
        return None
    return ".".join(str(b) for b in plan[_RTX_VERSION_AT : _RTX_VERSION_AT + 4])


def rtx_engine_header(plan: bytes, built_by: str) -> dict:
    """What the sidecar records of a TensorRT-RTX engine's header."""
    version = rtx_header_version(plan)
    return {
        "first_bytes": plan[:64].hex(),
        "version": version,
        "version_matches_builder": version is not None and same_tensorrt_version(version, built_by),
    }


def _sm(compute_capability: str) -> str:
    """ "8.6" -> "86"."""
    return str(compute_capability).replace(".", "")


def rtx_mismatch(engine, gpu: dict | None) -> str | None:
    """Why a TensorRT-RTX engine cannot run on ``gpu``: its compute capability is not one the engine targets."""
    if gpu is None:
        return "there is no CUDA GPU here (it runs on an RTX GPU)"
    sm = _sm(gpu.get("compute_capability", "0"))
    targets = list(engine.compute_capabilities or RTX_DEFAULT_SMS)
    later = engine.default_targets and sm.isdigit() and int(sm) >= 120  # NVIDIA's default: "12.0 and later"
    if sm in targets or later:
        return None
    if sm not in RTX_SMS:
        return (
            f"TensorRT-RTX has no kernels for this {gpu.get('name')} (compute capability {gpu.get('compute_capability')}); "
            f"it targets RTX GPUs ({', '.join(RTX_SMS)}): use --target tensorrt here"
        )
    return (
        f"it is built for compute capabilities {', '.join(targets)} and this {gpu.get('name')} is "
        f"{gpu.get('compute_capability')}; rebuild with --rtx-sm {sm}"
    )


def engine_mismatch(engine, trt_version: str, gpu: dict | None, here: dict | None = None) -> str | None:
    """Why the engine its sidecar (an :class:`~sk_edge.sidecars.EngineInfo`) describes cannot run here, or None when it can.

    ``here`` is :func:`host_platform` (the default). Even a hardware-compatible (Ampere+)
    engine is tied to its platform: one built on an x86-64 desktop does not run on an Orin.
    A TensorRT-RTX engine is tied to its release and to the compute capabilities it targets.
    """
    name = "TensorRT-RTX" if engine.flavour == "rtx" else "TensorRT"
    if not same_tensorrt_version(engine.tensorrt_version, trt_version):
        return f"it was built with {name} {engine.tensorrt_version} and this is {name} {trt_version}"
    if engine.flavour == "rtx":
        return rtx_mismatch(engine, gpu)
    made_on = engine.gpu or {}
    if gpu is None:
        return "there is no CUDA GPU here"
    built_platform = engine.platform
    here = here or host_platform()
    if built_platform and (built_platform.get("machine"), built_platform.get("jetson")) != (here["machine"], here["jetson"]):
        where = lambda p: f"{p.get('machine')}{' Jetson' if p.get('jetson') else ''}"  # noqa: E731
        return f"it was built on {where(built_platform)} and this is {where(here)}"
    if engine.hardware_compatible:
        major = int(str(gpu.get("compute_capability", "0")).split(".")[0])
        return None if major >= 8 else f"it is built for Ampere and newer GPUs and this {gpu.get('name')} is older"
    if made_on.get("compute_capability") != gpu.get("compute_capability") or made_on.get("name") != gpu.get("name"):
        return (
            f"it was built on a {made_on.get('name')} (compute capability {made_on.get('compute_capability')}) "
            f"and this is a {gpu.get('name')} (compute capability {gpu.get('compute_capability')})"
        )
    return None


def gpu_identity() -> dict | None:
    """Name and compute capability of CUDA device 0, from pycuda or else torch."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:  # no pycuda, no driver, no device: ask torch
        from ..environment import cuda_device

        dev = cuda_device()
        return {"name": dev["name"], "compute_capability": dev["compute_capability"]} if dev else None


# The TensorRT releases a work directory may meet on a device, for the trtexec lines of
# on_device.sh: (label, the version whose rules the line follows).
DEVICE_TARGETS = (
    ("TensorRT 8.5 (JetPack 5.1)", (8, 5, 2)),
    ("TensorRT 8.6 (JetPack 6.0)", (8, 6, 2)),
    ("TensorRT 10.3 to 10.7 (JetPack 6.1/6.2, desktop 10.x up to 10.7)", (10, 3, 0)),
    ("TensorRT 10.8 to 10.x (JetPack 7.0/7.1, desktop)", (10, 13, 0)),
    ("TensorRT 11.x before 11.4.1 (desktop)", (11, 1, 0)),
    ("TensorRT 11.4.1 and later (JetPack 7.2.2+, desktop)", (11, 4, 1)),
)


def trtexec_command(
    onnx_name: str,
    engine_name: str,
    input_name: str,
    input_shape: tuple[int, ...],
    options: BuildOptions,
    legacy: bool = False,
    features: TrtFeatures | None = None,
    precision: str = "int8",
) -> str:
    """The trtexec line that builds the same engine as sk-edge with the TensorRT ``features`` describes.

    Only flags that release's trtexec has: no --builderOptimizationLevel before 8.6, no
    --stronglyTyped, --int8, --fp16 or --calib in 11.x (strong typing is always on there),
    --int8 --calib only for an INT8 legacy build.
    """
    features = features or TrtFeatures(MIN_VERSION)
    parts = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    if legacy:
        parts += {"int8": ["--int8", "--fp16", "--calib=calib.cache"], "fp16": ["--fp16"]}.get(precision, [])
    elif features.strongly_typed_flag:
        parts.append("--stronglyTyped")
    parts.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if features.optimization_level:
        parts.append(f"--builderOptimizationLevel={options.opt_level}")
    parts += ["--timingCacheFile=timing.cache", "--profilingVerbosity=detailed", "--exportLayerInfo=layers.json"]
    if options.dynamic_batch:
        dims = "x".join(map(str, input_shape[1:]))
        opt = options.opt_batch or options.dynamic_batch
        parts += [
            f"--minShapes={input_name}:1x{dims}",
            f"--optShapes={input_name}:{opt}x{dims}",
            f"--maxShapes={input_name}:{options.dynamic_batch}x{dims}",
        ]
    if options.hardware_compatible:
        parts.append("--hardwareCompatibilityLevel=ampere+")
    if options.dla_core is not None:
        parts += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return " ".join(parts)
