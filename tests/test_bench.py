"""`sk-edge bench` on real backends (PyTorch and ONNX Runtime here; TensorRT where installed)."""

import json

import pytest
from PIL import Image

from sk_edge.bench import parse_tegrastats_power, statistics
from sk_edge.export import export_model
from sk_edge.models import build_model
from sk_edge.quantize import quantize_model

from conftest import run_cli as run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("bench")
    export_model(build_model("sknet26-digits"), wd)
    quantize_model(wd, "fp16")
    return wd


def test_bench_writes_its_three_files(workdir):
    out = run("bench", "-w", str(workdir), "--batch", "1,2",
              "--warmup", "1", "--iterations", "5")
    assert out.returncode == 0, out.stderr
    assert "no model.int8.onnx" in out.stderr and "TensorRT not benchmarked" in out.stderr
    doc = json.loads((workdir / "bench.json").read_text())
    rows = {(r["config"]["backend"], r["config"]["precision"], r["config"]["batch"]): r for r in doc["results"]}
    assert set(rows) == {(b, p, n) for n in (1, 2) for b, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"))}
    for r in rows.values():
        s = r["stats"]
        assert s["runs"] == 5 and len(r["latencies_ms"]) == 5
        assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["throughput_ips"] == pytest.approx(r["config"]["batch"] * 1000 / s["p50_ms"])  # from the median
        assert r["peak_rss_mb"] > 0 and r["clock"].startswith("perf_counter")
    assert rows[("torch", "fp32", 1)]["speedup"] == pytest.approx(1.0)
    assert "| onnxruntime | fp16 | cpu | 2 |" in (workdir / "bench.md").read_text()
    with Image.open(workdir / "bench.png") as im:
        assert im.format == "PNG" and im.size[0] >= 600


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backends", "tensorflow"], "--backends takes a comma-separated list"),
        (["--iterations", "2"], "--iterations must be at least 5"),
        (["--iterations", "10", "--duration", "1"], "pass either --iterations N or --duration S"),
        (["--batch", "one"], "is not a comma-separated list"),
        (["--camera", "nv12"], "--camera takes FORMAT:WIDTHxHEIGHT, e.g. nv12:1920x1080; got 'nv12'"),
        (["--camera", "h264:640x480"], "pixel format 'h264' is not one of rgb"),
        (["--camera", "nv12:641x480"], "nv12 needs an even width and height, got 641x480"),
        (["--camera", "rgb:192000x1080"], "the frame's sides must be 1 to 16384 pixels, got 192000x1080"),
    ],
)
def test_bad_options_are_usage_errors(workdir, args, message):
    out = run("bench", "-w", str(workdir), *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_the_camera_path_is_timed_stage_by_stage_on_real_frames_through_onnx_runtime(workdir):
    """--camera: an NV12 frame converted and preprocessed as the host judged it, then inferred, per stage."""
    from sk_edge.bench import BenchOptions, bench

    doc = bench(workdir, BenchOptions(backends=("onnxruntime",), precisions=("fp32",), warmup=1, iterations=5,
                                      repeats=1, camera="nv12:320x240"))
    assert doc["camera"]["frame"] == {"fmt": "nv12", "width": 320, "height": 240}
    (row,) = doc["camera"]["rows"]
    assert (row["backend"], row["precision"]) == ("onnxruntime", "fp32") and "error" not in row
    stages = row["stages"]
    assert set(stages) == {"preprocess", "inference", "end_to_end"}  # no device copies on ONNX Runtime's CPU provider
    for s in stages.values():
        assert 0 < s["p50_ms"] <= s["p99_ms"]
    assert stages["end_to_end"]["p50_ms"] >= stages["preprocess"]["p50_ms"]
    table = (workdir / "bench.md").read_text()
    assert "Camera path, one nv12 320x240 frame at a time" in table and "| onnxruntime | fp32 | " in table


def test_statistics_and_tegrastats_parsing():
    s = statistics([1.0, 2.0, 3.0, 4.0, 10.0], batch=4)
    assert s["p50_ms"] == 3.0 and s["max_ms"] == 10.0 and s["throughput_ips"] == pytest.approx(4000 / 3.0)
    # Line formats of tegrastats on JetPack 6 (Orin) and JetPack 4 (Nano), as NVIDIA documents them.
    orin = "RAM 2448/30536MB CPU [1%@729,0%@729] GR3D_FREQ 0% VDD_GPU_SOC 2383mW/2383mW VDD_CPU_CV 397mW/397mW VDD_IN 5123mW/5001mW"
    assert parse_tegrastats_power(orin) == pytest.approx(5.123)
    assert parse_tegrastats_power("RAM 1500/3964MB POM_5V_IN 3456/3400 POM_5V_GPU 0/0") == pytest.approx(3.456)
    assert parse_tegrastats_power("RAM 1500/3964MB CPU [5%@102]") is None


def test_rounds_interleave_speedups_are_medians_and_noise_is_flagged(workdir):
    """Real ONNX Runtime runs in three interleaved rounds: each row keeps its rounds' medians and their spread, the
    latency verdict divides medians, and the trust flag reads the spread and the machine's load."""
    from sk_edge.bench import MAX_TRUSTED_SPREAD, trust

    out = run("bench", "-w", str(workdir), "--backends", "onnxruntime", "--precisions", "fp16,fp32", "--warmup", "1",
              "--iterations", "15", "--repeats", "3")
    assert out.returncode == 0, out.stderr
    doc = json.loads((workdir / "bench.json").read_text())
    rows = [r for r in doc["results"] if "stats" in r]
    assert len(rows) == 2 and all(len(r["stats"]["round_medians_ms"]) == 3 and r["stats"]["runs"] == 15 for r in rows)
    assert all(r["stats"]["spread"] is not None and r["stats"]["spread"] >= 0 for r in rows)
    comparison = doc["speedup_verdict"]["comparisons"][0]
    p50 = {r["config"]["precision"]: r["stats"]["p50_ms"] for r in rows}
    assert comparison["candidate_ms"] == p50["fp16"]
    assert doc["trust"]["rounds"] == 3 and "trustworthy" in doc["trust"]
    # The flag itself, on these real rows: a busy machine, and rounds that disagree.
    assert not trust(rows, {"load_1min": 7.5, "cpus": 2})["trustworthy"]
    noisy = json.loads(json.dumps(rows))
    noisy[0]["stats"]["spread"] = MAX_TRUSTED_SPREAD * 2
    verdict = trust(noisy, {"load_1min": 0.0, "cpus": 2})
    assert not verdict["trustworthy"] and "lie 30% apart" in verdict["reasons"][0]
    assert trust(rows, {"load_1min": 0.0, "cpus": 2})["trustworthy"] == all(r["stats"]["spread"] <= MAX_TRUSTED_SPREAD for r in rows)
