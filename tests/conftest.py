"""Shared helpers: small real models with non-trivial BatchNorm statistics.

A freshly initialised BatchNorm (mean 0, var 1, gamma 1, beta 0) is the identity, so a
folding bug would go unnoticed on it. Every model under test gets random inference
statistics first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


# The bundled calibration images of the reference model.
CALIB = Path(__file__).resolve().parents[1] / "calib_data" / "skdigits"

# Our SKNet, shrunk so a test export takes about a second: the same units, fewer channels.
TINY_SKNET_ARGS = {"base_width": 32, "stem_width": 16, "groups": 8}


def randomize_batchnorm(module, seed: int = 0):
    import torch  # here, not at the top: the torch-free device venv loads this conftest too

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return module.eval()


def run_cli(*args: str, cwd=None, timeout: int = 900) -> subprocess.CompletedProcess:
    """``sk-edge ARGS`` as a user runs it: a separate process, text output captured."""
    return subprocess.run([sys.executable, "-m", "sk_edge", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def calibration_subset(folder: Path, count: int) -> Path:
    """``folder`` holding copies of the first ``count`` bundled calibration images."""
    from sk_edge.images import find_images

    folder.mkdir(parents=True)
    for path in find_images(CALIB)[:count]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """200 held-out SK-Digits images of the reference model, with their labels.csv."""
    from sk_edge.reference import digits

    folder = tmp_path_factory.mktemp("eval")
    labels = digits.write_split("eval", folder, 200)
    return folder, labels


def write_class_folders(folder: Path, count: int, split: str = "eval", seed: int = 7) -> Path:
    """``count`` SK-Digits images in torchvision's ImageFolder layout: folder/<digit>/<name>.png, no labels file.

    Digit names sort as their class index ("0" .. "9"), which is what ImageFolder assumes.
    """
    from PIL import Image

    from sk_edge.reference import digits

    for n, (image, label, _) in enumerate(digits.sample(split, count, seed=seed)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"img_{n:04d}.png")
    return folder


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """600 labelled SK-Digits images in class sub-folders: a user's own `--images DIR`."""
    return write_class_folders(tmp_path_factory.mktemp("mine"), 600)


@contextmanager
def small_tmpfs(path: Path, size: str, readonly: bool = False):
    """A real tmpfs of ``size`` mounted at ``path`` (CI runs as root); the test is skipped where none can be."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); the disk-full and read-only "
                    "cases need one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
