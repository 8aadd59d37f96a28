"""``sk-edge bench --camera nv12:1920x1080``: where a camera frame's time goes, stage by stage.

The breakdown jetson-inference prints, for the Python runtime's path: a frame in the camera's pixel
format is converted and preprocessed on the CPU (:func:`sk_edge.runtime.frames_to_batch`, exactly as
the host judged the model), then inferred. On ONNX Runtime the inference is one call; on a TensorRT
engine it splits into host-to-device copy, engine execution and device-to-host copy, timed with CUDA
events on the engine's stream (:class:`sk_edge.runtime.Engine` with ``stage_times=True``). Every
stage gets p50 and p99 over the timed frames, and end to end is timed around the whole call.

Each (backend, precision) runs at batch 1 in its own process (:mod:`sk_edge.worker_process`), as bench's
other rows do.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError
from .pixels import FORMATS
from .worker_process import report, run_worker, worker_spec

MAX_SIDE = 16384  # larger than any camera sk-edge's users have; a typo (19200x1080) is caught, not allocated
STAGES = ("preprocess", "host_to_device", "inference", "device_to_host", "end_to_end")
_SPEC = re.compile(r"^([a-z0-9]+):(\d+)x(\d+)$")


@dataclass(frozen=True)
class CameraFrame:
    """A camera's frames: pixel format and size (``nv12:1920x1080``)."""

    fmt: str
    width: int
    height: int

    @classmethod
    def parse(cls, spec: str) -> "CameraFrame":
        match = _SPEC.match(spec.strip().lower())
        if not match:
            raise UsageError(f"--camera takes FORMAT:WIDTHxHEIGHT, e.g. nv12:1920x1080; got '{spec}'")
        frame = cls(match.group(1), int(match.group(2)), int(match.group(3)))
        if frame.fmt not in FORMATS:
            raise UsageError(f"--camera: pixel format '{frame.fmt}' is not one of {', '.join(FORMATS)}")
        if not (0 < frame.width <= MAX_SIDE and 0 < frame.height <= MAX_SIDE):
            raise UsageError(f"--camera: the frame's sides must be 1 to {MAX_SIDE} pixels, got {frame.width}x{frame.height}")
        if frame.fmt in ("nv12", "i420", "yuyv", "uyvy") and (
            frame.width % 2 or (frame.fmt in ("nv12", "i420") and frame.height % 2)
        ):
            raise UsageError(
                f"--camera: {frame.fmt} needs an even width{' and height' if frame.fmt in ('nv12', 'i420') else ''}, "
                f"got {frame.width}x{frame.height}"
            )
        return frame

    def buffer(self) -> np.ndarray:
        """A frame in this format's memory layout (as sk_edge.pixels takes it), filled with a fixed pattern."""
        shape = {
            "rgb": (self.height, self.width, 3),
            "bgr": (self.height, self.width, 3),
            "gray8": (self.height, self.width),
            "nv12": (self.height * 3 // 2, self.width),
            "i420": (self.height * 3 // 2, self.width),
            "yuyv": (self.height, self.width, 2),
            "uyvy": (self.height, self.width, 2),
        }.get(self.fmt, (self.height, self.width, 4))
        return np.random.default_rng(0).integers(16, 236, size=shape, dtype=np.uint8)


def measure_camera(config: dict, workdir: Path, camera: CameraFrame, warmup: int, iterations: int, threads: int | None) -> dict:
    """Per-stage latencies (ms) of ``iterations`` frames through one backend, in this process."""
    from .runtime import frames_to_batch
    from .workdir import load_export

    pre = load_export(workdir).preprocess
    frame = camera.buffer()
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    with contextlib.ExitStack() as held:
        infer, device_stages = _inference(config, threads, held)
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            x = frames_to_batch(frame, pre, camera.fmt)
            t1 = time.perf_counter()
            infer(x)
            t2 = time.perf_counter()
            if i < warmup:
                continue
            stages["preprocess"].append((t1 - t0) * 1e3)
            stages["end_to_end"].append((t2 - t0) * 1e3)
            for name, ms in (device_stages() or {"inference": (t2 - t1) * 1e3}).items():
                stages[name].append(ms)
    return {"stages_ms": {k: v for k, v in stages.items() if v}}


def _inference(config: dict, threads: int | None, held: contextlib.ExitStack) -> tuple[Callable, Callable]:
    """(one synchronous inference, the last call's device stages or None)."""
    if config["backend"] == "onnxruntime":
        from .backends.onnxruntime import OnnxRuntimeRunner

        runner = held.enter_context(OnnxRuntimeRunner(config["path"], threads=threads, dynamic_batch=True))
        return runner, lambda: None
    from .runtime import Engine

    engine = held.enter_context(Engine(config["path"], stage_times=True))
    return engine, lambda: engine.last_stages_ms


def camera_rows(
    configs: list,
    workdir: Path,
    camera: CameraFrame,
    warmup: int,
    iterations: int,
    threads: int | None,
    log: Callable[[str], None],
) -> list[dict]:
    """The camera path of every ONNX Runtime graph and TensorRT engine among ``configs``, at batch 1."""
    seen, rows = set(), []
    for config in configs:
        key = (config.backend, config.precision, config.path)
        if config.backend == "torch" or key in seen:
            continue
        seen.add(key)
        spec = {
            "config": {**asdict(config), "batch": 1},
            "workdir": str(workdir),
            "camera": asdict(camera),
            "warmup": warmup,
            "iterations": iterations,
            "threads": threads,
        }
        result = run_worker("sk_edge.camera_bench", spec)
        row: dict = {"backend": config.backend, "precision": config.precision, "device": config.device}
        if "error" in result:
            row["error"] = result["error"]
            log(f"  camera path of {config.backend} {config.precision} failed: {row['error']}")
        else:
            measured = result["stages_ms"]
            row["stages"] = {
                name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))}
                for name, v in measured.items()
            }
        rows.append(row)
    return rows


def camera_markdown(camera: dict, rows: list[dict]) -> list[str]:
    """bench.md's camera-path table: p50 / p99 ms per stage."""
    if not rows:
        return ["", "Camera path: not timed (no ONNX Runtime graph or TensorRT engine among the configurations)."]
    lines = [
        "",
        f"Camera path, one {camera['fmt']} {camera['width']}x{camera['height']} frame at a time "
        "(preprocessing on the CPU; device stages by CUDA events), p50 / p99 ms:",
        "",
        "| backend | precision | " + " | ".join(s.replace("_", " ") for s in STAGES) + " |",
        "| --- | --- |" + " ---: |" * len(STAGES),
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['precision']} | failed: {r['error']} |")
            continue
        cells = [f"{r['stages'][s]['p50_ms']:.2f} / {r['stages'][s]['p99_ms']:.2f}" if s in r["stages"] else "" for s in STAGES]
        lines.append(f"| {r['backend']} | {r['precision']} | " + " | ".join(cells) + " |")
    return lines


def _worker(spec: dict) -> int:
    report(
        measure_camera(
            spec["config"],
            Path(spec["workdir"]),
            CameraFrame(**spec["camera"]),
            spec["warmup"],
            spec["iterations"],
            spec["threads"],
        )
    )
    return 0


if __name__ == "__main__" and (_spec := worker_spec(sys.argv)) is not None:
    sys.exit(_worker(_spec))
