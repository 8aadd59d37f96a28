"""The command line as users run it: a real process, exit codes, one-line errors, files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sk_edge import cli
from sk_edge.export.sk_rewrite import SELECT_FORMS
from sk_edge.models.sknet import sknet26

from conftest import CALIB, TINY_SKNET_ARGS, run_cli as run

TINY = [f"--model-arg={k}={v}" for k, v in TINY_SKNET_ARGS.items()]



def test_console_script_is_installed():
    # pip puts console scripts beside the interpreter of the environment it installs into.
    exe = Path(sys.executable).parent / "sk-edge"
    assert exe.is_file(), f"no sk-edge console script at {exe}; install the package (pip install -e .)"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "sk-edge, version" in out.stdout


def test_help_lists_the_stages():
    out = run("--help")
    assert out.returncode == 0
    for command in ("export", "info", "models"):
        assert command in out.stdout
    export_help = run("export", "--help").stdout
    for option in ("--model", "--weights", "--input-size", "--dynamic-batch", "--opset", "-w, --workdir"):
        assert option in export_help


def choices(command, option: str) -> tuple:
    return tuple({p.name: p for p in command.params}[option].type.choices)


def test_cli_select_forms_match_the_library():
    assert choices(cli.export, "select_form") == SELECT_FORMS


def test_export_end_to_end_with_weights_then_skip(tmp_path):
    weights = tmp_path / "finetuned.pth"
    torch.save({"state_dict": sknet26(num_classes=10, **TINY_SKNET_ARGS).state_dict()}, weights)
    workdir = tmp_path / "wd"
    args = ["export", "--model", "sknet26", *TINY, "--weights", str(weights), "--num-classes", "10",
            "--input-size", "64", "-w", str(workdir)]
    out = run(*args)
    assert out.returncode == 0, out.stderr
    assert "8 SK units rewritten (8 sigmoid)" in out.stderr
    assert "max |logit diff|" in out.stderr
    doc = json.loads((workdir / "export.json").read_text())
    assert doc["inputs"]["weights"]["path"] == str(weights)
    assert doc["model"]["output"]["shape"] == [1, 10]
    assert sorted(p.name for p in workdir.iterdir()) == ["export.json", "model.fp32.onnx"]

    again = run(*args)
    assert again.returncode == 0
    assert "is up to date" in again.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "sknet51"], 2, "unknown model 'sknet51'"),
        (["--model", "sknet26", "--input-size", "100"], 2, "use a multiple of 32"),
        (["--model", "sknet26", "--weights", "missing.pth"], 1, "weights file 'missing.pth' does not exist"),
        (["--model", "sknet26", "--weights", "garbage.pth"], 1, "'garbage.pth' is not a PyTorch checkpoint"),
        (["--model", "sknet26", "--weights", "ten.pth"], 1, "'fc.weight' is (10, 512) in the file but (1000, 512)"),
        (["--model", "sknet26", "--model-arg", "branches"], 2, "is not KEY=VALUE"),
        (["--model", "timm:resnet18"], 2, "has no Selective Kernel units"),
        (["--batch", "2", "--dynamic-batch", "4"], 2, "exclude each other"),
        (["--opset", "9"], 2, "--opset 9 is not supported"),
        (["--select-form", "sigmoid", "--model-arg", "branches=3"], 2, "exact only for 2 branches"),
        (["--select-form", "softmax"], 2, "Invalid value for '--select-form'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, code, message):
    (tmp_path / "garbage.pth").write_bytes(b"\x00\x01 definitely not a checkpoint")
    torch.save(sknet26(num_classes=10, **TINY_SKNET_ARGS).state_dict(), tmp_path / "ten.pth")
    model = [] if "--model" in args else ["--model", "sknet26"]
    tiny = [] if "timm:resnet18" in args else TINY
    size = [] if "--input-size" in args else ["--input-size", "64"]
    out = run("export", *model, *tiny, *size, *args, "-w", "wd", cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "wd").exists()


def test_info_reports_the_environment():
    text = run("info")
    assert text.returncode == 0
    for key in ("python", "torch", "onnxruntime", "tensorrt", "cuda device"):
        assert key in text.stdout
    assert "CPUExecutionProvider" in text.stdout
    data = json.loads(run("info", "--json").stdout)
    assert data["libraries"]["torch"] == torch.__version__.split("+")[0]
    assert data["tensorrt"]["installed"] in (True, False)
    assert data["cuda_device"] is None or "compute_capability" in data["cuda_device"]


def test_models_lists_every_family():
    out = run("models")
    assert out.returncode == 0
    names = out.stdout.split()
    assert names[:4] == ["sknet26-digits", "sknet26", "sknet50", "sknet101"]
    assert {"timm:skresnet18", "timm:skresnet34", "timm:skresnet50", "timm:skresnext50_32x4d"} <= set(names)


def test_cli_precision_choices_match_the_library():
    from sk_edge import quantize
    from sk_edge.quantize.methods import METHODS

    assert choices(cli.calibrate, "method") == METHODS == choices(cli.build, "method")
    assert cli.PRECISIONS == quantize.PRECISIONS and cli.MIXED_PRECISIONS == quantize.MIXED


def test_calibrate_and_quantize_on_the_reference_model(tmp_path):
    """export -> calibrate (with a corrupt file among real images) -> quantize int8 and fp16."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(CALIB.glob("*.png"))[:20]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    wd = str(tmp_path / "wd")

    assert run("export", "-w", wd).returncode == 0  # the default model: the trained reference
    out = run("calibrate", "-w", wd, "--images", str(images), "--num-images", "16", "--batch", "4")
    assert out.returncode == 0, out.stderr
    assert "skipped unreadable image broken.png" in out.stderr
    assert "amax as a fraction of max" in out.stderr
    calib = json.loads((tmp_path / "wd" / "calib.json").read_text())
    assert calib["method"] == "entropy" and calib["inputs"]["images"]["used"] == 16

    again = run("calibrate", "-w", wd, "--images", str(images), "--num-images", "16", "--batch", "4", "--method", "max")
    assert again.returncode == 0 and "reusing the histograms" in again.stderr

    for precision in ("int8", "fp16"):
        out = run("quantize", "-w", wd, "--precision", precision)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "wd" / f"model.{precision}.onnx").is_file()
        assert json.loads((tmp_path / "wd" / f"model.{precision}.json").read_text())["settings"]["precision"] == precision
    assert not [p.name for p in (tmp_path / "wd").iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]

    too_many = run("calibrate", "-w", wd, "--images", str(images), "--num-images", "30", "--force")
    assert too_many.returncode == 1
    assert "20 readable" in too_many.stderr and "Traceback" not in too_many.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["calibrate", "--images", "."], 1, "no model.fp32.onnx in 'wd'; run `sk-edge export -w wd` first"),
        (["calibrate"], 2, "Missing option '--images'"),
        (["quantize", "--precision", "int8"], 1, "no model.fp32.onnx in 'wd'"),
        (["quantize", "--precision", "int4"], 2, "Invalid value for '--precision'"),
        (["calibrate", "--images", ".", "--method", "kl"], 2, "Invalid value for '--method'"),
    ],
)
def test_precision_stages_refuse_bad_input_in_one_line(tmp_path, args, code, message):
    out = run(*args, "-w", "wd", cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "wd").exists()


def test_cli_verify_candidates_match_the_library():
    from sk_edge import verify

    assert choices(cli.verify, "candidate") == verify.CANDIDATES


def test_help_lists_every_stage():
    out = run("--help")
    for command in ("export", "calibrate", "quantize", "build", "verify", "bench", "info", "models"):
        assert f"  {command}" in out.stdout
