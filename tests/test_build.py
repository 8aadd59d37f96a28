"""`sk-edge build` end to end as users run it here: no TensorRT, so ONNX Runtime stands in."""

import json
import os

import pytest

from conftest import CALIB, run_cli as run



def test_build_int8_without_tensorrt_falls_back_and_leaves_the_device_script(tmp_path):
    wd = tmp_path / "wd"
    out = run("build", "--precision", "int8", "--images", str(CALIB), "--num-images", "48", "-w", str(wd))
    assert out.returncode == 0, out.stderr
    assert "no engine built: TensorRT is not installed here" in out.stderr
    assert "verify (model.int8.onnx on ONNX Runtime, as there is no engine)" in out.stderr
    assert "verify PASSED" in out.stderr
    verdict = json.loads((wd / "verify.json").read_text())
    assert verdict["passed"] and verdict["images"]["used"] == 1000  # the held-out set, not calibration images
    assert verdict["metrics"]["top1_agreement"] >= 0.98
    names = {p.name for p in wd.iterdir()}
    assert {"model.fp32.onnx", "calib.json", "calib.cache", "model.int8.onnx", "on_device.sh", "verify.json", "verify.md"} <= names
    assert not any(n.endswith(".engine") or n.endswith(".tmp") for n in names)
    script = (wd / "on_device.sh").read_text()
    assert "sk-edge build --from . --precision int8" in script
    # The device judges its engine by the host's gates.
    assert "--min-agreement 99 --max-top1-drop 0.5\n" in script
    assert "#   trtexec --onnx=model.int8.onnx --saveEngine=model.int8.engine --stronglyTyped" in script  # 10.x
    assert "#   trtexec --onnx=model.int8.onnx --saveEngine=model.int8.engine --memPoolSize" in script  # 11.x
    assert os.access(wd / "on_device.sh", os.X_OK)
    assert "  time " in out.stdout + out.stderr  # per-stage times in the verdict block

    # Nothing changed: the recorded verdict stands and says so; --force, or another threshold, judges again.
    before = (wd / "verify.json").read_bytes()
    same = run("build", "--precision", "int8", "--images", str(CALIB), "--num-images", "48", "-w", str(wd))
    assert same.returncode == 0 and "verdict reused: verify.json judged this very candidate" in same.stderr, same.stderr
    assert "as measured before (budget.json)" in same.stderr  # the accuracy budget is not measured again either
    assert (wd / "verify.json").read_bytes() == before and "== sk-edge build INT8: PASS" in same.stdout + same.stderr
    stricter = run("build", "--precision", "int8", "--images", str(CALIB), "--num-images", "48", "-w", str(wd),
                   "--max-top1-drop", "0.4")
    assert "verdict reused" not in stricter.stderr and "judging on 1000 images" in stricter.stderr

    # On the device: --from uses the work directory as it is (no export, no calibration).
    again = run("build", "--from", str(wd), "--precision", "int8", "--no-verify")
    # No TensorRT here: on the device that is a failed build, said in one line with the install hint.
    assert again.returncode == 1 and "sk-edge: error: no engine was built on this device: TensorRT is not installed" in again.stderr
    assert "building from" in again.stderr and "[1/4] export" not in again.stderr
    calib = json.loads((wd / "calib.json").read_text())
    assert calib["inputs"]["images"]["used"] == 48


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--opt-level", "9"], 2, "--opt-level must be 0 to 5"),
        (["--workspace", "1"], 2, "--workspace must be at least 16 MiB"),
        # -w wd beside --from: refused, since --from builds in its own folder (issue 21)
        (["--from", "nowhere"], 2, "--from nowhere builds in 'nowhere' itself; drop -w wd"),
        (["--precision", "int4"], 2, "Invalid value for '--precision'"),
        (["--dla-core", "0", "--hardware-compatible"], 2, "exclude each other"),
        (["--dla-core", "0", "--precision", "fp32"], 2, "the DLA computes in FP16 or INT8"),
    ],
)
def test_build_refuses_bad_input_in_one_line(tmp_path, args, code, message):
    out = run("build", *args, "-w", "wd", cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "wd").exists()


def test_the_first_run_works_outside_a_checkout(tmp_path):
    """`sk-edge build --precision int8` in any folder: the bundled calibration images are rendered from the package."""
    import filecmp

    out = run("build", "--precision", "int8", "--num-images", "64", "-w", "wd", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rendering the 512 SK-Digits calibration images into wd/calib_images" in out.stderr
    # The banner names what passed (issue 21): a graph on ONNX Runtime, no engine; the next step names the real folder.
    assert "== sk-edge build INT8: PASS (model.int8.onnx on ONNX Runtime; no engine built)" in out.stderr
    assert "sk-edge bench -w wd --min-speedup 2" in out.stderr and "-w DIR" not in out.stderr
    rendered = tmp_path / "wd" / "calib_images"
    # The very images calib_data/ holds in a checkout: the same calibration anywhere.
    same = filecmp.dircmp(rendered, CALIB)
    assert not same.left_only and not same.right_only and not same.diff_files and len(same.same_files) == 513
    again = run("build", "--precision", "int8", "--num-images", "64", "-w", "wd", cwd=tmp_path)
    assert again.returncode == 0 and "rendering" not in again.stderr and "is up to date" in again.stderr

    other = run("build", "--precision", "int8", "--model", "sknet26", "--no-verify", "-w", "other", cwd=tmp_path)
    assert other.returncode == 2 and "no --images given: pass --images DIR" in other.stderr


def test_a_build_of_a_user_model_always_ends_with_a_verdict(tmp_path, held_out):
    """No "verify skipped" with exit 0: nothing to judge on is refused before any work, --eval-images judges."""
    import torch

    from sk_edge.models.sknet import sknet26

    torch.save(sknet26(num_classes=10, base_width=32, stem_width=16, groups=8).state_dict(), tmp_path / "mine.pth")
    tiny = ["--model", "sknet26", "--model-arg", "base_width=32", "--model-arg", "stem_width=16", "--model-arg", "groups=8",
            "--num-classes", "10", "--input-size", "64", "--weights", str(tmp_path / "mine.pth")]
    out = run("build", "--precision", "fp16", *tiny, "-w", "wd", cwd=tmp_path)
    assert out.returncode == 2 and "nothing to judge this build of 'sknet26' on: pass --images DIR" in out.stderr
    assert "--eval-images DIR" in out.stderr and "--no-verify" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "wd").exists()  # refused before the export

    folder, labels = held_out
    judged = run("build", "--precision", "fp16", *tiny, "--eval-images", str(folder), "--eval-labels", str(labels),
                 "-w", "wd", cwd=tmp_path)
    # This "user model" is untrained: with labels its FP32 reference is at chance, and agreeing with it is no pass.
    assert judged.returncode == 1, judged.stderr
    assert "the FP32 reference itself is at chance" in judged.stderr and "verify skipped" not in judged.stderr
    assert "== sk-edge build FP16: FAIL (model.fp16.onnx on ONNX Runtime; no engine built)" in judged.stderr
    doc = json.loads((tmp_path / "wd" / "verify.json").read_text())
    assert doc["images"]["dir"] == str(folder) and doc["images"]["used"] == 200 and "accuracy_candidate" in doc["metrics"]

    unjudged = run("build", "--precision", "fp16", "--no-verify", "-w", "wd", cwd=tmp_path)
    assert unjudged.returncode == 0 and "verify" not in unjudged.stderr.replace("--no-verify", "")


def test_the_python_api_example_ends_with_a_verdict(tmp_path):
    """README "Python API": a training script that ends with sk_edge.build(...) and its verdict, run as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "train_and_build.py"
    out = subprocess.run([sys.executable, str(example), "--steps", "5", "--workdir", "work"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sk-edge build INT8: PASS" in out.stdout and "INT8 for 99." in out.stdout
    assert "preprocessing: 64x64, stretch" in out.stderr and "the checkpoint work-finetuned.pth: input_size, mean, std" in out.stderr
    verdict = json.loads((tmp_path / "work" / "verify.json").read_text())
    assert verdict["passed"] and verdict["reference_kind"] == "pytorch"


def field_default(options, name):
    """The default of a dataclass field, read here independently of the CLI's own reader."""
    import dataclasses

    f = {f.name: f for f in dataclasses.fields(options)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_python_and_the_command_line_share_every_default():
    import dataclasses

    from sk_edge import BuildRequest
    from sk_edge.cli import build

    fields = {f.name: f for f in dataclasses.fields(BuildRequest)}
    checked = 0
    for param in build.params:
        if param.name in ("model_args", "preprocess_file", "mean", "std", "resize", "crop_pct", "interpolation",
                          "channel_order", "exif_orientation", "help"):
            continue
        assert param.name in fields, f"--{param.name} has no BuildRequest field"  # the option's destination is the field
        default = field_default(BuildRequest, param.name)
        given = None if type(param.default).__name__ == "Sentinel" else param.default  # click >= 8.2: UNSET
        if param.is_flag and given is None:
            given = False
        expected = str(default) if param.name == "workdir" else default
        assert given == expected, (param.name, default, param.default)
        checked += 1
    assert checked >= 25
    # Every field the command line spells is an option of build: nothing of BuildRequest is Python-only by accident.
    from sk_edge.fields import spelled_fields

    options = {p.name for p in build.params}
    assert {name for name, _, _ in spelled_fields(BuildRequest)} <= options


def test_the_library_build_holds_its_work_directory(tmp_path):
    """sk_edge.build() takes the same lock as the command line: a second build of the same folder fails at once."""
    import subprocess
    import sys

    from sk_edge.workdir_lock import locked

    code = ("import sk_edge, sys\n"
            "try:\n"
            f"    sk_edge.build(workdir={str(tmp_path / 'wd')!r}, precision='fp32', verify=False)\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    with locked(tmp_path / "wd"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "SkEdgeError work directory" in out.stdout and "is in use by another sk-edge command" in out.stdout, out
    # In one process, the CLI's lock and the library's are one lock: a CLI build runs (tested throughout).
    with locked(tmp_path / "again") as held, locked(tmp_path / "again") as inner:
        assert held == inner


def test_every_stage_command_takes_its_defaults_from_the_options_it_fills():
    """export, calibrate, verify and bench: each option's default is the dataclass field's (one copy), as build's."""
    from sk_edge import cli
    from sk_edge.bench import BenchOptions
    from sk_edge.export.options import ExportOptions
    from sk_edge.quantize.options import CalibrationOptions
    from sk_edge.verify import VerifyOptions

    from sk_edge.fields import spelled_fields

    owners = {cli.export: ExportOptions, cli.calibrate: CalibrationOptions, cli.verify: VerifyOptions,
              cli.bench: BenchOptions}
    required = {cli.calibrate: ["--images", "imgs"]}  # not a field: where the images are
    for command, options in owners.items():
        # What the command parses from no arguments at all is each field's default, as the dataclass has it.
        parsed = command.make_context(command.name, required.get(command, [])).params
        spelled = spelled_fields(options)
        assert len(spelled) >= 4
        for name, default, _ in spelled:
            assert parsed[name] == default, (command.name, name, parsed[name], default)
    # And BuildRequest's own come from the options that own them.
    from sk_edge import BuildRequest
    from sk_edge.backends.tensorrt import BuildOptions

    from sk_edge.quantize.macs import DEFAULT_MAX_FLOAT_SHARE

    for name in ("workspace_mib", "opt_level", "target", "hardware_compatible"):
        assert field_default(BuildRequest, name) == field_default(BuildOptions, name)
    for name in ("min_agreement", "max_top1_drop"):
        assert field_default(BuildRequest, name) == field_default(VerifyOptions, name)
    assert field_default(BuildRequest, "max_float_share") == 100 * DEFAULT_MAX_FLOAT_SHARE  # percent, the library's share


def test_quantize_sensitivity_and_analyze_take_the_library_functions_defaults():
    """Commands that call one library function show that function's defaults, and build's --mixed is quantize's."""
    import inspect

    from sk_edge import BuildRequest, cli
    from sk_edge.analyze import analyze_selection
    from sk_edge.quantize import quantize_model
    from sk_edge.sensitivity import analyze_sensitivity

    owners = {cli.quantize: (quantize_model, {"mixed": "mixed"}),
              cli.sensitivity: (analyze_sensitivity, {"num_images": "count", "mixed": "mixed"}),
              cli.analyze: (analyze_selection, {"num_images": "count", "candidate": "candidate"})}
    for command, (function, names) in owners.items():
        params = {p.name: p for p in command.params}
        arguments = inspect.signature(function).parameters
        for option, argument in names.items():
            assert params[option].default == arguments[argument].default, (command.name, option)
    assert field_default(BuildRequest, "mixed") == inspect.signature(quantize_model).parameters["mixed"].default


def test_help_of_the_python_build_lists_every_field_with_its_default():
    """help(sk_edge.build) and an editor see BuildRequest's fields as keyword parameters, each with its default."""
    import dataclasses
    import inspect
    import pydoc

    import sk_edge
    from sk_edge import BuildRequest

    parameters = inspect.signature(sk_edge.build).parameters
    for f in dataclasses.fields(BuildRequest):
        assert parameters[f.name].kind is inspect.Parameter.KEYWORD_ONLY, f.name
        assert parameters[f.name].default == field_default(BuildRequest, f.name), f.name
    text = pydoc.render_doc(sk_edge.build, renderer=pydoc.plaintext)
    assert f"workspace_mib: 'int' = {field_default(BuildRequest, 'workspace_mib')}" in text, text[:600]
