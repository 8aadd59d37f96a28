"""``sk-edge build`` as one library call: :func:`build` (also ``sk_edge.build``).

export -> calibrate (INT8) -> quantize (INT8/FP16) -> the accuracy budget -> engine (or the
device script without TensorRT) -> verify -> the summary block. Each stage skips itself when
its inputs are unchanged. The command line parses its options into a :class:`BuildRequest`
and makes this one call, so Python and the CLI share every default (a test keeps them equal).

    import sk_edge

    outcome = sk_edge.build(model="sknet26", weights="mine.pth", num_classes=10, input_size=64,
                            images="my_images/", precision="int8", workdir="work")
    print(outcome.summary)            # the block the CLI prints
    assert outcome.passed             # the verdict: False when a threshold broke
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import artifacts
from .backends.tensorrt import RTX_SMS, TARGETS, BuildOptions
from .engine_stage import BuildResult as EngineResult
from .errors import SkEdgeError, UsageError
from .fields import field_default, option, same_option
from .quantize.methods import METHODS
from .quantize.options import DEFAULT_MAX_FLOAT_SHARE, DEFAULT_METHOD, DEFAULT_MIXED, MIXED, CalibrationOptions
from .reference import NAME as DEFAULT_MODEL  # the bundled, trained reference model
from .verify import VerifyOptions

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BuildRequest:
    """Everything ``sk-edge build`` takes; the command line reads its defaults from here (one copy of each).

    Each field is the option of the same name with dashes (``num_classes`` is ``--num-classes``);
    where the names differ the option is given.

    Attributes:
        precision: ``int8``, ``fp16`` or ``fp32``.
        workdir: the work directory (``-w``).
        model: ``sknet26``/``sknet50``/``sknet101``, ``sknet26-digits`` or ``timm:NAME``; None: the work
            directory's own model, else the bundled reference model.
        weights: a state dict, checkpoint or ``.safetensors`` file (read with ``weights_only=True``).
        num_classes: the classifier's outputs (the checkpoint's classifier shape is checked against it).
        input_size: ``N``, ``"HxW"`` or ``(H, W)``.
        model_args: constructor arguments (``--model-arg KEY=VALUE``), e.g. ``{"branches": 3}``.
        preprocess: preprocessing fields as in ``--preprocess FILE.json`` (``mean``, ``std``, ``resize``,
            ``crop_pct``, ``interpolation``, ``channel_order``, ``exif_orientation``); they win over the file.
        preprocess_file: ``--preprocess FILE.json``.
        class_names: a file with one name per line, or a list.
        images: calibration images (class folders or flat); 20 % are held out to judge the build when
            ``eval_images`` is not given.
        labels: a ``file,label`` CSV for ``images``.
        num_images: calibration images to use [512, or all there are].
        method: the range method (``entropy``, ``percentile``, ``max``, ``mse``) [entropy].
        mixed: the precision of layers kept out of INT8 (``fp16`` or ``fp32``).
        dynamic_batch: a dynamic batch dimension 1..MAX.
        workspace_mib: the builder's workspace (``--workspace``, MiB).
        opt_level: TensorRT's builder optimisation level (0-5).
        dla_core: build for this DLA core (Jetson; weakly typed TensorRT 8.5-10.7, strongly typed 11.4.1+).
        hardware_compatible: an engine for every Ampere+ GPU (desktop TensorRT).
        target: ``tensorrt`` or ``rtx`` (TensorRT-RTX, desktop RTX GPUs; builds without a GPU).
        rtx_sms: TensorRT-RTX compute capabilities (``--rtx-sm``); None: NVIDIA's default set.
        from_dir: ``--from DIR``: build the engine from a work directory as it is (on the device).
        eval_images: images that judge the build, never calibrated on.
        eval_labels: a ``file,label`` CSV for ``eval_images``.
        min_agreement: the verdict's top-1 agreement gate, percent.
        max_top1_drop: the verdict's accuracy-drop gate, points (applied where there are labels).
        max_float_share: an INT8 build fails when more of its MACs than this (percent) stay in floating point.
        min_speedup: a latency gate against FP32 (applied only where an engine runs).
        verify: False is ``--no-verify``: a build with no verdict.
        force: redo every stage, and take over a work directory made for another model.
    """

    precision: str = field(default="int8", metadata=option("The precision of the engine.", choices=PRECISIONS))
    workdir: str | Path = "workdir"  # -w: the command's work-directory option, which also holds the folder's lock
    # the model (None: the work directory's own, else the bundled reference model): the options export shares
    model: str | None = None
    weights: str | Path | None = None
    num_classes: int | None = None
    input_size: int | tuple[int, int] | str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    # Fields as in --preprocess FILE.json (mean, std, resize...), or PreprocessRequests, the first winning.
    preprocess: dict[str, Any] | list | None = None
    preprocess_file: str | Path | None = None
    class_names: str | Path | list[str] | None = None
    # calibration
    images: str | Path | None = field(
        default=None,
        metadata=option(
            "Calibration images for INT8 [default for sknet26-digits: calib_data/skdigits in a checkout, else the same "
            "512 images rendered into WORKDIR/calib_images].",
            kind="path",
        ),
    )
    labels: str | Path | None = field(
        default=None,
        metadata=option(
            "CSV of file,label rows for --images (class sub-folders need none): the held-out part then judges accuracy "
            "and the --max-top1-drop budget.",
            kind="path",
            metavar="FILE",
        ),
    )
    num_images: int | None = field(
        default=None,
        metadata=option(
            f"Images to calibrate on [default: {CalibrationOptions.num_images}, or every image of the calibration part "
            "when fewer].",
            kind="int",
            low=1,
        ),
    )
    method: str | None = field(default=None, metadata=option(f"Calibration method [default: {DEFAULT_METHOD}].", choices=METHODS))
    mixed: str = field(default=DEFAULT_MIXED, metadata=option("INT8: precision of the rest.", choices=MIXED))
    # the engine
    dynamic_batch: int | None = field(
        default=None, metadata=option("Dynamic batch 1..MAX (export and optimisation profile).", kind="int", metavar="MAX")
    )
    workspace_mib: int = field(
        default=BuildOptions.workspace_mib,
        metadata=option("TensorRT workspace memory pool limit.", flag="--workspace", kind="int", metavar="MiB"),
    )
    opt_level: int = field(
        default=BuildOptions.opt_level, metadata=option("TensorRT builder optimisation level, 0 to 5.", kind="int")
    )
    dla_core: int | None = field(
        default=None,
        metadata=option("Jetson DLA core, with GPU fallback (TensorRT 8.5-10.7, and 11.4.1+ on Orin).", kind="int", metavar="N"),
    )
    hardware_compatible: bool = field(
        default=BuildOptions.hardware_compatible,
        metadata=option("One engine for every Ampere or newer GPU (desktop).", kind="flag"),
    )
    target: str = field(
        default=BuildOptions.target,
        metadata=option(
            "tensorrt: TensorRT, for Jetson and desktop GPUs (built on the GPU that runs it). rtx: TensorRT for RTX, for "
            "desktop RTX GPUs: WORKDIR/model.<precision>.rtx.engine, built on any machine, GPU or not "
            "(pip install 'sk-edge[rtx]').",
            choices=TARGETS,
        ),
    )
    rtx_sms: tuple[str, ...] | None = field(
        default=None,
        metadata=option(  # None: NVIDIA's default set
            f"--target rtx: the compute capabilities to build for, among {', '.join(RTX_SMS)} (75 = Turing, only on "
            "request) [default: NVIDIA's default set, 80,86,89,120 and later].",
            flag="--rtx-sm",
            kind="csv",
            metavar="SM,...",
        ),
    )
    from_dir: str | Path | None = field(
        default=None,
        metadata=option(
            "Build the engine from an existing work directory (copied from another machine); no PyTorch needed.",
            flag="--from",
            kind="dir",
        ),
    )
    # the verdict
    eval_images: str | Path | None = field(
        default=None,
        metadata=option(
            "Held-out images that judge the build (verify and the accuracy budget) [default: the reference model's 1000 "
            "held-out images; for other models the 20% of --images an INT8 build holds out of calibration (all of "
            "--images for FP16/FP32)].",
            kind="path",
            metavar="DIR",
        ),
    )
    eval_labels: str | Path | None = field(
        default=None,
        metadata=option(
            "CSV of file,label rows for --eval-images: accuracy, and the --max-top1-drop budget.", kind="path", metavar="FILE"
        ),
    )
    min_agreement: float = field(default=VerifyOptions.min_agreement, metadata=same_option(VerifyOptions, "min_agreement"))
    max_top1_drop: float = field(default=VerifyOptions.max_top1_drop, metadata=same_option(VerifyOptions, "max_top1_drop"))
    max_float_share: float = field(
        default=DEFAULT_MAX_FLOAT_SHARE * 100,
        metadata=option(  # percent
            "INT8: fail when the accuracy budget would keep more than this share of the MACs in floating point.",
            kind="float",
            low=0,
            high=100,
            metavar="PCT",
            finite=True,
        ),
    )
    min_speedup: float | None = field(
        default=None,
        metadata=option(
            "With an engine: fail unless it is X times faster than PyTorch FP32 on this GPU at batch 1.",
            kind="float",
            low=0,
            low_open=True,
            metavar="X",
            finite=True,
        ),
    )
    verify: bool = field(
        default=True,
        metadata=option("Skip the verify step at the end (the build then has no verdict).", kind="flag", off_flag="--no-verify"),
    )
    force: bool = field(default=False, metadata=option("Redo every stage even when up to date.", kind="flag"))

    def validate(self) -> None:
        """Every field a caller sets, checked before any work (the Python API gets the command line's errors)."""
        import math

        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name, low, high in (("min_agreement", 0, 100), ("max_top1_drop", 0, math.inf), ("max_float_share", 0, 100)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                bound = f"0 to {high:g}" if math.isfinite(high) else "0 or more"
                raise UsageError(f"{name} must be a finite number, {bound}, got {value!r}")
        if self.min_speedup is not None and (
            isinstance(self.min_speedup, bool)
            or not isinstance(self.min_speedup, (int, float))
            or not math.isfinite(self.min_speedup)
            or self.min_speedup <= 0
        ):
            raise UsageError(f"min_speedup must be a finite number above 0, got {self.min_speedup!r}")
        if self.num_images is not None and (
            isinstance(self.num_images, bool) or not isinstance(self.num_images, int) or self.num_images < 1
        ):
            raise UsageError(f"num_images must be a whole number of 1 or more, got {self.num_images!r}")
        if self.preprocess is not None and not isinstance(self.preprocess, (dict, list)):
            raise UsageError(
                f"preprocess must be a dict of fields as in --preprocess FILE.json (e.g. "
                f"{{'resize': 'stretch'}}), got {self.preprocess!r}"
            )
        if not isinstance(self.model_args, dict):
            raise UsageError(f"model_args must be a dict of name: value (as --model-arg name=value), got {self.model_args!r}")

    def preprocess_requests(self):
        from .preprocess import requests_from

        if isinstance(self.preprocess, list):  # PreprocessRequests already (the CLI's), before the file's
            return self.preprocess + (requests_from(None, _path(self.preprocess_file), "the build request") or []) or None
        return requests_from(self.preprocess, _path(self.preprocess_file), "the build request")


@dataclass
class BuildOutcome:
    """What a build ends with."""

    workdir: Path
    precision: str
    passed: bool | None  # None: not judged (verify=False)
    summary: str  # the block the CLI prints last
    verdict: dict | None = None  # verify.json
    engine: Path | None = None
    graph: Path | None = None
    precision_mix: dict | None = None  # INT8: the share of the MACs in INT8
    latency: str = ""
    failure: str | None = None  # the one-line reason a verdict failed


class StageClock:
    """Wall time per stage, for the summary: each :meth:`start` ends the stage before it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0

    def start(self, stage: str) -> None:
        import time

        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._t0
        self._stage, self._t0 = stage, now

    def line(self) -> str:
        self.start("done")
        return ", ".join(f"{stage} {s:.1f} s" for stage, s in self.seconds.items())


@contextlib.contextmanager
def _bar(progress, label: str):
    bar = progress(label) if progress else None
    try:
        yield bar
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()


def build(
    request: BuildRequest | None = None,
    /,
    *,
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[str], Any] | None = None,
    **fields,
) -> BuildOutcome:
    """Run every stage and judge the result; ``fields`` are :class:`BuildRequest`'s, for a call without one.

    ``progress(label)`` may return a callable ``(total) -> tick`` (with an optional ``close()``)
    for the long stages. Bad input raises :class:`~sk_edge.errors.UsageError`; a failed verdict
    does not raise: ``outcome.passed`` is False and ``outcome.failure`` says why.
    """
    from .workdir_lock import locked

    known = {f.name for f in dataclasses.fields(BuildRequest)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UsageError(
            f"sk_edge.build() has no field {unknown[0]!r}; its fields are BuildRequest's: {', '.join(sorted(known))}"
        )
    if request is None:
        request = BuildRequest(**fields)
    elif fields:
        request = dataclasses.replace(request, **fields)
    request.validate()
    if request.from_dir is not None and Path(request.workdir) not in (Path(BuildRequest.workdir), Path(request.from_dir)):
        raise UsageError(
            f"from_dir='{request.from_dir}' builds in that folder itself; leave workdir out (or give the same folder)"
        )
    workdir = Path(request.from_dir if request.from_dir is not None else request.workdir)
    # Held for the whole build, as every command holds its work directory (a second build fails at once).
    with locked(workdir, log):
        return _build(request, workdir, log, progress)


def _build(r: BuildRequest, workdir: Path, log: Callable[[str], None], progress) -> BuildOutcome:
    from .backends.tensorrt import BuildOptions
    from .engine_stage import validate
    from .verify import candidate_precision_mix

    clock = StageClock()
    clock.start("plan")
    images = Path(r.images) if r.images is not None else None
    options = BuildOptions(
        workspace_mib=r.workspace_mib,
        opt_level=r.opt_level,
        dynamic_batch=r.dynamic_batch,
        dla_core=r.dla_core,
        hardware_compatible=r.hardware_compatible,
        target=r.target,
        rtx_sms=tuple(r.rtx_sms) if r.rtx_sms is not None else None,
    )
    legacy = validate(r.precision, options)
    searched = None  # set when the layer search chose layers on the images that then judge the build
    if r.from_dir is not None:
        plan = _plan_from_dir(r, workdir, images, legacy, log)
    else:
        model, plan, export_options = _plan_model(r, workdir, images)
        _export_step(r, workdir, model, export_options, plan, clock, log)
        searched = _graph_steps(r, workdir, images, plan, clock, log, progress)
    result = _engine_step(r, workdir, options, legacy, clock, log)
    failure, verdict = (None, None) if plan.skip else _verify_step(r, workdir, result, plan, clock, log, progress)
    mix = candidate_precision_mix(workdir, r.precision, result.graph.name)  # the graph judged, or the engine's
    clock.start("latency")  # a step of its own: the engine against PyTorch FP32 here, when it can run here
    latency = latency_verdict(workdir, result, r.min_speedup, log)
    report = build_summary(
        workdir,
        r.precision,
        result,
        verdict,
        mix,
        judged=not plan.skip,
        latency=latency,
        searched=searched,
        max_float_share=r.max_float_share / 100,
        require_engine=r.from_dir is not None,
        clock=clock,
    )
    failure = failure or report.failed
    return BuildOutcome(
        workdir=workdir,
        precision=r.precision,
        passed=None if plan.skip else failure is None,
        summary=report.text,
        verdict=verdict,
        engine=result.engine,
        graph=result.graph,
        precision_mix=mix,
        latency=report.latency,
        failure=failure,
    )


def _judging_options(r: BuildRequest) -> dict[str, Any]:
    """plan_judging's options that a build passes through as given."""
    return dict(
        labels=_path(r.labels), eval_images=_path(r.eval_images), eval_labels=_path(r.eval_labels), no_verify=not r.verify
    )


def _plan_from_dir(r: BuildRequest, workdir: Path, images: Path | None, legacy: bool, log: Callable[[str], None]):
    """--from: the work directory's inputs checked and its judging planned, before anything is written."""
    from .engine_stage import check_inputs
    from .evaluation import plan_judging
    from .workdir import REFERENCE_NPZ, load_export

    check_inputs(workdir, r.precision, legacy)
    if images is not None or r.labels is not None or r.preprocess_requests():
        raise UsageError(
            "--from builds from the work directory as it is (its calibration and preprocessing "
            "included): --images, --labels and preprocessing options are not used; pass --eval-images "
            "DIR to judge the build on other images"
        )
    plan = plan_judging(
        load_export(workdir).model,
        r.precision,
        images=None,
        stored_reference=(workdir / REFERENCE_NPZ).is_file(),
        from_dir=True,
        **_judging_options(r),
    )
    log(f"building from '{workdir}' (its export, calibration and graphs as they are)")
    return plan


def _plan_model(r: BuildRequest, workdir: Path, images: Path | None):
    """The model, the judging plan and the export options of a build from a model: every usage error before work."""
    from .evaluation import plan_judging
    from .export.options import ExportOptions  # torch is imported only where a model is built and exported
    from .model_choice import ModelRequest, resolve_model

    export_options = ExportOptions(dynamic_batch=r.dynamic_batch)  # build takes no other export option
    export_options.validate()
    model = resolve_model(
        workdir,
        ModelRequest(r.model, _path(r.weights), r.num_classes, r.input_size, dict(r.model_args), r.preprocess_requests()),
        DEFAULT_MODEL,
        r.force,
    )
    if model.name is None:  # resolve_model names the user's, the work directory's or the default model
        raise SkEdgeError(f"no model to build in '{workdir}'")
    _check_model(model)
    plan = plan_judging(model.name, r.precision, images=images, **_judging_options(r))  # before any heavy work
    if images is None and r.precision == "int8" and model.name != DEFAULT_MODEL:
        raise UsageError(
            f"no --images given: pass --images DIR with sample images of '{model.name}'s domain "
            "(the bundled SK-Digits images calibrate only the reference model)"
        )
    if not plan.skip and model.weights is None and model.name != DEFAULT_MODEL:  # the bundled model has its weights
        raise UsageError(
            f"'{model.name}' without --weights has random weights: there is no trained PyTorch reference to judge "
            "the build against; pass --weights FILE (your trained model), or --no-verify for a latency-only build"
        )
    return model, plan, export_options


def _check_model(model) -> None:
    """The cheap checks of the model asked for, before any other: its name, and classes its checkpoint contradicts.
    None for the work directory's own export (checked when it was made): a no-op build imports no torch."""
    from .models.names import check_model_name

    if model.reuse_export:
        return
    check_model_name(model.name)
    if model.weights is not None and model.num_classes is not None:
        from .models.weights import check_num_classes  # imports torch: only for a checkpoint the user names

        check_num_classes(model.weights, model.num_classes)


def _export_step(
    r: BuildRequest, workdir: Path, model, export_options, plan, clock: StageClock, log: Callable[[str], None]
) -> None:
    """[1/4]: export the model, unless the work directory's export is the one asked for."""
    from .export.options import ExportOptions
    from .workdir import load_export

    clock.start("export")
    log(f"[1/4] export {model.name}")
    changed = []
    if model.reuse_export:
        # The export's own options (its opset, select form) stay; only what build takes can change them.
        recorded = ExportOptions.recorded(load_export(workdir).doc["settings"])
        if r.dynamic_batch is not None:
            export_options = dataclasses.replace(recorded, dynamic_batch=r.dynamic_batch)
            changed = export_options.differences(recorded)
    if model.reuse_export and not changed:
        log(f"  continuing with the export in '{workdir}' (--model, --weights, --num-classes, --input-size change it)")
        return
    if changed:
        log(f"  exporting the work directory's own {model.name} again: {', '.join(changed)}")
    from .export import export_model
    from .models import build_model

    built = build_model(model.name, model.num_classes, model.input_size, model.weights, model.args, model.preprocess)
    name_classes(built, r.class_names, plan.images, log)
    export_model(built, workdir, export_options, force=r.force, log=log)


def _graph_steps(
    r: BuildRequest, workdir: Path, images: Path | None, plan, clock: StageClock, log: Callable[[str], None], progress
) -> str | None:
    """[2/4] calibrate and [3/4] quantize, then the accuracy budget's layer search; what the search chose, if it ran."""
    from .workdir import load_export

    if images is None and r.precision == "int8":
        images = default_calibration_images(workdir, log=log)
    export = load_export(workdir)  # once, for what follows (each load hashes model.fp32.onnx)
    judge = judge_images(workdir, export, plan, log=log)
    budget = accuracy_budget(export, judge, r.max_top1_drop, r.min_agreement)
    if r.precision == "int8" and images is not None:  # images: the user's, else the bundled ones just written
        _calibrate_step(r, workdir, images, plan, judge, clock, log, progress)
    if r.precision == "fp32":
        return None
    from .quantize import quantize_model

    clock.start("quantize")
    log(f"[3/4] quantize to {r.precision}")
    keep: list[str] = []
    if r.precision == "int8" and not r.force and budget is not None:
        from .sensitivity import previous_choice

        keep = previous_choice(workdir, budget, r.mixed)
    quantize_model(workdir, r.precision, r.mixed, force=r.force, log=log, keep_float=keep)
    if r.precision != "int8" or budget is None:
        return None
    # The layers kept in floating point: a new search's, else the earlier one's that still meets the budget.
    clock.start("accuracy budget")
    chosen = fit_accuracy_budget(workdir, r.mixed, judge, budget, r.max_float_share / 100, log, progress) or keep
    return f"{len(chosen)} layers kept in floating point were chosen on these same images" if chosen else None


def _calibrate_step(
    r: BuildRequest, workdir: Path, images: Path, plan, judge, clock: StageClock, log: Callable[[str], None], progress
) -> None:
    from .quantize import CalibrationOptions, calibrate

    clock.start("calibrate")
    log("[2/4] calibrate")
    holdout = plan.images.holdout if plan.images else None
    if holdout is not None:
        log(f"  {judge.describe()} judges the build: {len(judge.paths())} images, never calibrated on")
    # A DLA build may meet a weakly typed TensorRT (JetPack 5.1-6.2), which needs every range.
    calib_options = CalibrationOptions(
        **({"method": r.method} if r.method else {}),
        num_images=r.num_images or default_calibration_count(images, holdout),
        legacy_ranges=r.dla_core is not None,
        holdout=holdout,
    )
    with _bar(progress, "  images") as bar:
        calibrate(workdir, images, calib_options, force=r.force, log=log, progress=bar)


def _engine_step(
    r: BuildRequest, workdir: Path, options, legacy: bool, clock: StageClock, log: Callable[[str], None]
) -> EngineResult:
    """[4/4]: the engine, or where TensorRT is absent the graph checked on ONNX Runtime in its stead."""
    from .backends.tensorrt import TensorRTUnavailable
    from .engine_stage import build_engine_stage, build_without_tensorrt

    clock.start("engine")
    log("[4/4] engine")
    try:
        result = build_engine_stage(workdir, r.precision, options, legacy=legacy, force=r.force, log=log)
    except TensorRTUnavailable as exc:
        result = build_without_tensorrt(
            workdir,
            r.precision,
            options,
            str(exc),
            legacy,
            log=log,
            verdict_flags=verdict_flags(r),
            on_device=r.from_dir is not None,
        )
    if result.engine is not None:
        layers = result.layers
        share = (
            f", INT8 for {layers['int8_mac_share']:.1%} of the MACs as planned"
            if r.precision == "int8" and "int8_mac_share" in layers
            else ""
        )
        log(f"wrote {result.engine}: {layers.get('layers', '?')} layers{share}")
        if layers.get("float_sk_units"):
            log(f"  SK attention kept in floating point in {len(layers['float_sk_units'])} SK units")
    return result


def _verify_step(
    r: BuildRequest, workdir: Path, result: EngineResult, plan, clock: StageClock, log: Callable[[str], None], progress
) -> tuple[str | None, dict | None]:
    """The verdict on the engine where it can run here, else on the graph it was built from: (failure, report)."""
    from .verify import VerifyFailed, VerifyOptions, verify

    clock.start("verify")
    judge_engine = result.engine is not None and result.cannot_run is None
    if result.engine is None:
        log(f"verify ({result.graph.name} on ONNX Runtime, as there is no engine)")
    elif not judge_engine:
        log(f"verify ({result.graph.name} on ONNX Runtime: {result.engine.name} cannot run here, {result.cannot_run})")
    else:
        log("verify")
    judged = plan.images
    try:
        with _bar(progress, "  images") as bar:
            return None, verify(
                workdir,
                VerifyOptions(
                    candidate=("rtx-engine" if r.target == "rtx" else "engine") if judge_engine else r.precision,
                    min_agreement=r.min_agreement,
                    max_top1_drop=r.max_top1_drop,
                    images=judged.root if judged else None,
                    labels=judged.labels_file if judged else None,
                    holdout=judged.holdout if judged else None,
                    # The build's own judging images are the ones its device is to be judged on.
                    store_reference=r.from_dir is None,
                    reuse=not r.force,
                ),
                log=log,
                progress=bar,
            )
    except VerifyFailed as exc:
        return str(exc), exc.report


def _signature_from_request() -> None:
    """Give :func:`build` the keyword parameters of :class:`BuildRequest` (names, defaults, types), so that
    ``help(sk_edge.build)``, IPython and inspect-based tools show them; the dataclass stays the one place
    that owns them."""
    own = inspect.signature(build)
    fields = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type, default=field_default(BuildRequest, f.name))
        for f in dataclasses.fields(BuildRequest)
    ]
    params = [own.parameters["request"], *fields, own.parameters["log"], own.parameters["progress"]]
    build.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]


_signature_from_request()


def verdict_flags(r: BuildRequest) -> tuple[str, ...]:
    """The host build's gates, for on_device.sh: the device judges its engine by the same thresholds."""
    if not r.verify:
        return ("--no-verify",)
    flags = (f"--min-agreement {r.min_agreement:g}", f"--max-top1-drop {r.max_top1_drop:g}")
    return flags + ((f"--min-speedup {r.min_speedup:g}",) if r.min_speedup is not None else ())


def _path(value) -> Path | None:
    return Path(value) if value is not None else None


def name_classes(built, class_names, judge, log: Callable[[str], None] = lambda msg: None) -> None:
    """Class names from ``class_names`` (a file or a list), else from the class folders that judge the build
    when they name every class."""
    from .evaluation import read_class_names

    classes = getattr(built.module, "num_classes", None)  # ours and timm's models both say it
    if isinstance(class_names, (list, tuple)):
        if classes is not None and len(class_names) != classes:
            raise UsageError(f"{len(class_names)} class names for a model with {classes} classes")
        built.class_names = [str(n) for n in class_names]
    elif class_names is not None:
        built.class_names = read_class_names(Path(class_names), classes)
    elif judge is not None:
        folders = judge.class_names()
        if folders and len(folders) == classes:
            built.class_names = folders
            log(f"  class names: the {len(folders)} class folders of {judge.root}")


def fit_accuracy_budget(
    workdir: Path, mixed: str, judge, budget, max_float_share: float, log: Callable[[str], None] = lambda msg: None, progress=None
) -> list[str]:
    """Accuracy-aware INT8: keep the most sensitive layers in floating point until ``budget`` holds on ``judge``.

    Returns the layers kept in floating point (none when INT8 already meets the budget).
    """
    from .quantize import quantize_model
    from .sensitivity import analyze_sensitivity, load_eval_set, needs_budget
    from .workdir import BUDGET_JSON

    key = budget_key(workdir, judge, budget, mixed)
    recorded = artifacts.read_json(workdir / BUDGET_JSON) or {}
    if recorded.get("key") == key:
        log(f"  INT8 within {budget} on {judge.describe()}, as measured before ({BUDGET_JSON}): {recorded['measured']}")
        return []
    # The judging images through the FP32 graph once, for the check and, when it fails, the search.
    evalset = load_eval_set(workdir, judge)
    if evalset.reference_at_chance():
        # No choice of layers can make a verdict pass whose reference is wrong: minutes of search saved.
        log("  the FP32 reference is at chance on these labels: no layer search (the verdict says why)")
        return []
    over, score = needs_budget(workdir, judge, None, budget, evalset=evalset)
    if not over:
        log(f"  INT8 within {budget} on {judge.describe()}: {budget.measured(score)}")
        artifacts.write_json(workdir / BUDGET_JSON, {"kind": "sk-edge/budget", "key": key, "measured": budget.measured(score)})
        return []
    log(f"  INT8 misses {budget} ({budget.measured(score)}): finding the layers to keep in floating point")
    with _bar(progress, "  sensitivity") as bar:
        doc = analyze_sensitivity(
            workdir,
            judge,
            None,
            mixed=mixed,
            max_top1_drop=budget.max_top1_drop,
            min_agreement=budget.min_agreement,
            log=log,
            progress=bar,
            max_float_share=max_float_share,
            evalset=evalset,
            alone=False,
        )
    kept = doc["budget"]["kept_float"]
    log(
        f"  keeping {len(kept)} layers in {mixed.upper()} ({doc['budget']['kept_mac_share']:.1%} of the MACs); see sensitivity.md"
    )
    quantize_model(workdir, "int8", mixed, force=True, log=log, keep_float=kept)
    return kept


def budget_key(workdir: Path, judge, budget, mixed: str) -> str:
    """What the budget check depends on: the INT8 and FP32 graphs, the judging images (names and bytes) and their
    labels, the budget and the precision of what is kept out of INT8."""
    from .images import images_digest
    from .workdir import FP32_ONNX, GRAPH_NAMES

    paths = judge.paths()
    table, _ = judge.labels()
    return artifacts.stage_key(
        {
            "int8": artifacts.sha256_file(workdir / GRAPH_NAMES["int8"]),
            "fp32": artifacts.sha256_file(workdir / FP32_ONNX),
            "images": images_digest([judge.name_of(p) for p in paths], paths),
            "holdout": judge.holdout,
            "labels": sorted(table.items()) if table else None,
            "budget": budget.to_dict(),
            "mixed": mixed,
        }
    )


DEFAULT_CALIBRATION_IMAGES = 512


def default_calibration_images(workdir: Path, log: Callable[[str], None] = lambda msg: None) -> Path:
    """The reference model's 512 calibration images, rendered from the sources the package bundles into
    WORKDIR/calib_images (once): the very bytes of a checkout's calib_data/skdigits, wherever sk-edge runs and
    whatever the current directory."""
    from .reference.digits import write_split_once
    from .workdir import CALIB_DIR

    return write_split_once(workdir, CALIB_DIR, "calib", DEFAULT_CALIBRATION_IMAGES, "SK-Digits calibration", log)


def judge_images(workdir: Path, export, plan, log: Callable[[str], None] = lambda msg: None):
    """The :class:`~sk_edge.evaluation.JudgeImages` the accuracy budget and verify use, or None.

    The reference model's own set is rendered into the work directory here; a build judged on
    stored PyTorch outputs, or not judged, has no images to fit a budget on.
    """
    from .evaluation import JudgeImages

    if plan.skip or plan.stored:
        return None
    if plan.default_set:
        from .verify import default_eval_set

        folder, labels = default_eval_set(workdir, export, log)
        return JudgeImages(folder, labels)
    return plan.images


def accuracy_budget(export, judge, max_top1_drop: float, min_agreement: float):
    """The budget the INT8 layer search must meet: verify's gates, i.e. the labelled top-1 drop and the agreement
    (the agreement alone without labels)."""
    from .sensitivity import Budget

    if judge is None:
        return None
    table, _ = judge.checked_labels(export.num_classes)
    return Budget(max_top1_drop if table is not None else None, min_agreement)


def default_calibration_count(images: Path, holdout: float | None) -> int:
    """512 images, or every image calibration may use when there are fewer."""
    from .evaluation import split_paths
    from .images import find_images

    paths = find_images(images)
    if holdout is not None:
        paths = split_paths(paths, Path(images), holdout)[0]
    return max(1, min(DEFAULT_CALIBRATION_IMAGES, len(paths)))


@dataclass
class BuildReport:
    """The block a build ends with: accuracy verdict, precision mix, latency verdict."""

    text: str
    failed: str | None = None  # a latency verdict that failed, as the error to raise
    latency: str = ""


def precision_line(precision: str, mix: dict | None) -> str:
    if precision == "int8":
        if mix:
            return (
                f"INT8 for {mix['int8_mac_share']:.1%} of the MACs ({mix['int8_layers']} of {mix['weighted_layers']} "
                "Conv/Gemm layers), floating point for the rest"
            )
        return (
            "INT8 where calib.cache gives a range, TensorRT's choice of precision elsewhere (a weakly typed "
            "engine: the graph's Q/DQ plan does not apply)"
        )
    return {"fp16": "FP16 throughout (FP32 inputs and outputs)", "fp32": "FP32 throughout"}[precision]


def what_was_judged(result: EngineResult) -> str:
    """The verdict's subject for the banner, so that it cannot be pasted as another artifact's."""
    if result.engine is None:
        return f"{result.graph.name} on ONNX Runtime; no engine built"
    if result.cannot_run:
        # The verdict is about the graph the engine was built from, never to be read as the engine's.
        return f"{result.graph.name} on ONNX Runtime; {result.engine.name} built, not run here"
    return f"{result.engine.name} on this GPU"


def engine_rows(workdir: Path, result: EngineResult) -> list[tuple[str, str]]:
    """The summary's rows on the engine: what built it, for which GPUs, and its own layer plan."""
    from .workdir import read_view

    if result.engine is None:
        return []
    engine = read_view(workdir, result.engine.name + ".json")
    made = f"TensorRT-RTX {engine.tensorrt_version}" if engine.flavour == "rtx" else f"TensorRT {engine.tensorrt_version}"
    if engine.flavour == "rtx":
        made += f", for compute capabilities {', '.join(engine.compute_capabilities or ())}"
        made += " (NVIDIA's default set, and later GPUs)" if engine.default_targets else ""
    elif engine.gpu:
        made += f", for {engine.gpu.get('name')}"
    rows = [("engine", f"{result.engine.name} ({made})" + (f"; not run here: {result.cannot_run}" if result.cannot_run else ""))]
    plan = result.layers
    if plan.get("mapped_to_onnx") and "mac_share_by_precision" in plan:
        shares = sorted(plan["mac_share_by_precision"].items(), key=lambda kv: -kv[1])
        mix = ", ".join(f"{p.upper()} {share:.1%}" for p, share in shares if share >= 0.0005)
        int8 = (
            f"; {plan['int8_layers']} of {plan['weighted_layers']} with INT8 inputs and weights"
            if precision_is_int8(plan)
            else ""
        )
        checked = (
            "each Conv/Gemm checked to run in the graph's precision"
            if plan.get("precision_checked")
            else "not held to the graph's precisions: a weakly typed build"
        )
        rows.append(
            (
                "engine plan",
                f"{mix} of the MACs as the engine plans it ({checked}{int8}); "
                f"{plan['convert_only_layers']} of {plan['layers']} layers only convert precision",
            )
        )
    elif plan:
        rows.append(
            (
                "engine plan",
                f"{plan.get('layers', '?')} layers; not mapped to ONNX nodes (this TensorRT's "
                "inspector gives no layer metadata), so the INT8 share above is the graph's alone",
            )
        )
    return rows


def precision_is_int8(plan: dict) -> bool:
    return plan.get("int8_layers", 0) > 0


def latency_verdict(
    workdir: Path, result: EngineResult, min_speedup: float | None, log: Callable[[str], None] = lambda msg: None
) -> tuple[str, str | None]:
    """(line, failure) for the summary: the engine against PyTorch FP32 on this GPU, when there is an engine."""
    if result.engine is None or result.cannot_run:
        ask = f" --min-speedup {min_speedup:g}" if min_speedup else " --min-speedup 2"
        reason = (
            f"{result.engine.name} cannot run here: {result.cannot_run}"
            if result.engine is not None
            else "no engine here (" + (result.fallback_reason or "TensorRT is absent").split(" (")[0] + ")"
        )
        line = f"not measured: {reason}; on the device: sk-edge bench -w {workdir}{ask}"
        if min_speedup is None:
            return line, None
        # A gate that was asked for and not applied is not a pass: on_device.sh carries it to the device.
        return line, f"--min-speedup {min_speedup:g} was not applied ({reason}); the device applies it (on_device.sh)"
    from .bench import BenchFailed, BenchOptions, bench

    from .versions import torch_installed

    # Without PyTorch (a torch-free Jetson) an FP32 engine, where one was built, is the baseline.
    precisions = (result.precision,) if torch_installed() or result.precision == "fp32" else (result.precision, "fp32")
    options = BenchOptions(
        backends=("torch", "tensorrt"),
        precisions=precisions,
        batches=(1,),
        warmup=10,
        iterations=50,
        min_speedup=min_speedup,
        skip_absent=True,
    )
    try:
        doc = bench(workdir, options, log=log)
    except BenchFailed as exc:
        return str(exc), str(exc)
    speed = doc.get("speedup_verdict") or {}
    return speed.get("line", "engine timed; no PyTorch FP32 on this GPU to compare with"), None


def build_summary(
    workdir: Path,
    precision: str,
    result: EngineResult,
    doc: dict | None,
    mix: dict | None,
    judged: bool,
    latency: tuple[str, str | None],
    searched: str | None = None,
    max_float_share: float = 0.25,
    require_engine: bool = False,
    clock: StageClock | None = None,
) -> BuildReport:
    """The summary block: what a user reads last, and what decides whether the build is safe to ship.

    ``doc`` is verify.json (None when not judged), ``mix`` the INT8 precision mix of the graph judged,
    ``latency`` the latency step's (line, failure). The title says what the verdict is about (an engine,
    or a graph on ONNX Runtime); a gate that was asked for and could not be applied (``--min-speedup``
    without a runnable engine, which the latency step reports as its failure), an INT8 graph
    that keeps more than ``max_float_share`` of its MACs in floating point, or no engine where one is
    the product (``require_engine``: ``build --from`` on the device), fails it.
    """
    workdir = Path(workdir)
    rows, verdict = _verdict_rows(doc, judged, searched)
    rows.append(("precision", precision_line(precision, mix)))
    failed = None
    if mix is not None and mix["float_mac_share"] > max_float_share:
        failed = (
            f"{result.graph.name} runs {mix['float_mac_share']:.1%} of its MACs in floating point, above "
            f"--max-float-share {max_float_share:.0%}: it is not an INT8 model"
        )
        rows.append(("precision gate", f"FAIL: {failed}"))
    elif require_engine and result.engine is None:
        # On the device the engine is the product: a graph judged instead is no build.
        failed = f"no engine was built on this device: {result.fallback_reason}"
    if result.engine is not None:
        rows += engine_rows(workdir, result)
    latency_line, slow = latency
    rows.append(("latency", latency_line))
    if clock is not None:
        rows.append(("time", clock.line()))
    failed = failed or slow
    if failed and verdict == "PASS":
        verdict = "FAIL"
    width = max(len(k) for k, _ in rows)
    title = f"sk-edge build {precision.upper()}: {verdict}"
    if judged and doc:
        title += f" ({what_was_judged(result)})"
    lines = ["", f"== {title} " + "=" * max(0, 72 - len(title))]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return BuildReport("\n".join(lines), failed, latency_line)


def _verdict_rows(doc: dict | None, judged: bool, searched: str | None) -> tuple[list[tuple[str, str]], str]:
    """The summary's rows about the verdict (accuracy, images, cautions, what was compared), and the verdict."""
    from .verify import images_line, summary_line

    if not judged:
        return [("accuracy", "not judged (--no-verify): this build has no verdict")], "NOT JUDGED"
    if not doc:
        return [], "NOT JUDGED"
    verdict = "PASS" if doc["passed"] else "FAIL"
    accuracy = f"{verdict}: {summary_line(doc['metrics'])}"
    if doc["broken"]:
        accuracy += f" (broken: {'; '.join(doc['broken'])})"
    rows = [("accuracy", accuracy), ("judged on", images_line(doc["images"], doc["metrics"]["images"]))]
    rows += [("caution", c) for c in doc.get("cautions") or ()]
    if searched:
        # The layer search fitted the graph to these images: an independent set judges without that bias.
        rows.append(
            (
                "caution",
                f"{searched}, so the figures above are optimistic; --eval-images DIR (images "
                "the search never saw) gives an independent verdict",
            )
        )
    rows += [("reference", doc["reference"]), ("candidate", doc["candidate"]["description"])]
    return rows, verdict
