"""Histograms, amax methods and the TensorRT cache format, on real and known distributions."""

import struct

import numpy as np
import pytest

from sk_edge.quantize.cache import decode_scale, read_cache, version_number, write_cache
from sk_edge.quantize.histogram import StreamingHistogram
from sk_edge.quantize.methods import METHODS, _kl_divergences, amax_entropy, compute_amax

rng = np.random.default_rng(0)


def test_growing_histogram_equals_one_built_at_the_final_range():
    hist = StreamingHistogram(bins=256)
    batches = [rng.standard_normal(5000) * s for s in (0.5, 1.0, 3.0, 2.0, 40.0)]
    for b in batches:
        hist.update(b)
    everything = np.abs(np.concatenate(batches)).astype(np.float32)
    direct = np.bincount(
        np.minimum((everything * (hist.bins / hist.range)).astype(np.int64), hist.bins - 1), minlength=hist.bins
    )
    assert np.array_equal(hist.counts, direct)
    assert hist.total == everything.size and hist.amax == pytest.approx(everything.max())
    assert hist.counts.nbytes == 256 * 8  # the same size however many values it has seen


def test_values_at_the_range_count_in_the_last_bin():
    # The first batch sets the range to its largest |x|: that value (twice here, once negative) is at the
    # upper edge, one past the last bin before it is folded back.
    hist = StreamingHistogram(bins=128)
    x = np.array([0.0, 0.25, 1.0, -3.0, 3.0, 2.999999], dtype=np.float32)
    hist.update(x.copy(), consume=True)
    assert hist.range == 3.0 and hist.counts[-1] == 3 and hist.counts.sum() == hist.total == x.size
    clamped = np.minimum((np.abs(x) * np.float32(128 / 3.0)).astype(np.int64), 127)
    assert np.array_equal(hist.counts, np.bincount(clamped, minlength=128))


def test_histogram_round_trips_through_json():
    hist = StreamingHistogram()
    hist.update(np.maximum(rng.standard_normal(10000), 0))
    again = StreamingHistogram.from_dict(hist.to_dict())
    assert np.array_equal(again.counts, hist.counts) and again.range == hist.range and again.amax == hist.amax
    for method in METHODS:
        assert compute_amax(again, method) == compute_amax(hist, method)


def test_methods_on_a_gaussian():
    hist = StreamingHistogram()
    x = rng.standard_normal(1_000_000)
    hist.update(x)
    amax = {m: compute_amax(hist, m, percentile=99.0) for m in METHODS}
    assert amax["max"] == pytest.approx(np.abs(x).max(), rel=1e-6)
    assert amax["percentile"] == pytest.approx(np.quantile(np.abs(x), 0.99), abs=2 * hist.bin_width)
    # Known optimum for 8-bit uniform quantization of a Gaussian: clip near 3.9 sigma (MSE);
    # KL keeps more of the tail.
    assert 3.6 < amax["mse"] < 4.2
    assert amax["mse"] < amax["entropy"] <= amax["max"]


def _naive_kl(counts, start, levels=128):
    out = []
    for i in range(start, len(counts) + 1):
        p = [float(c) for c in counts[:i]]
        p[-1] += float(sum(counts[i:]))
        q = [0.0] * i
        for g in range(levels):
            members = [j for j in range(i) if (j * levels) // i == g]
            nonzero = [j for j in members if counts[j] > 0]
            for j in nonzero:
                q[j] = sum(counts[j] for j in members) / len(nonzero)
        ps, qs = sum(p), sum(q)
        if any(a > 0 and b == 0 for a, b in zip(p, q)):
            out.append(np.inf)
            continue
        out.append(sum((a / ps) * np.log((a / ps) / (b / qs)) for a, b in zip(p, q) if a > 0))
    return np.array(out)


def test_kl_search_matches_a_literal_implementation():
    counts = np.histogram(np.abs(rng.standard_normal(20000)), bins=260)[0]
    _, fast = _kl_divergences(counts, 128)
    slow = _naive_kl(counts, 128)
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = ~np.isinf(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)


def test_zero_spike_pulls_entropy_down():
    """Post-ReLU tensors are mostly exact zeros; counting them in the KL search clips signal."""
    hist = StreamingHistogram()
    x = np.maximum(rng.standard_normal(200_000), 0) * (rng.random(200_000) < 0.2)  # 90% zeros
    hist.update(x)
    with_spike = amax_entropy(hist, ignore_zero_bin=False)
    without = amax_entropy(hist, ignore_zero_bin=True)
    assert with_spike < without
    clipped_with = float((x > with_spike).mean() / (x > 0).mean())
    assert clipped_with > 0.001  # a real share of the non-zero values clipped


def test_calibration_cache_round_trip(tmp_path):
    amax = {"input": 2.64, "onnx::Conv_12": 0.5, "/stages/stages.0/conv1/Relu_output_0": 6.35}
    path = tmp_path / "calib.cache"
    write_cache(path, amax, trt_version="10.3.0")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    # value: big-endian float32 bits of amax / 127
    assert lines[1] == "input: " + struct.pack(">f", 2.64 / 127).hex()
    header, scales = read_cache(path)
    assert header == lines[0]
    for name, value in amax.items():
        assert scales[name] == pytest.approx(value / 127, rel=1e-7)
    assert version_number("8.6.1") == 8601 and version_number("10.13.3.9") == 101303
    assert decode_scale("3c010204") == struct.unpack(">f", bytes.fromhex("3c010204"))[0]


def test_calib_json_is_written_through_its_view_and_reads_back_the_same(tmp_path):
    """CalibrationInfo.write: the stage's sidecar is made and read by one dataclass."""
    from sk_edge import artifacts
    from sk_edge.sidecars import CalibrationInfo

    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-8600-EntropyCalibration2\ninput: 3c010a14\n")
    tensors = {"input": {"amax": 2.5, "amax_by_method": {"max": 3.0}}}
    info = CalibrationInfo.write(tmp_path / "calib.json", cache, "k" * 64, "h" * 64, "f" * 64, {"dir": "imgs", "used": 8},
                                 {"method": "entropy", "provider": "CPUExecutionProvider"}, "entropy", tensors, None,
                                 plan={"tensors": 1})
    again = CalibrationInfo.from_doc(artifacts.read_json(tmp_path / "calib.json"), tmp_path / "calib.json")
    assert again == info and info.amax(["input"]) == {"input": 2.5} and info.calibration_max("input") == 3.0
    assert info.cache_sha256 == artifacts.sha256_file(cache) and info.doc["plan"] == {"tensors": 1}
    assert info.legacy_ranges is None and artifacts.up_to_date(tmp_path / "calib.json", info.key) is not None


def test_shapes_inferred_without_the_weights_are_those_inferred_with_them(tmp_path):
    """Calibration infers shapes on a copy of the graph without its weights (0.06 s against 0.4 s for SKNet-50); the
    value_info must be what inference on the whole graph gives, and the weights must stay."""
    import onnx
    from onnx import shape_inference

    from sk_edge.export import export_model
    from sk_edge.models import build_model
    from sk_edge.quantize.calibration import with_inferred_shapes

    export_model(build_model("sknet26-digits"), tmp_path)
    model = onnx.load(str(tmp_path / "model.fp32.onnx"))
    whole = shape_inference.infer_shapes(model)
    weights = {i.name: i.SerializeToString() for i in model.graph.initializer}
    light = with_inferred_shapes(model)
    assert light is model and {i.name: i.SerializeToString() for i in model.graph.initializer} == weights
    assert [v.SerializeToString() for v in light.graph.value_info] == [v.SerializeToString() for v in whole.graph.value_info]
    assert len(light.graph.value_info) > 100
