"""The documented blocks, run as written (Polygraphy's tests/test_examples.py does this for its examples).

Every ``bash`` and ``python`` block of README.md and docs/ is either run here, in a fresh folder holding what
its page says the user has (a checkpoint, class folders, a work directory), or named in ``NOT_RUN`` with the
reason it cannot run on a machine without a GPU; ``test_every_block_is_run_or_says_why_not`` fails on a block
that is neither, so a new block is run or explained. Within a run block, a line that needs a device (``scp``,
``ssh jetson``) or installs software is skipped by name, with its reason, and every other line runs.
tests/test_docs.py parses every documented command against the CLI; this file runs the blocks.

The fixtures are the user's files, made the way a user has them: a timm checkpoint in safetensors (randomly
initialised: training one costs minutes, and the verdict on it must then be the refusal of a model at chance),
SK-Digits images in class folders, a checkout's calib_data/.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import write_class_folders
from test_docs import ROOT, blocks

KINDS = ("bash", "sh", "shell", "python")
BENCHMARK = "a benchmark (minutes to an hour of measurement; its results are in benchmarks/results/)"
NEEDS_GPU = "needs TensorRT and an NVIDIA GPU; the same calls run on the TensorRT 10.13 stand-in in test_runtime_device_arrays.py"
ON_A_JETSON = "copies to and runs on a Jetson"

# (page, the block's first line) -> why the block is not run here.
NOT_RUN = {
    ("README.md", "make run    # .venv with sk-edge, then `sk-edge build --precision int8` on the bundled reference model and its"):
        "the two set-up commands themselves: CI runs `make test` (.ci/run), and its device job runs the "
        "`sk-edge build --precision int8` that `make run` runs",
    ("docs/accuracy.md", ".venv/bin/python benchmarks/precision_study.py     # writes benchmarks/results/precision_study.json"):
        BENCHMARK,
    ("docs/accuracy.md", "python3.11 -m venv /tmp/venv-mo && /tmp/venv-mo/bin/pip install torch==2.13.0 'nvidia-modelopt[onnx]' pillow click"):
        "installs NVIDIA ModelOpt in a second venv, for a benchmark",
    ("docs/guides/runtime.md", "from sk_edge.runtime import Engine"): NEEDS_GPU,
    ("docs/guides/runtime.md", "import torch"): NEEDS_GPU,
    ("docs/guides/runtime.md", "# frames: uint8 CUDA tensors of shape (1080 * 3 // 2, 1920), NV12 from a decoder, on cuda:0"):
        "needs TensorRT, an NVIDIA GPU and cuda-python; the same calls run on the TensorRT 10.13 stand-in in "
        "test_frame_kernels.py, with the kernels' work done by the numpy reference",
    ("docs/guides/runtime.md", "pending = engine.enqueue(batch)       # numpy: staged into pinned memory before this returns"):
        NEEDS_GPU,
    ("docs/guides/runtime.md", "sudo apt install cmake nlohmann-json3-dev libgtest-dev        # libopencv-dev for the example, if absent"):
        "a Jetson's paths (aarch64 TensorRT headers, SM 87) and a camera; `make cpp-test` builds and tests this CMake "
        "project here against four TensorRT header releases and the real TensorRT-RTX library",
    ("docs/results.md", ".venv/bin/python benchmarks/quantization_peers.py --modelopt-python /tmp/venv-mo/bin/python"): BENCHMARK,
    ("docs/results.md", ".venv/bin/python benchmarks/calibration.py --tools sk-edge,onnxruntime        # writes benchmarks/results/calibration.json"):
        BENCHMARK,
    ("docs/results.md", ".venv/bin/python benchmarks/export_speed.py            # writes benchmarks/results/export_speed.json"):
        BENCHMARK,
    ("docs/results.md", ".venv/bin/python benchmarks/exporters.py               # writes benchmarks/results/exporters.json"):
        BENCHMARK,
}
RUN: dict[tuple[str, str], str] = {}  # (page, first line) -> the test that runs the block


@dataclass(frozen=True)
class Block:
    page: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


@functools.cache
def documented_blocks() -> tuple[Block, ...]:
    return tuple(Block(page, text) for page, _, text in blocks(KINDS))


Key = tuple[str, str]  # (page, the block's first line): how a block is named here


def documents(key: Key) -> Callable:
    """Registers the decorated test as the one that runs the block ``key`` names."""
    def register(test: Callable) -> Callable:
        RUN[key] = test.__name__
        return test
    return register


def block(key: Key) -> Block:
    page, first_line = key
    found = [b for b in documented_blocks() if b.page == page and b.first_line == first_line]
    assert len(found) == 1, f"{page}: {len(found)} blocks begin with {first_line!r}"
    return found[0]


def environment() -> dict[str, str]:
    """The environment a user of this venv has: its ``sk-edge`` and ``python`` first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def shell_lines(text: str) -> list[str]:
    """The commands of a shell block, one per line once continuations are joined; comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_shell(key: Key, cwd: Path, skip: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run the block line by line in ``cwd`` (each line through bash, as pasted); a line that starts with a key of
    ``skip`` is not run (the value says why), and every key must skip at least one line."""
    skip = skip or {}
    ran, skipped = [], set()
    for line in shell_lines(block(key).text):
        reason = next((k for k in skip if line.lstrip().startswith(k)), None)
        if reason is not None:
            skipped.add(reason)
            continue
        ran.append(subprocess.run(["bash", "-c", line], cwd=cwd, env=environment(), capture_output=True, text=True,
                                  timeout=600))
    assert skipped == set(skip), f"{key[0]}: no line starts with {set(skip) - skipped}"
    return ran


def run_python(key: Key, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "documented_block.py"
    script.write_text(block(key).text)
    return subprocess.run([sys.executable, script.name], cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=600)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_every_block_is_run_or_says_why_not():
    found = {(b.page, b.first_line) for b in documented_blocks()}
    assert len(found) == len(documented_blocks()), "two blocks of one page begin alike: a test could not tell them apart"
    assert not RUN.keys() & NOT_RUN.keys()
    neither = found - RUN.keys() - NOT_RUN.keys()
    assert not neither, f"documented blocks neither run by a test here nor in NOT_RUN with a reason: {sorted(neither)}"
    stale = (RUN.keys() | NOT_RUN.keys()) - found
    assert not stale, f"no such block any more (its page changed; update this file): {sorted(stale)}"


SCRIPT = re.compile(r"\b((?:benchmarks|examples)/[\w/]+\.py)\b")


@pytest.mark.parametrize("key", sorted(NOT_RUN), ids=[f"{p}:{f[:30]}" for p, f in sorted(NOT_RUN)])
def test_a_block_not_run_here_names_scripts_that_exist_and_says_why(key):
    # What can be checked without running it: a renamed or removed script would leave the block pointing nowhere.
    named = SCRIPT.findall(block(key).text)
    missing = [script for script in named if not (ROOT / script).is_file()]
    assert not missing, f"{key[0]}: the block runs {missing}, which do not exist"
    pytest.skip(f"{key[0]}: not run here: {NOT_RUN[key]}" + (f" (its scripts exist: {', '.join(named)})" if named else ""))


def test_the_script_check_can_fail():
    assert SCRIPT.findall(".venv/bin/python benchmarks/calibration.py --tools x; python examples/nope.py") == [
        "benchmarks/calibration.py", "examples/nope.py"]
    assert not (ROOT / "examples/nope.py").exists()


# --- the README's quickstart: a fine-tuned timm skresnet18, class folders, its preprocessing, INT8

@pytest.fixture
def quickstart(tmp_path) -> Path:
    """What the quickstart's user has: ft.safetensors (timm skresnet18, 10 classes), data/train and data/val."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("skresnet18", num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "ft.safetensors")
    write_class_folders(tmp_path / "data" / "train", 40, split="calib")
    write_class_folders(tmp_path / "data" / "val", 100, split="eval")
    return tmp_path


AT_CHANCE = "the FP32 reference itself is at chance"




# The blocks run here, each named once: its test registers and runs it by this key.
README_COMMAND: Key = ('README.md', 'sk-edge build --model timm:skresnet18 --weights ft.safetensors --num-classes 10 \\')
README_PYTHON: Key = ('README.md', 'import sk_edge')
EXPORTS: Key = ('docs/guides/your-model.md', 'sk-edge export --model sknet50 --weights finetuned.pth --num-classes 10 -w work50')
CUSTOM_TIMM: Key = ('docs/guides/your-model.md', 'from timm.models.resnet import ResNet')
PYTHON_API: Key = ('docs/guides/your-model.md', 'import torch')
POOR_CALIBRATION: Key = ('docs/accuracy.md', 'sk-edge export -w poor')
REFERENCE_IMAGES: Key = ('docs/accuracy.md', '.venv/bin/python benchmarks/train_reference.py     # retrains it (deterministic); writes results/train_reference.json')
DESKTOP_RTX: Key = ('docs/guides/desktop-rtx.md', "pip install 'sk-edge[rtx]'        # NVIDIA's tensorrt-rtx-cu13-bindings + -libs 1.7.1.116 (CUDA 12 drivers: the -cu12 twins)")
CAMERA_BENCH: Key = ('docs/results.md', 'sk-edge bench -w workdir --backends onnxruntime --precisions fp32 --iterations 10 --repeats 1 --camera nv12:1920x1080')


class TestReadmeAndYourModel:
    """The README's quickstart and docs/guides/your-model.md (one class: pytest-xdist's loadscope gives it a worker)."""

    @documents(README_COMMAND)
    @documents(README_PYTHON)
    def test_the_readme_quickstart_runs_to_its_verdict_from_the_cli_and_from_python(self, quickstart):
        ran = run_shell(README_COMMAND, quickstart, skip={"scp ": ON_A_JETSON, "ssh jetson": ON_A_JETSON})
        assert len(ran) == 1
        # An untrained checkpoint: every stage runs, and the verdict refuses it rather than passing agreement with noise.
        assert ran[0].returncode == 1, output(ran[0])
        assert "== sk-edge build INT8: FAIL" in output(ran[0]) and AT_CHANCE in output(ran[0])
        assert "caution" not in output(ran[0])  # the preprocessing is the command's, none of it defaulted
        assert (quickstart / "work" / "model.int8.onnx").is_file() and (quickstart / "work" / "on_device.sh").is_file()
        # The same build from Python, as the page puts it beside the command: same work directory, same verdict.
        proc = run_python(README_PYTHON, quickstart)
        assert proc.returncode == 1 and "not safe to ship: " in proc.stderr and AT_CHANCE in proc.stderr, output(proc)
        assert "== sk-edge build INT8: FAIL" in proc.stdout

    @documents(EXPORTS)
    def test_your_model_exports(self, tmp_path):
        import timm
        import torch
        from safetensors.torch import save_file

        from sk_edge.models import build_model

        torch.save({"state_dict": build_model("sknet50", num_classes=10).module.state_dict()}, tmp_path / "finetuned.pth")
        save_file(timm.create_model("skresnet18", num_classes=37).state_dict(), tmp_path / "skresnet18_ft.safetensors")
        ran = run_shell(EXPORTS, tmp_path)
        assert [p.returncode for p in ran] == [0, 0, 0], [output(p)[-2000:] for p in ran]
        for workdir in ("work50", "work18", "work26"):
            assert (tmp_path / workdir / "model.fp32.onnx").is_file()


    @documents(CUSTOM_TIMM)
    def test_your_model_custom_timm_configuration_exports(self, tmp_path):
        proc = run_python(CUSTOM_TIMM, tmp_path)
        assert proc.returncode == 0, output(proc)
        assert (tmp_path / "work" / "model.fp32.onnx").is_file() and (tmp_path / "work" / "export.json").is_file()


    @documents(PYTHON_API)
    def test_your_model_python_api_builds_and_passes(self, tmp_path):
        proc = run_python(PYTHON_API, tmp_path)
        assert proc.returncode == 0, output(proc)
        assert "== sk-edge build INT8: PASS" in proc.stdout


# --- docs/accuracy.md

@pytest.fixture
def checkout_root(tmp_path) -> Path:
    """A folder that has what a checkout's root has for these blocks: calib_data/ and the .venv."""
    (tmp_path / "calib_data").symlink_to(ROOT / "calib_data")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


class TestAccuracyRtxAndBench:
    """docs/accuracy.md, docs/guides/desktop-rtx.md and docs/results.md (the other worker)."""

    @documents(POOR_CALIBRATION)
    def test_a_poor_calibration_fits_the_budget_and_still_fails_verify(self, checkout_root):
        ran = run_shell(POOR_CALIBRATION, checkout_root)
        assert [p.returncode for p in ran] == [0, 0, 0, 1], [output(p)[-2000:] for p in ran]
        # As the page says: six layers bring the drop to the budget, and verify still refuses the agreement.
        assert "kept /stages/stages.0/stages.0.0/Add in floating point: top-1 drop 0.50 points" in output(ran[3])
        assert "verify FAILED: top-1 agreement" in output(ran[3])


    @documents(REFERENCE_IMAGES)
    def test_the_evaluation_images_render(self, checkout_root):
        ran = run_shell(
            REFERENCE_IMAGES,
            checkout_root, skip={".venv/bin/python benchmarks/train_reference.py": BENCHMARK})
        assert [p.returncode for p in ran] == [0], output(ran[0])
        assert len(list((checkout_root / "some" / "dir").glob("*.png"))) == 1000
        assert (checkout_root / "some" / "dir" / "labels.csv").is_file()


    # docs/guides/desktop-rtx.md: NVIDIA's real TensorRT-RTX builder, on this CPU

    @documents(DESKTOP_RTX)
    def test_the_desktop_rtx_builds(self, tmp_path):
        # No skip: the dev set-up installs the rtx extra (NVIDIA's wheels), as for tests/test_tensorrt_rtx.py.
        ran = run_shell(
            DESKTOP_RTX,
            tmp_path, skip={"pip install": "the test environment has the rtx extra (make test's dev set-up)"})
        assert [p.returncode for p in ran] == [0, 0], [output(p)[-2000:] for p in ran]
        assert "model.int8.rtx.engine built, not run here" in output(ran[0])
        assert "for compute capabilities 86, 89, 120" in output(ran[1])


    # docs/results.md: the camera path of bench

    @documents(CAMERA_BENCH)
    def test_the_camera_path_bench(self, tmp_path):
        subprocess.run(["sk-edge", "export", "-w", "workdir"], cwd=tmp_path, env=environment(), check=True,
                       capture_output=True)
        ran = run_shell(CAMERA_BENCH, tmp_path)
        assert [p.returncode for p in ran] == [0], output(ran[0])
        assert "nv12" in (tmp_path / "workdir" / "bench.md").read_text()
