"""``sk-edge`` command line: a thin layer over the library, one command per stage.

Heavy libraries (torch, onnx, timm) are imported inside the commands so that ``--help``
and ``sk-edge info`` answer quickly.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import click

from . import __version__
from .errors import SkEdgeError, UsageError

DEFAULT_WORKDIR = "workdir"
DEFAULT_MODEL = "sknet50"
# Kept equal to sk_edge.export.sk_rewrite.SELECT_FORMS by a test; listed here so that
# the CLI can show them without importing torch.
SELECT_FORMS = ("auto", "sigmoid", "softmax4d", "exp")


class _ReportedError(click.ClickException):
    """A :class:`SkEdgeError` shown as one line, with the error's own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"sk-edge: error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SkEdgeError as exc:
            if os.environ.get("SK_EDGE_DEBUG"):
                raise
            raise _ReportedError(str(exc), exc.exit_code) from None


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
    """--model, --weights, --num-classes, --input-size, --model-arg: what picks the network."""

    @click.option(
        "--model",
        "model_name",
        default=DEFAULT_MODEL,
        show_default=True,
        help="sknet26, sknet50, sknet101, or timm:NAME for a timm SelectiveKernel model.",
    )
    @click.option(
        "--weights",
        type=click.Path(path_type=Path),
        help="State dict or checkpoint (.pth/.pt, loaded with weights_only=True) or .safetensors.",
    )
    @click.option("--num-classes", type=click.IntRange(min=1), help="Classifier outputs [model default: 1000].")
    @click.option("--input-size", type=int, default=224, show_default=True, help="Square input side in pixels.")
    @click.option(
        "--model-arg",
        "model_args",
        multiple=True,
        metavar="KEY=VALUE",
        help="Model constructor argument, repeatable; VALUE is JSON or a bare string "
        "(ours: branches, groups, reduction, min_dim, base_width, stem_width).",
    )
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, **kwargs)

    return wrapper


workdir_option = click.option(
    "-w",
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORKDIR,
    show_default=True,
    help="Work directory holding every stage's artifacts.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="sk-edge")
def cli() -> None:
    """Put Selective Kernel Networks (SKNet) on NVIDIA Jetson and desktop GPUs.

    \b
    Each stage reads and writes typed artifacts in a work directory (-w):
      export   PyTorch SKNet -> model.fp32.onnx + export.json
               (BatchNorm folded, SK select step rewritten, parity checked)
      info     libraries, ONNX Runtime providers, TensorRT, GPU, Jetson
      models   the SKNets sk-edge knows, with parameters and GMACs

    Set SK_EDGE_DEBUG=1 to see tracebacks behind error messages.
    """


@cli.command()
@model_options
@click.option("--batch", type=int, default=None, help="Static batch size [default: 1].")
@click.option("--dynamic-batch", type=int, metavar="MAX", help="Dynamic batch dimension, 1..MAX.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (13 to 20).")
@click.option(
    "--select-form",
    type=click.Choice(SELECT_FORMS),
    default="auto",
    show_default=True,
    help="SK select rewrite: auto = sigmoid for 2 branches, exp otherwise.",
)
@workdir_option
@click.option("--force", is_flag=True, help="Export even when the existing export is up to date.")
def export(model_name, weights, num_classes, input_size, model_args, batch, dynamic_batch, opset, select_form, workdir, force):
    """Export an SKNet to WORKDIR/model.fp32.onnx (+ export.json).

    Every SK unit is rewritten exactly (BatchNorm folded, no Softmax, no 5-D tensors) and
    the graph is checked against the PyTorch model on ONNX Runtime before it is written.
    """
    if batch is not None and dynamic_batch is not None:
        raise UsageError("--batch and --dynamic-batch exclude each other; pass one")
    from .export import ExportOptions, export_model
    from .models import build_model

    options = ExportOptions(batch=batch or 1, dynamic_batch=dynamic_batch, opset=opset, select_form=select_form)
    options.validate()
    _log(f"building {model_name} ({input_size}x{input_size}) ...")
    built = build_model(model_name, num_classes, input_size, weights, parse_model_args(model_args))
    if weights is None:
        _log("  no --weights: exporting randomly initialised weights (fine for latency, meaningless for accuracy)")
    export_model(built, workdir, options, weights_path=weights, force=force, log=_log)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(as_json: bool) -> None:
    """Show Python, torch, ONNX, ONNX Runtime, TensorRT, the CUDA device and the Jetson."""
    from .environment import describe

    env = describe()
    if as_json:
        click.echo(json.dumps(env, indent=2))
        return
    libs = env["libraries"]
    trt = env["tensorrt"]
    rows = [
        ("sk-edge", libs["sk-edge"]),
        ("python", f"{env['python']} ({env['platform']})"),
        ("torch", libs["torch"] or "not installed"),
        ("onnx", libs["onnx"] or "not installed"),
        ("onnxruntime", f"{libs['onnxruntime'] or 'not installed'} ({', '.join(env['onnxruntime_providers']) or 'no providers'})"),
        ("onnx-graphsurgeon", libs["onnx-graphsurgeon"] or "not installed"),
        ("timm", libs["timm"] or "not installed (pip install 'sk-edge[timm]' for timm models)"),
        ("tensorrt", trt["version"] if trt["installed"] else trt["detail"]),
        ("pycuda", libs["pycuda"] or "not installed"),
    ]
    dev = env["cuda_device"]
    rows.append(
        ("cuda device", f"{dev['name']} (compute capability {dev['compute_capability']}, {dev['memory_gib']} GiB)" if dev else "none")
    )
    jetson = env["jetson"]
    if jetson:
        rows.append(("jetson", f"{jetson['model'] or 'unknown model'}, L4T {jetson['l4t']}, JetPack {jetson['jetpack'] or 'unknown'}"))
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
