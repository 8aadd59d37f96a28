"""``sk-edge`` command line: a thin layer over the library, one command per stage.

Heavy libraries (torch, onnx, timm) are imported inside the commands so that ``--help``
and ``sk-edge info`` answer quickly.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import SkEdgeError, UsageError
from .bench import BenchOptions
from .cli_fields import field_option, finite, request_options
from .evaluation import SELECTION_IMAGES, SENSITIVITY_IMAGES
from .export.options import ExportOptions
from .fields import field_default
from .pipeline import PRECISIONS as PIPELINE_PRECISIONS
from .pipeline import BuildRequest
from .preprocess import CLI_RESIZE
from .quantize.methods import METHODS
from .quantize.options import DEFAULT_MIXED, CalibrationOptions
from .quantize.options import MIXED as MIXED_PRECISIONS
from .quantize.options import PRECISIONS
from .reference import NAME as DEFAULT_MODEL  # the bundled, trained reference model
from .verify import VerifyOptions

# The library's own lists (their modules load without onnx).
BUILD_PRECISIONS = PIPELINE_PRECISIONS
# Host-side packages that are extras (pyproject.toml), and the extra that installs each.
HOST_EXTRAS = {"torch": "export", "torchvision": "timm", "timm": "timm", "safetensors": "timm"}


class _ReportedError(click.ClickException):
    """A :class:`SkEdgeError` shown as one line, with the error's own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        # click declares exit_code on the class and reads it from the instance it catches
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file=None) -> None:
        click.echo(f"sk-edge: error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # The conventional 128 + SIGINT; every artifact is written atomically and the temporary
            # files were removed while the exception unwound, so what the work directory held before
            # stays as it was. The process ends here: interpreter shutdown (library threads, atexit
            # hooks) is not given the chance to turn the exit status back into "killed by SIGINT",
            # which a loaded CI machine showed once.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            click.echo("sk-edge: interrupted; the work directory keeps what was written before", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            extra = HOST_EXTRAS.get(missing)
            if extra is None or os.environ.get("SK_EDGE_DEBUG"):
                raise
            # The device install has no PyTorch; the host side is an extra.
            raise _ReportedError(
                f"`sk-edge {ctx.invoked_subcommand}` needs {missing}, which is not installed here; on the host, "
                f"pip install 'sk-edge[{extra}]' (on a device, build from a work directory made on the host: "
                "sk-edge build --from DIR)",
                1,
            ) from None
        except (SkEdgeError, OSError) as exc:
            if os.environ.get("SK_EDGE_DEBUG"):
                raise
            if isinstance(exc, SkEdgeError):
                raise _ReportedError(str(exc), exc.exit_code) from None
            from .workdir_lock import describe_os_error

            raise _ReportedError(describe_os_error(exc), 1) from None


def _log(message: str) -> None:
    click.echo(message, err=True)


def parse_model_args(values: tuple[str, ...]) -> dict:
    """``("branches=3", "layers=[1,1,1,1]")`` -> ``{"branches": 3, "layers": [1, 1, 1, 1]}``."""
    args = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-arg '{item}' is not KEY=VALUE (for example --model-arg branches=3)")
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw  # a bare string such as act_layer=silu
    return args


def model_options(command):
    """MODEL_OPTIONS on a command: what picks the network and its preprocessing, parsed into requests."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .preprocess import requests_from

        fields = {
            k: kwargs.pop(k) for k in ("mean", "std", "resize", "crop_pct", "interpolation", "channel_order", "exif_orientation")
        }
        given = {k: v for k, v in fields.items() if v is not None}
        kwargs["preprocess"] = requests_from(given, kwargs.pop("preprocess_file"), "the command line")
        kwargs["model_args"] = parse_model_args(kwargs["model_args"])
        return command(*args, **kwargs)

    for option in reversed(MODEL_OPTIONS):  # decorators apply bottom-up: the table's first option is listed first
        wrapper = option(wrapper)
    return wrapper


def _size(ctx, param, value):
    if value is None:
        return None
    from .preprocess import parse_size

    try:
        return parse_size(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


# What picks the network and its preprocessing, in the order --help lists them (model_options applies them).
MODEL_OPTIONS = (
    click.option(
        "--model",
        default=None,
        help="sknet26-digits (the bundled trained reference), sknet26, sknet50, sknet101, "
        f"or timm:NAME for a timm SelectiveKernel model [default: the work directory's own model, "
        f"else {DEFAULT_MODEL}]. A model, weights, classes or input size other than the work "
        "directory's is refused unless --force.",
    ),
    click.option(
        "--weights",
        type=click.Path(path_type=Path),
        help="State dict or checkpoint (.pth/.pt, loaded with weights_only=True) or .safetensors.",
    ),
    click.option("--num-classes", type=click.IntRange(min=1), help="Classifier outputs [model default: 1000]."),
    click.option(
        "--input-size",
        default=None,
        callback=_size,
        metavar="N|HxW",
        help="Input side, or height x width (e.g. 224x320) [default: the checkpoint's, else the model's own: "
        "64 for sknet26-digits, 224 otherwise].",
    ),
    click.option(
        "--model-arg",
        "model_args",
        multiple=True,
        metavar="KEY=VALUE",
        help="Model constructor argument, repeatable; VALUE is JSON or a bare string "
        "(ours: branches, groups, reduction, min_dim, base_width, stem_width).",
    ),
    click.option("--mean", default=None, metavar="R,G,B", help="Normalisation mean of pixels scaled to [0, 1]."),
    click.option("--std", default=None, metavar="R,G,B", help="Normalisation standard deviation."),
    click.option(
        "--resize",
        type=click.Choice(tuple(CLI_RESIZE)),
        default=None,
        help="crop: resize, then the central window (torchvision/timm eval); stretch: the whole image to "
        "the input size; letterbox: fit, keep the aspect ratio, pad with the mean colour.",
    ),
    click.option(
        "--crop-pct",
        type=click.FloatRange(0, 1, min_open=True),
        default=None,
        help="For --resize crop: the share of the resized image the input covers (1.0: no crop).",
    ),
    click.option("--interpolation", type=click.Choice(("bilinear", "bicubic", "nearest")), default=None),
    click.option(
        "--channel-order",
        type=click.Choice(("RGB", "BGR"), case_sensitive=False),
        default=None,
        help="The channel order the model was trained on.",
    ),
    click.option(
        "--exif-orientation",
        type=click.Choice(("ignore", "apply")),
        default=None,
        help="ignore: the pixels as stored, as torchvision and timm load photos; apply: turned upright by "
        "their EXIF tag, as OpenCV's imread does [default: ignore].",
    ),
    click.option(
        "--class-names",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="One class name per line, in class order [default for build: the names of --images' class "
        "folders]: in export.json, verify.md, the engine sidecar, the Triton and DeepStream label files.",
    ),
    click.option(
        "--preprocess",
        "preprocess_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE.json",
        help="The same fields as JSON (input_size, mean, std, resize, crop_pct, "
        "interpolation, channel_order, exif_orientation); options given here win.",
    ),
)


def workdir_option(command):
    """-w/--workdir, and the work directory held for the whole command (:func:`sk_edge.workdir_lock.locked`).

    ``build --from DIR`` works in DIR, so that is the folder held.
    """

    @click.option(
        "-w",
        "--workdir",
        type=click.Path(path_type=Path),
        default=str(field_default(BuildRequest, "workdir")),
        show_default=True,
        help="Work directory holding every stage's artifacts.",
    )
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .workdir_lock import locked

        with locked(kwargs.get("from_dir") or kwargs["workdir"], log=_log):
            return command(*args, **kwargs)

    return wrapper


# --max-float-share of build, also sensitivity's: BuildRequest's field spells it for both.
max_float_share_option = field_option(BuildRequest, "max_float_share")


def _run_verify(workdir, options) -> None:
    from .verify import verify as run_verify

    bar = _Progress("  images")
    try:
        run_verify(workdir, options, log=_log, progress=bar)
    finally:
        bar.close()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="sk-edge")
def cli() -> None:
    """Put Selective Kernel Networks (SKNet) on NVIDIA Jetson and desktop GPUs.

    \b
    Each stage reads and writes typed artifacts in a work directory (-w):
      export     PyTorch SKNet -> model.fp32.onnx + export.json
                 (BatchNorm folded, SK select step rewritten, parity checked)
      calibrate  sample images -> calib.json + calib.cache (INT8 ranges)
      quantize   -> model.int8.onnx (Q/DQ) or model.fp16.onnx
      build      all of the above, then a TensorRT engine (ONNX Runtime check without TensorRT),
                 then verify
      verify     drift of the engine / graph from the FP32 PyTorch reference -> verify.json/.md
      bench      latency, throughput, memory of every backend -> bench.json/.md/.png
      sensitivity  INT8 drift per layer, and the layers to keep in FP16 for a budget
      analyze    SK kernel selection at object scales, FP32 vs candidate -> selection.json/.png
      export-triton / export-deepstream   a Triton model repository, a DeepStream nvinfer config
      info       libraries, ONNX Runtime providers, TensorRT, GPU, Jetson
      models     the SKNets sk-edge knows, with parameters and GMACs

    Set SK_EDGE_DEBUG=1 to see tracebacks behind error messages.
    """


@cli.command()
@model_options
@request_options(ExportOptions)
@workdir_option
@click.option("--force", is_flag=True, help="Export even when the existing export is up to date.")
def export(model, weights, num_classes, input_size, model_args, class_names, preprocess, workdir, force, **settings):
    """Export an SKNet to WORKDIR/model.fp32.onnx (+ export.json).

    Every SK unit is rewritten exactly (BatchNorm folded, no Softmax, no 5-D tensors) and
    the graph is checked against the PyTorch model on ONNX Runtime before it is written.
    """
    from .export import export_model
    from .models import build_model

    options = ExportOptions(**settings)
    options.validate()
    request = _model_request(workdir, model, weights, num_classes, input_size, model_args, force, preprocess)
    if request.reuse_export:
        from .workdir import load_export

        changed = options.differences(ExportOptions.recorded(load_export(workdir).doc["settings"]))
        if not changed and not force:
            _log(f"{workdir / 'model.fp32.onnx'} is up to date (the work directory's own {request.name}); --force re-exports")
            return
        _log(f"exporting the work directory's own {request.name} again" + (f": {', '.join(changed)}" if changed else ""))
    _log(f"building {request.name} ...")
    built = build_model(request.name, request.num_classes, request.input_size, request.weights, request.args, request.preprocess)
    from .pipeline import name_classes

    name_classes(built, class_names, None, _log)
    if built.weights is None:
        _log("  no --weights: exporting randomly initialised weights (fine for latency, meaningless for accuracy)")
    export_model(built, workdir, options, force=force, log=_log)


def _model_request(workdir, model, weights, num_classes, input_size, model_args, force, preprocess=None):
    from .model_choice import ModelRequest, resolve_model

    request = ModelRequest(model, weights, num_classes, input_size, model_args, preprocess)
    return resolve_model(workdir, request, DEFAULT_MODEL, force)


class _Progress:
    """A click progress bar on stderr, opened when the library says how much work there is."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Any = None  # click's ProgressBar, a type click does not export

    def __call__(self, total: int):
        stream = sys.stderr  # click.get_text_stream is deprecated (click 8.5) and goes in click 9
        if not stream.isatty():  # a log file gets the stage's own lines, not a bare label per bar
            return lambda n: None
        self.bar = click.progressbar(length=total, label=self.label, file=stream)
        self.bar.__enter__()
        return self.bar.update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@cli.command()
@workdir_option
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder of sample images from the model's domain (JPEG/PNG/BMP/WebP, searched recursively).",
)
@request_options(CalibrationOptions)
@click.option("--force", is_flag=True, help="Recalibrate even when calib.json is up to date.")
def calibrate(workdir, images, force, **settings):
    """Calibrate INT8 ranges on sample images: WORKDIR/calib.json and calib.cache.

    Runs model.fp32.onnx on ONNX Runtime and collects histograms of exactly the tensors
    that will be quantized. calib.json keeps the histograms, so another --method is
    applied without running the images again. calib.cache is TensorRT's calibration-cache
    format, for trtexec --calib and the legacy calibrator API.
    """
    from .quantize import calibrate as run_calibration

    options = CalibrationOptions(**settings)
    bar = _Progress("  images")
    try:
        doc = run_calibration(workdir, images, options, force=force, log=_log, progress=bar)
    finally:
        bar.close()
    spread = doc["summary"]
    _log(
        "amax as a fraction of max, median over "
        f"{len(doc['tensors'])} tensors: " + ", ".join(f"{m} {spread[m]['median_of_max']:.2f}" for m in METHODS if m in spread)
    )
    worst = spread["most_clipped"][0] if spread["most_clipped"] else None
    if worst:
        _log(f"most clipped with {doc['method']}: '{worst['tensor']}' ({worst['clipped_fraction']:.3%} of values above amax)")


@cli.command()
@workdir_option
@click.option("--precision", type=click.Choice(PRECISIONS), required=True, help="int8 (Q/DQ) or fp16.")
@click.option(
    "--mixed",
    type=click.Choice(MIXED_PRECISIONS),
    default=DEFAULT_MIXED,
    show_default=True,
    help="INT8 only: precision of everything not quantized.",
)
@click.option("--force", is_flag=True, help="Rewrite even when the graph is up to date.")
def quantize(workdir, precision, mixed, force):
    """Write the precision into the graph: WORKDIR/model.int8.onnx or model.fp16.onnx.

    INT8: per-channel INT8 weights and per-tensor Q/DQ on the inputs of Conv/Gemm and on
    residual inputs, placed the way TensorRT fuses them; the SK attention path stays in
    floating point. FP16: FP16 weights and compute, with FP32 I/O.
    """
    from .quantize import quantize_model

    quantize_model(workdir, precision, mixed, force=force, log=_log)


@cli.command()
@workdir_option
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Held-out images [default for the reference model: its evaluation set].",
)
@click.option("--labels", type=click.Path(path_type=Path), default=None, help="CSV of file,label rows.")
@click.option("--num-images", type=int, default=SENSITIVITY_IMAGES, show_default=True, help="Images per measurement.")
@click.option("--mixed", type=click.Choice(MIXED_PRECISIONS), default=DEFAULT_MIXED, show_default=True)
@click.option(
    "--max-top1-drop",
    type=float,
    default=None,
    metavar="PTS",
    callback=finite,
    help="Also choose the fewest layers to keep in floating point for this budget, and re-quantize.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PCT",
    callback=finite,
    help="The same for top-1 agreement with FP32 (no labels needed); with --max-top1-drop, both must hold.",
)
@max_float_share_option
def sensitivity(workdir, images, labels, num_images, mixed, max_top1_drop, min_agreement, max_float_share):
    """Rank every INT8 layer by the drift it causes: WORKDIR/sensitivity.json and sensitivity.md."""
    from .quantize import quantize_model
    from .sensitivity import analyze_sensitivity
    from .verify import default_eval_set
    from .workdir import load_export

    if images is None:
        images, default_labels = default_eval_set(workdir, load_export(workdir), _log)
        labels = labels or default_labels
    bar = _Progress("  layers")
    try:
        doc = analyze_sensitivity(
            workdir,
            images,
            labels,
            count=num_images,
            mixed=mixed,
            max_top1_drop=max_top1_drop,
            min_agreement=min_agreement,
            log=_log,
            progress=bar,
            max_float_share=max_float_share / 100,
        )
    finally:
        bar.close()
    for i, r in enumerate(doc["layers"][:5], 1):
        _log(f"  {i}. {r['layer']}: gain {r['gain_kl']:.2e} KL, alone {r['alone']['top1_agreement']:.2%} agreement")
    if doc.get("budget"):
        quantize_model(workdir, "int8", mixed, force=True, log=_log, keep_float=doc["budget"]["kept_float"])
    _log(f"wrote {workdir / 'sensitivity.md'}")


@cli.command()
@model_options
@request_options(BuildRequest)
@workdir_option
def build(**fields):
    """Run every stage up to a TensorRT engine, and judge it: WORKDIR/model.<precision>.engine.

    \b
    export -> calibrate (int8) -> quantize -> engine -> verify, each skipped when up to date.
    Every build ends with a verdict: on --eval-images, else on the 20% of --images that an
    INT8 build holds out of calibration (a fixed, hash-based split), else on the reference
    model's own held-out set; with labels (CSV or class sub-folders) the --max-top1-drop
    budget applies, without them --min-agreement. Without TensorRT the graph is judged on
    ONNX Runtime instead and WORKDIR/on_device.sh holds the commands to finish on the device.
    """
    from .pipeline import build as run_build

    given = click.get_current_context().get_parameter_source("workdir") is not click.core.ParameterSource.DEFAULT
    workdir, from_dir = fields["workdir"], fields["from_dir"]
    if from_dir is not None and given and Path(workdir).resolve() != Path(from_dir).resolve():
        # --from builds in its own folder: a second folder would be silently ignored.
        raise UsageError(f"--from {from_dir} builds in '{from_dir}' itself; drop -w {workdir} (or pass the same folder)")
    request = BuildRequest(**fields)
    outcome = run_build(request, log=_log, progress=_Progress)
    click.echo(outcome.summary, err=True)
    if outcome.failure:
        raise SkEdgeError(outcome.failure)


@cli.command()
@workdir_option
@request_options(VerifyOptions)
def verify(workdir, **settings):
    """Compare a build with the FP32 PyTorch reference: WORKDIR/verify.json and verify.md.

    \b
    The reference: PyTorch, run live (its outputs are then stored in WORKDIR/reference.npz);
    without --images, the PyTorch outputs stored there (on a device without PyTorch, or to skip
    re-running it); without PyTorch and stored outputs, the FP32 graph. verify.md says which.

    Top-1/top-5 agreement, cosine similarity, KL divergence, max logit difference and, with
    labels, both accuracies. Exits 1 when a threshold is broken, so it can gate a CI job.
    """
    _run_verify(workdir, VerifyOptions(**settings))


@cli.command()
@workdir_option
@request_options(BenchOptions)
def bench(workdir, **settings):
    """Benchmark the model on every backend: WORKDIR/bench.json, bench.md and bench.png.

    PyTorch FP32 (CPU, and CUDA when present), ONNX Runtime on each precision graph, and
    the TensorRT engine through sk_edge.runtime. Each configuration runs in its own process, in
    interleaved rounds; speed-ups are from medians, and a run whose rounds disagree or whose
    machine was busy is flagged as not trustworthy.
    """
    from .bench import BENCH_MD, bench as run_bench

    options = BenchOptions(**settings)
    bar = _Progress("  configurations")
    try:
        run_bench(workdir, options, log=_log, progress=bar)
    finally:
        bar.close()
    click.echo((workdir / BENCH_MD).read_text())


@cli.command()
@workdir_option
@click.option("--candidate", type=click.Choice(("int8", "fp16")), default="int8", show_default=True)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Images with objects near the centre [default for the reference model: its evaluation set].",
)
@click.option("--num-images", type=int, default=SELECTION_IMAGES, show_default=True)
def analyze(workdir, candidate, images, num_images):
    """Kernel selection per SK unit at object scales 1x/1.5x/2x: WORKDIR/selection.json and selection.png."""
    from .analyze import analyze_selection
    from .verify import default_eval_set
    from .workdir import load_export

    if images is None:
        images, _ = default_eval_set(workdir, load_export(workdir), _log)
    doc = analyze_selection(workdir, images, candidate, count=num_images, log=_log)
    for u in doc["units"]:
        ref = ", ".join(f"{k}x {v:+.3f}" for k, v in u["reference"].items())
        cand = ", ".join(f"{v:+.3f}" for v in u["candidate"].values())
        _log(f"  {u['unit']}: FP32 {ref} | {candidate.upper()} {cand}")
    png = workdir / "selection.png"
    _log(f"wrote {workdir / 'selection.json'}" + (f" and {png}" if png.is_file() else ""))


@cli.command("export-triton")
@workdir_option
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), required=True, help="Triton model repository folder.")
@click.option("--name", default=None, help="Model name in the repository [default: the model's].")
@click.option(
    "--precision", type=click.Choice(BUILD_PRECISIONS), default=None, help="[default: int8, fp16, fp32 - the first built]."
)
@click.option(
    "--unverified",
    is_flag=True,
    help="Publish a file that has no passing verdict of its own (said in the repository's .sk-edge-model.json).",
)
def export_triton(workdir, repo, name, precision, unverified):
    """Write a Triton model repository entry: config.pbtxt and N/model.plan (or model.onnx).

    Only what verify.json judged and passed (that very file, or the graph an engine was built from) is published.
    """
    from .serving import export_triton as run

    run(workdir, repo, name, precision, log=_log, unverified=unverified)


@cli.command("export-deepstream")
@workdir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file [default: WORKDIR/deepstream_nvinfer.txt].",
)
@click.option("--precision", type=click.Choice(BUILD_PRECISIONS), default=None, help="[default: the first built].")
@click.option(
    "--unverified",
    is_flag=True,
    help="Write it for a file that has no passing verdict of its own (said in the config's first line).",
)
def export_deepstream(workdir, out, precision, unverified):
    """Write a DeepStream nvinfer classifier config (engine, scaling, offsets, colour, batch).

    Only for what verify.json judged and passed (that very file, or the graph an engine was built from).
    """
    from .serving import export_deepstream as run

    run(workdir, out, precision, log=_log, unverified=unverified)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(as_json: bool) -> None:
    """Show Python, torch, ONNX, ONNX Runtime, TensorRT, TensorRT-RTX, the CUDA device and the Jetson."""
    from .environment import describe

    env = describe()
    if as_json:
        click.echo(json.dumps(env, indent=2))
        return
    libs = env["libraries"]
    trt, rtx = env["tensorrt"], env["tensorrt_rtx"]
    rows = [
        ("sk-edge", libs["sk-edge"]),
        ("python", f"{env['python']} ({env['platform']})"),
        ("torch", libs["torch"] or "not installed"),
        ("onnx", libs["onnx"] or "not installed"),
        (
            "onnxruntime",
            f"{libs['onnxruntime'] or 'not installed'} ({', '.join(env['onnxruntime_providers']) or 'no providers'})",
        ),
        ("onnx-graphsurgeon", libs["onnx-graphsurgeon"] or "not installed"),
        ("timm", libs["timm"] or "not installed (pip install 'sk-edge[timm]' for timm models)"),
        ("tensorrt", trt["version"] if trt["installed"] else trt["detail"]),
        (
            "tensorrt-rtx",
            f"{rtx['version']} ({rtx['module']}; builds --target rtx engines here, GPU or not)"
            if rtx["installed"]
            else rtx["detail"],
        ),
        ("pycuda", libs["pycuda"] or "not installed"),
    ]
    dev = env["cuda_device"]
    rows.append(
        (
            "cuda device",
            f"{dev['name']} (compute capability {dev['compute_capability']}, {dev['memory_gib']} GiB)" if dev else "none",
        )
    )
    jetson = env["jetson"]
    if jetson:
        rows.append(
            ("jetson", f"{jetson['model'] or 'unknown model'}, L4T {jetson['l4t']}, JetPack {jetson['jetpack'] or 'unknown'}")
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@cli.command()
@click.option("--complexity", is_flag=True, help="Build each model to count parameters and GMACs (slower).")
@click.option("--input-size", type=int, default=224, show_default=True, help="Input side for --complexity.")
def models(complexity: bool, input_size: int) -> None:
    """List the SKNets sk-edge can export (timm ones when timm is installed)."""
    from .models import build_model, model_names
    from .models.complexity import count_macs, count_params

    names = model_names()
    if not complexity:
        click.echo("\n".join(names))
        return
    click.echo(f"{'model':<26} {'params (M)':>10} {'GMACs @' + str(input_size):>12}")
    for name in names:
        module = build_model(name, input_size=input_size).module
        click.echo(f"{name:<26} {count_params(module) / 1e6:>10.2f} {count_macs(module, input_size) / 1e9:>12.2f}")


def main() -> None:
    cli(prog_name="sk-edge")
