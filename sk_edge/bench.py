"""``sk-edge bench``: latency, throughput and memory of every backend on the same model.

Each (backend, precision, batch) runs in its own Python process, so its peak RSS is its
own and one backend's allocations or threads never slow the next. Timing follows the
usual rules: warm-up runs first; inputs and outputs are allocated before the timed loop
(ONNX Runtime runs through an I/O binding with its output bound to a preallocated array;
the TensorRT runtime reuses its pinned buffers); CPU backends are timed with
``time.perf_counter`` around each synchronous call, PyTorch on CUDA with CUDA events after
a synchronisation. The speed-up column is relative to the FP32 PyTorch reference on the
CPU at the same batch. On a Jetson, ``tegrastats`` is sampled during each run for the
board's input power (images per second per watt).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__, artifacts, plots
from .errors import SkEdgeError, UsageError
from .fields import option
from .versions import torch_installed
from .worker_process import report, run_worker, worker_spec
from .workdir import GRAPH_NAMES, built_engines, load_export

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_ITERATIONS = 100
PRECISIONS = ("fp32", "fp16", "int8")
BENCH_JSON, BENCH_MD, BENCH_PNG = "bench.json", "bench.md", "bench.png"


class BenchFailed(SkEdgeError):
    """A backend the user asked for produced no measurement; bench.json/.md are written all the same."""


@dataclass
class BenchOptions:
    """What ``sk-edge bench`` measures and how; the command's options are made from these fields.

    Attributes:
        backends: the backends to run, each of which must produce a row or bench fails; empty: every
            installed one, and what is absent is skipped and said.
        precisions, batches: the graphs and engines to run, at these batch sizes.
        warmup: untimed runs first.
        iterations, duration: timed runs, as a count or as seconds (neither: DEFAULT_ITERATIONS runs).
        threads: intra-op threads of the CPU backends (None: the library's).
        min_speedup: the latency verdict: the candidate must be this many times faster than PyTorch FP32
            on the same device and batch, by medians, or bench fails.
        repeats: each configuration is measured in this many rounds, the configurations interleaved
            (round 1 of every one, then round 2...), so that a load spike hits every candidate, not one;
            fewer rounds when the iterations cannot give each round 5.
        camera: a camera frame, ``FORMAT:WIDTHxHEIGHT`` (:class:`~sk_edge.camera_bench.CameraFrame`): also time
            each graph's and engine's camera path stage by stage.
        skip_absent: a named backend with nothing to run is skipped, not a failure (the build summary's bench).
    """

    backends: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Comma-separated: torch, onnxruntime, tensorrt [default: every one installed; what is absent is skipped "
            "and said]. A backend named here that produces no result fails the command (exit 1).",
            kind="csv",
        ),
    )
    precisions: tuple[str, ...] = field(default=PRECISIONS, metadata=option("Comma-separated.", kind="csv"))
    batches: tuple[int, ...] = field(
        default=(1,), metadata=option("Comma-separated batch sizes, e.g. 1,8.", flag="--batch", kind="int-csv")
    )
    warmup: int = field(default=10, metadata=option("Untimed runs first.", kind="int", low=0))
    iterations: int | None = field(
        default=None, metadata=option(f"Timed runs, at least 5 [default: {DEFAULT_ITERATIONS}, unless --duration].", kind="int")
    )
    duration: float | None = field(
        default=None,
        metadata=option(
            "Time runs for S seconds instead of a count.", kind="float", low=0, low_open=True, finite=True, metavar="S"
        ),
    )
    threads: int | None = field(
        default=None, metadata=option("Intra-op threads of the CPU backends [default: the library's].", kind="int", low=1)
    )
    min_speedup: float | None = field(
        default=None,
        metadata=option(
            "Latency verdict: exit 1 unless the candidate (the engine, else the lowest-precision graph on ONNX Runtime) is "
            "X times faster than PyTorch FP32 on the same device (CUDA for an engine) and batch, by medians.",
            kind="float",
            low=0,
            low_open=True,
            finite=True,
            metavar="X",
        ),
    )
    repeats: int = field(
        default=3,
        metadata=option(
            "Rounds per configuration, interleaved across configurations (fewer when --iterations cannot give each round 5).",
            kind="int",
            low=1,
        ),
    )
    camera: str | None = field(
        default=None,
        metadata=option(
            "Also time the camera path of each graph and engine, one frame of this pixel format and size at a time: "
            "preprocessing, host-to-device, inference, device-to-host, end to end (p50/p99), e.g. nv12:1920x1080.",
            metavar="FORMAT:WxH",
        ),
    )
    skip_absent: bool = False

    @property
    def candidates(self) -> tuple[str, ...]:
        """The backends looked for."""
        return self.backends or BACKENDS

    @property
    def required(self) -> tuple[str, ...]:
        """The backends that must each produce a row."""
        return () if self.skip_absent else self.backends

    @property
    def timed_iterations(self) -> int | None:
        """The count of timed runs (None: timed by ``duration``)."""
        if self.iterations is not None:
            return self.iterations
        return None if self.duration is not None else DEFAULT_ITERATIONS

    def rounds(self) -> int:
        iterations = self.timed_iterations
        if iterations is None:
            return self.repeats
        return max(1, min(self.repeats, iterations // 5))

    def validate(self) -> None:
        for name, values, allowed in (("--backends", self.candidates, BACKENDS), ("--precisions", self.precisions, PRECISIONS)):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise UsageError(f"{name} takes a comma-separated list of {', '.join(allowed)}; got '{','.join(values)}'")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"--batch takes positive sizes, got {self.batches}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.iterations is not None and self.duration is not None:
            raise UsageError("pass either --iterations N or --duration S, not both")
        if self.iterations is not None and self.iterations < 5:
            raise UsageError(f"--iterations must be at least 5 for percentiles to mean anything, got {self.iterations}")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration must be positive, got {self.duration}")
        if self.min_speedup is not None and not (self.min_speedup > 0 and np.isfinite(self.min_speedup)):
            raise UsageError(f"--min-speedup must be a positive number, got {self.min_speedup}")
        if self.repeats < 1:
            raise UsageError(f"--repeats must be at least 1, got {self.repeats}")
        if self.camera is not None:
            from .camera_bench import CameraFrame

            CameraFrame.parse(self.camera)


@dataclass
class Config:
    backend: str
    precision: str
    batch: int
    device: str  # cpu, cuda, gpu
    path: str | None = None  # graph or engine

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.device} b{self.batch}"

    @property
    def artifact(self) -> Path:
        """The graph or engine this configuration runs (every backend but PyTorch names one)."""
        if self.path is None:
            raise ValueError(f"{self.label} names no graph or engine")
        return Path(self.path)


def engine_cannot_run(engine) -> str | None:
    """Why this machine cannot run the engine its checked sidecar describes: its runtime or its GPU is not here."""
    from .backends.tensorrt import TensorRTUnavailable, engine_mismatch, gpu_identity, import_tensorrt

    try:
        trt = import_tensorrt(engine.target)
    except TensorRTUnavailable as exc:
        return str(exc)
    return engine_mismatch(engine, trt.__version__, gpu_identity())


def plan_configs(workdir: Path, options: BenchOptions, log: Callable[[str], None]) -> list[Config]:
    """Every (backend, precision, batch) that can run here; what cannot is said once."""
    export = load_export(workdir)
    max_batch = export.max_batch
    from .workdir import load_engine, load_graph

    configs = []
    unrunnable = set()
    # A stale or foreign graph or engine is refused, never timed as if it were the current one.
    for p in options.precisions:
        if "onnxruntime" in options.candidates and (workdir / GRAPH_NAMES[p]).is_file():
            load_graph(workdir, p)
        for _, name in built_engines(workdir, (p,)) if "tensorrt" in options.candidates else ():
            why = engine_cannot_run(load_engine(workdir, p, name=name))
            if why and not options.required:
                # An engine this machine cannot run (a TensorRT-RTX engine built on a CPU-only host): said, not timed.
                log(f"{name} not timed: it cannot run here ({why})")
                unrunnable.add(name)
    for batch in options.batches:
        if "torch" in options.candidates and torch_installed():
            configs.append(Config("torch", "fp32", batch, "cpu"))
            if _torch_cuda():
                configs.append(Config("torch", "fp32", batch, "cuda"))
        if "onnxruntime" in options.candidates:
            for p in options.precisions:
                if (workdir / GRAPH_NAMES[p]).is_file():
                    configs.append(Config("onnxruntime", p, batch, "cpu", str(workdir / GRAPH_NAMES[p])))
        if "tensorrt" in options.candidates:
            for p in options.precisions:
                for _, name in built_engines(workdir, (p,)):
                    if batch <= max_batch and name not in unrunnable:
                        configs.append(Config("tensorrt", p, batch, "dla" if ".dla." in name else "gpu", str(workdir / name)))
    if "onnxruntime" in options.candidates:
        missing = [p for p in options.precisions if not (workdir / GRAPH_NAMES[p]).is_file()]
        if missing:
            log(
                f"no {', '.join(GRAPH_NAMES[p] for p in missing)} in '{workdir}': not benchmarked (sk-edge build --precision P makes them)"
            )
    if "tensorrt" in options.candidates:
        if not built_engines(workdir, options.precisions):
            log(f"no TensorRT engine in '{workdir}': TensorRT not benchmarked (build one on the device: on_device.sh)")
    return configs


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --- one configuration, in its own process ------------------------------------------------


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    except ImportError:
        return None


def _runner(config: Config, workdir: Path, x: np.ndarray, threads: int | None, held: contextlib.ExitStack):
    """(callable that runs one batch synchronously, timer kind, gpu-memory probe); what it opens, ``held`` closes."""
    if config.backend == "torch":
        import torch

        from .backends.torch import TorchRunner
        from .verify import reference_runner

        if threads:
            torch.set_num_threads(threads)
        ref = held.enter_context(reference_runner(workdir, load_export(workdir))[0])
        if not isinstance(ref, TorchRunner):  # reference_runner gives the FP32 graph only where torch is absent
            raise SkEdgeError("the torch backend needs PyTorch, which is not installed here; pass --backends without torch")
        module = ref.module.to(config.device)
        xt = torch.from_numpy(x).to(config.device)

        @torch.inference_mode()
        def run():
            return module(xt)

        if config.device == "cuda":
            return run, "cuda-events", lambda: torch.cuda.max_memory_allocated() / 2**20
        return run, "perf_counter", lambda: None
    if config.backend == "onnxruntime":
        from .backends.onnxruntime import OnnxRuntimeRunner

        session = held.enter_context(OnnxRuntimeRunner(config.artifact, threads=threads, dynamic_batch=True)).session
        out_meta = session.get_outputs()[0]
        probe = session.run(None, {session.get_inputs()[0].name: x})[0]
        out = np.empty_like(probe)
        binding = session.io_binding()
        binding.bind_cpu_input(session.get_inputs()[0].name, x)
        binding.bind_output(out_meta.name, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)

        def run():
            session.run_with_iobinding(binding)
            return out

        return run, "perf_counter", lambda: None
    from .runtime import Engine

    engine = held.enter_context(Engine(config.artifact))  # its GPU buffers and CUDA context go back after the run
    return (lambda: engine(x)), "perf_counter (synchronous: copy in, execute, copy out)", lambda: None


def measure(
    config: Config, workdir: Path, warmup: int, iterations: int | None, duration: float | None, threads: int | None
) -> dict:
    export = load_export(workdir)
    shape = (config.batch, *export.input_shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with contextlib.ExitStack() as held:
        run, clock, gpu_mem = _runner(config, workdir, x, threads, held)
        return _timed_runs(run, clock, gpu_mem, warmup, iterations, duration)


def _timed_runs(
    run: Callable[[], object],
    clock: str,
    gpu_mem: Callable[[], float | None],
    warmup: int,
    iterations: int | None,
    duration: float | None,
) -> dict:
    power = PowerSampler() if PowerSampler.available() else None
    for _ in range(warmup):
        run()
    times: list[float] = []
    if clock == "cuda-events":
        import torch

        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed():
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:

        def timed():
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) * 1e3

    if power:
        power.start()
    t_end = time.perf_counter() + (duration or 0.0)
    while (len(times) < iterations) if iterations else (time.perf_counter() < t_end or len(times) < 5):
        times.append(timed())
    watts = power.stop() if power else None
    return {"latencies_ms": times, "clock": clock, "peak_rss_mb": _peak_rss_mb(), "gpu_memory_mb": gpu_mem(), "watts": watts}


def _worker(spec: dict) -> int:
    config = Config(**spec["config"])
    report(measure(config, Path(spec["workdir"]), spec["warmup"], spec["iterations"], spec["duration"], spec["threads"]))
    return 0


def run_config(config: Config, workdir: Path, options: BenchOptions, rounds: int = 1) -> dict:
    """One round of ``config`` in its own process: 1/``rounds`` of the iterations (or of the duration)."""
    iterations = -(-options.timed_iterations // rounds) if options.timed_iterations else None
    duration = options.duration / rounds if options.duration else None
    spec = {
        "config": asdict(config),
        "workdir": str(workdir),
        "warmup": options.warmup,
        "iterations": iterations,
        "duration": duration,
        "threads": options.threads,
    }
    return run_worker("sk_edge.bench", spec)


# --- verdicts ---------------------------------------------------------------------------

PRECISION_ORDER = ("int8", "fp16", "fp32")  # the candidate is the lowest precision measured


def _baseline(ok: list[dict], backend: str, device: str, precision: str, batch: int) -> dict | None:
    """PyTorch FP32 on ``device`` at ``batch``; where PyTorch is absent (a torch-free Jetson), the FP32 graph on the
    candidate's own backend (the FP32 engine, or the FP32 graph on ONNX Runtime), named as such."""
    torch_row = next(
        (
            b
            for b in ok
            if b["config"]["backend"] == "torch" and b["config"]["device"] == device and b["config"]["batch"] == batch
        ),
        None,
    )
    if torch_row is not None or torch_installed() or precision == "fp32":
        return torch_row
    return next(
        (
            b
            for b in ok
            if b["config"]["backend"] == backend and b["config"]["precision"] == "fp32" and b["config"]["batch"] == batch
        ),
        None,
    )


def _baseline_name(row: dict, device: str) -> str:
    if row["config"]["backend"] == "torch":
        return f"PyTorch FP32 on {device.upper()}"
    if row["config"]["backend"] == "tensorrt":
        return "the FP32 graph built as a TensorRT engine (PyTorch is not installed here)"
    return "the FP32 graph on ONNX Runtime (PyTorch is not installed here)"


def _no_baseline_fix(backend: str, device: str) -> str:
    if not torch_installed():
        if backend == "tensorrt":
            return (
                " (PyTorch is not installed here: `sk-edge build --from DIR --precision fp32` builds the FP32 engine "
                "to compare with)"
            )
        return " (PyTorch is not installed here, and the FP32 graph was not timed: include fp32 in --precisions)"
    if device == "cuda" and not _torch_cuda():
        return " (PyTorch's CUDA build is not installed here)"
    return " (PyTorch FP32 was not timed: include torch in --backends)"


def _comparison(row: dict, base: dict | None, device: str) -> dict:
    """One batch's candidate against its FP32 baseline, by the medians (no speed-up without a baseline)."""
    candidate_ms = row["stats"]["p50_ms"]
    baseline_ms = base["stats"]["p50_ms"] if base else None
    return {
        "batch": row["config"]["batch"],
        "device": row["config"]["device"],
        "candidate_ms": candidate_ms,
        "baseline_ms": baseline_ms,
        "baseline": _baseline_name(base, device) if base else None,
        "speedup": baseline_ms / candidate_ms if baseline_ms is not None else None,
    }


def speedup_verdict(results: list[dict], min_speedup: float | None) -> dict | None:
    """The candidate (the engine, or the graph when no engine ran) against FP32 on the same device and batch.

    The candidate is the lowest precision measured on TensorRT, else on ONNX Runtime; its
    baseline is PyTorch FP32 on CUDA for an engine, on the CPU for a graph on ONNX Runtime, and
    without PyTorch the FP32 graph on the candidate's backend (:func:`_baseline`).
    None when nothing was measured that could be a candidate.
    """
    ok = [r for r in results if "stats" in r]
    for backend, device in (("tensorrt", "cuda"), ("onnxruntime", "cpu")):  # noqa: B007 - used after the loop
        rows = [r for r in ok if r["config"]["backend"] == backend]
        if rows:
            break
    else:
        return None
    precision = next(p for p in PRECISION_ORDER if any(r["config"]["precision"] == p for r in rows))
    rows = [r for r in rows if r["config"]["precision"] == precision]
    what = f"{'TensorRT' if backend == 'tensorrt' else 'ONNX Runtime'} {precision.upper()}"
    bases = [_baseline(ok, backend, device, precision, r["config"]["batch"]) for r in rows]
    comparisons = [_comparison(r, base, device) for r, base in zip(rows, bases)]
    missing = [c["batch"] for c in comparisons if c["speedup"] is None]
    if missing:
        timed = "; ".join(f"{c['candidate_ms']:.2f} ms at batch {c['batch']}" for c in comparisons)
        fix = _no_baseline_fix(backend, device)
        line = f"{what}: {timed}; no FP32 measurement on {device.upper()} at batch {', '.join(map(str, missing))} to compare it with{fix}"
        passed = min_speedup is None
    else:
        parts = [
            f"{c['speedup']:.2f}x at batch {c['batch']} ({c['candidate_ms']:.2f} ms vs {c['baseline_ms']:.2f} ms)"
            for c in comparisons
        ]
        line = f"{what} is {'; '.join(parts)} against {comparisons[0]['baseline']}"
        worst = min(c["speedup"] for c in comparisons)
        passed = min_speedup is None or worst >= min_speedup
        if min_speedup is not None:
            line += f": {'meets' if passed else 'misses'} --min-speedup {min_speedup:g}"
    first = next((b for b in bases if b), None)
    baseline = (
        dict(backend=first["config"]["backend"], precision="fp32", device=first["config"]["device"])
        if first
        else {"backend": "torch", "precision": "fp32", "device": device}
    )
    return {
        "candidate": {"backend": backend, "precision": precision},
        "baseline": baseline,
        "comparisons": comparisons,
        "min_speedup": min_speedup,
        "passed": passed,
        "line": line,
    }


def precision_comparison(results: list[dict], backend: str = "tensorrt") -> list[str]:
    """One line per device and batch where ``backend`` ran both INT8 and FP16: whether INT8 is faster.

    INT8 grouped convolutions are often no faster than FP16 on TensorRT (NVIDIA/TensorRT#4529,
    #1409), and SKNet is built of them: an INT8 engine that does not beat the FP16 one costs
    accuracy for nothing.
    """
    ok = {
        (r["config"]["precision"], r["config"]["device"], r["config"]["batch"]): r["stats"]["p50_ms"]
        for r in results
        if "stats" in r and r["config"]["backend"] == backend
    }
    lines = []
    for (precision, device, batch), int8_ms in sorted(ok.items()):
        fp16_ms = ok.get(("fp16", device, batch))
        if precision != "int8" or fp16_ms is None:
            continue
        ratio = fp16_ms / int8_ms
        name = "TensorRT" if backend == "tensorrt" else "ONNX Runtime"
        if ratio > 1.05:
            verdict = f"INT8 is {ratio:.2f}x faster than FP16"
        elif ratio >= 0.95:
            verdict = f"INT8 is no faster than FP16 ({ratio:.2f}x): FP16 gives the same speed without INT8's drift"
        else:
            verdict = f"INT8 is slower than FP16 ({ratio:.2f}x): ship FP16 (sk-edge build --precision fp16)"
        lines.append(f"{name} on {device.upper()}, batch {batch}: {verdict} ({int8_ms:.2f} ms vs {fp16_ms:.2f} ms)")
    return lines


# --- statistics and reports --------------------------------------------------------------


def measure_interleaved(
    configs: list[Config], workdir: Path, options: BenchOptions, log: Callable[[str], None], progress
) -> list[dict]:
    """Every configuration in ``options.rounds()`` interleaved rounds; latencies pooled, each round's median kept."""
    rounds = options.rounds()
    tick = progress(len(configs) * rounds) if progress else (lambda n: None)
    entries: list[dict[str, Any]] = [{"config": asdict(c), "latencies_ms": [], "round_medians_ms": []} for c in configs]
    for _ in range(rounds):
        for config, entry in zip(configs, entries):
            if "error" not in entry:
                r = run_config(config, workdir, options, rounds)
                if "error" in r:
                    entry["error"] = r["error"]
                    log(f"  {config.label} failed: {r['error']}")
                else:
                    this_round = r.pop("latencies_ms")
                    entry["latencies_ms"] += this_round
                    entry["round_medians_ms"].append(float(np.median(this_round)))
                    # Peaks are the highest of the rounds; the clock and power are the same kind each round.
                    for peak in ("peak_rss_mb", "gpu_memory_mb"):
                        values = [v for v in (entry.get(peak), r.pop(peak, None)) if v is not None]
                        entry[peak] = max(values) if values else None
                    entry.update(r)
            tick(1)
    for config, entry in zip(configs, entries):
        if "error" in entry:
            entry.pop("latencies_ms"), entry.pop("round_medians_ms")
            continue
        entry["stats"] = statistics(entry["latencies_ms"], config.batch, entry["round_medians_ms"])
        if entry.get("watts"):
            entry["images_per_second_per_watt"] = entry["stats"]["throughput_ips"] / entry["watts"]
    return entries


def statistics(latencies_ms: list[float], batch: int, round_medians_ms: list[float] | None = None) -> dict:
    """Percentiles of the pooled latencies; ``spread``: how far the rounds' medians lie apart, relative to the
    median (None with one round). Throughput from the median, like every speed-up."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    p = np.percentile(a, [50, 90, 95, 99])
    rounds = list(round_medians_ms or [])
    spread = (max(rounds) - min(rounds)) / float(p[0]) if len(rounds) > 1 and p[0] > 0 else None
    return {
        "runs": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(p[0]),
        "p90_ms": float(p[1]),
        "p95_ms": float(p[2]),
        "p99_ms": float(p[3]),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "round_medians_ms": rounds,
        "spread": spread,
        "throughput_ips": float(batch * 1000.0 / p[0]),
    }


# A speed-up is not to be trusted when the rounds of a compared row lie more than this far apart (relative
# to its median), or when the machine was loaded by other work before bench began (1-minute load average
# per CPU above this share).
MAX_TRUSTED_SPREAD = 0.15
MAX_IDLE_LOAD = 0.5


def machine_load() -> dict | None:
    """The 1-minute load average and CPU count, where the OS says them."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return {"load_1min": round(load, 2), "cpus": os.cpu_count() or 1}


def trust(results: list[dict], load_before: dict | None) -> dict:
    """Whether the figures can be trusted: every row's spread within MAX_TRUSTED_SPREAD, the machine idle first."""
    reasons = []
    noisy = [
        (r["config"], r["stats"]["spread"])
        for r in results
        if "stats" in r and r["stats"].get("spread") is not None and r["stats"]["spread"] > MAX_TRUSTED_SPREAD
    ]
    if noisy:
        (c, spread), more = noisy[0], len(noisy) - 1
        reasons.append(
            f"the rounds of {c['backend']} {c['precision']} b{c['batch']} lie {spread:.0%} apart"
            + (f" (and {more} more rows)" if more else "")
        )
    if load_before and load_before["load_1min"] > MAX_IDLE_LOAD * load_before["cpus"]:
        reasons.append(
            f"the machine was busy before bench began (load average {load_before['load_1min']:g} on {load_before['cpus']} CPUs)"
        )
    rounds = max((len(r["stats"]["round_medians_ms"]) for r in results if "stats" in r), default=0)
    return {
        "trustworthy": not reasons,
        "reasons": reasons,
        "rounds": rounds,
        "load_before": load_before,
        "max_spread": MAX_TRUSTED_SPREAD,
    }


def _camera_path(configs: list[Config], workdir: Path, options: BenchOptions, log: Callable[[str], None]) -> dict:
    from .camera_bench import CameraFrame, camera_rows

    frame = CameraFrame.parse(options.camera or "")
    log(f"camera path: one {frame.fmt} {frame.width}x{frame.height} frame at a time ...")
    rows = camera_rows(
        configs, workdir, frame, options.warmup, options.timed_iterations or DEFAULT_ITERATIONS, options.threads, log
    )
    if not rows:
        log("camera path not timed: it runs through an ONNX Runtime graph or a TensorRT engine, and none was benchmarked")
    return {"frame": asdict(frame), "rows": rows}


def markdown(doc: dict) -> str:
    lines = [
        f"# sk-edge bench: {doc['model']}",
        "",
        f"Machine: {doc['machine']}. Clock: per row. "
        "Speed-up: the median against PyTorch FP32's median on the CPU at the same batch. Spread: how far the "
        "medians of the interleaved rounds lie apart, relative to the median.",
        "",
        *(
            [f"**Not trustworthy**: {'; '.join(doc['trust']['reasons'])}.", ""]
            if doc.get("trust") and not doc["trust"]["trustworthy"]
            else []
        ),
        *(
            [f"Latency verdict baseline: {doc['speedup_verdict']['comparisons'][0]['baseline']}.", ""]
            if (doc.get("speedup_verdict") or {}).get("comparisons", [{}])[0].get("baseline")
            else []
        ),
        "| backend | precision | device | batch | p50 ms | mean | p90 | p95 | p99 | min | max | spread | images/s | speed-up | peak RSS MB | GPU MB | img/s/W |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["results"]:
        c = r["config"]
        if "error" in r:
            lines.append(f"| {c['backend']} | {c['precision']} | {c['device']} | {c['batch']} | failed: {r['error']} |")
            continue
        s = r["stats"]
        ppw = f"{r['images_per_second_per_watt']:.1f}" if r.get("images_per_second_per_watt") else ""
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else ""
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else ""
        gpu = f"{r['gpu_memory_mb']:.0f}" if r.get("gpu_memory_mb") else ""
        lines.append(
            f"| {c['backend']} | {c['precision']} | {c['device']} | {c['batch']} | {s['p50_ms']:.2f} | {s['mean_ms']:.2f} | "
            f"{s['p90_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['min_ms']:.2f} | {s['max_ms']:.2f} | "
            f"{'' if s.get('spread') is None else format(s['spread'], '.0%')} | "
            f"{s['throughput_ips']:.1f} | {speed} | {rss} | {gpu} | {ppw} |"
        )
    if doc.get("camera"):
        from .camera_bench import camera_markdown

        lines += camera_markdown(doc["camera"]["frame"], doc["camera"]["rows"])
    if doc.get("notes"):
        lines += [""] + [f"- {n}" for n in doc["notes"]]
    if doc.get("int8_vs_fp16"):
        lines += ["", "INT8 against FP16:", ""] + [f"- {line}" for line in doc["int8_vs_fp16"]]
    verdict = doc.get("speedup_verdict")
    if verdict:
        mark = "" if verdict["min_speedup"] is None else ("PASS: " if verdict["passed"] else "FAIL: ")
        lines += ["", f"Latency verdict: {mark}{verdict['line']}."]
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    from .environment import jetson_info

    jetson = jetson_info()
    cpu = (
        next(
            (
                row.split(":", 1)[1].strip()
                for row in Path("/proc/cpuinfo").read_text().splitlines()
                if row.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").is_file()
        else "unknown CPU"
    )
    text = f"{cpu}, {os.cpu_count()} CPUs"
    if jetson:
        text += f"; Jetson {jetson.get('model')}, JetPack {jetson.get('jetpack')}"
    return text


def bench(
    workdir: str | Path,
    options: BenchOptions = BenchOptions(),
    log: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
) -> dict:
    """Run every configuration, write bench.json, bench.md and bench.png; return the document."""
    options.validate()
    workdir = Path(workdir)
    export = load_export(workdir)
    configs = plan_configs(workdir, options, log)
    if not configs:
        raise SkEdgeError(f"nothing to benchmark in '{workdir}' with backends {','.join(options.candidates)}")
    load_before = machine_load()
    results = measure_interleaved(configs, workdir, options, log, progress)
    for entry in results:
        base = next(
            (
                b
                for b in results
                if "stats" in b
                and b["config"]["backend"] == "torch"
                and b["config"]["device"] == "cpu"
                and b["config"]["batch"] == entry["config"]["batch"]
            ),
            None,
        )
        if base and "stats" in entry:
            entry["speedup"] = base["stats"]["p50_ms"] / entry["stats"]["p50_ms"]  # medians: outliers do not move it
    notes = []
    if not PowerSampler.available():
        notes.append("no tegrastats here: power not measured (Jetson only)")
    doc = {
        "kind": "sk-edge/bench",
        "tool": {"name": "sk-edge", "version": __version__},
        "model": export.model,
        "input_shape": list(export.input_shape),
        "machine": machine_description(),
        "settings": asdict(options),
        "timing": "warm-up first; per-call wall clock (perf_counter) for synchronous CPU and TensorRT calls, CUDA events for PyTorch on CUDA",
        "results": results,
        "notes": notes,
        "speedup_verdict": speedup_verdict(results, options.min_speedup),
        "trust": trust(results, load_before),
        "int8_vs_fp16": precision_comparison(results, "tensorrt"),
    }
    if options.camera:
        doc["camera"] = _camera_path(configs, workdir, options, log)
    if not doc["trust"]["trustworthy"]:
        log(f"warning: these timings are not trustworthy: {'; '.join(doc['trust']['reasons'])}")
        if doc["speedup_verdict"]:
            doc["speedup_verdict"]["line"] += f" (not trustworthy: {'; '.join(doc['trust']['reasons'])})"
    artifacts.write_json(workdir / BENCH_JSON, doc)
    with artifacts.atomic_output(workdir / BENCH_MD) as tmp:
        tmp.write_text(markdown(doc))
    plots.draw_figure(plots.latency_plot, doc, workdir / BENCH_PNG, log)
    measured = {e["config"]["backend"] for e in results if "stats" in e}
    unmeasured = [b for b in (options.required or options.candidates) if b not in measured]
    if not measured or (options.required and unmeasured):
        reasons = "; ".join(f"{e['config']['backend']} {e['config']['precision']}: {e['error']}" for e in results if "error" in e)
        raise BenchFailed(
            f"bench FAILED: no result for {', '.join(unmeasured)}"
            + (f" ({reasons[:300]})" if reasons else " (nothing of it in the work directory)")
            + f"; the rows that ran are in {workdir / BENCH_MD}"
        )
    for line in doc["int8_vs_fp16"]:
        log(line)
    speed = doc["speedup_verdict"]
    if options.min_speedup is not None:
        if speed is None:
            raise BenchFailed(
                f"bench FAILED: --min-speedup {options.min_speedup:g}, but no engine or graph was timed to "
                f"judge; the rows that ran are in {workdir / BENCH_MD}"
            )
        if not speed["passed"]:
            raise BenchFailed(f"bench FAILED: {speed['line']} ({workdir / BENCH_MD})")
        log(f"latency verdict PASS: {speed['line']}")
    return doc


# --- Jetson power ------------------------------------------------------------------------

# tegrastats prints one line per interval with rails as NAME current/average in mW, e.g.
# "VDD_IN 5123mW/5001mW" (JetPack 5/6) or "POM_5V_IN 3456/3400" (older boards).
_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats_power(line: str) -> float | None:
    """Board input power in watts from one tegrastats line, or None if it has no input rail."""
    m = _RAIL.search(line)
    return int(m.group(2)) / 1000.0 if m else None


class PowerSampler:
    """Samples tegrastats every 100 ms in the background; ``stop()`` returns the mean watts."""

    @staticmethod
    def available() -> bool:
        return shutil.which("tegrastats") is not None

    def start(self) -> None:
        self.samples: list[float] = []
        self.proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        if self.proc.stdout is None:  # started with stdout=PIPE, so never None
            return
        for line in self.proc.stdout:
            w = parse_tegrastats_power(line)
            if w is not None:
                self.samples.append(w)

    def stop(self) -> float | None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        return float(np.mean(self.samples)) if self.samples else None


if __name__ == "__main__" and (_spec := worker_spec(sys.argv)) is not None:
    sys.exit(_worker(_spec))
