"""What this machine offers sk-edge: libraries, ONNX Runtime providers, TensorRT, GPU, Jetson.

Used by ``sk-edge info`` and by the stages that record where an artifact was made.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

from .versions import library_versions

# Jetson Linux (L4T) release -> JetPack, from NVIDIA's Jetson archive pages. Used only
# when the nvidia-jetpack package cannot be asked directly.
L4T_TO_JETPACK = {
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def tensorrt_status(target: str = "tensorrt") -> dict:
    """The version of TensorRT (``target`` "tensorrt") or TensorRT-RTX ("rtx") when its Python bindings import,
    or why they do not."""
    from .backends.tensorrt import TensorRTUnavailable, import_tensorrt

    try:
        module = import_tensorrt(target)
    except TensorRTUnavailable as exc:
        return {"installed": False, "detail": str(exc)}
    return {"installed": True, "version": getattr(module, "__version__", "unknown"), "module": module.__name__}


def cuda_device() -> dict | None:
    """Name, compute capability and memory of CUDA device 0 as torch sees it, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
    }


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, ...' -> '36.4.3'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def _jetpack_from_dpkg() -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.split("+")[0].strip() or None  # "6.2+b77" -> "6.2"


def jetson_info() -> dict | None:
    """Jetson model, L4T release and JetPack version, or None when not on a Jetson."""
    if not TEGRA_RELEASE.exists():
        return None
    l4t = parse_l4t_release(TEGRA_RELEASE.read_text(errors="replace"))
    model = None
    if DEVICE_TREE_MODEL.exists():
        model = DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode(errors="replace")
    jetpack = _jetpack_from_dpkg() or (L4T_TO_JETPACK.get(l4t) if l4t else None)
    return {"model": model, "l4t": l4t, "jetpack": jetpack}


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def describe() -> dict:
    """Everything ``sk-edge info`` reports, as a JSON-able dict."""
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "libraries": library_versions(),
        "onnxruntime_providers": onnxruntime_providers(),
        "tensorrt": tensorrt_status(),
        "tensorrt_rtx": tensorrt_status("rtx"),
        "cuda_device": cuda_device(),
        "jetson": jetson_info(),
    }
