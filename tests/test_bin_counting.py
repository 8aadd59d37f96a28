"""numba's one-pass bin counting gives calibration the very bins of the NumPy path, on a real model's tensors."""

import numpy as np
import onnx
import pytest

from sk_edge.export import export_model
from sk_edge.images import ImageStream, find_images, sample_paths
from sk_edge.models import build_model
from sk_edge.quantize import bin_counting, histogram
from sk_edge.quantize.calibration import collect_histograms, legacy_tensor_names
from sk_edge.quantize.histogram import StreamingHistogram
from sk_edge.quantize.plan import plan_quantization
from sk_edge.quantize.calibration import CalibrationOptions, calibrate
from sk_edge.workdir import CALIB_JSON, FP32_ONNX, load_export, read_view

from conftest import CALIB

numba = pytest.importorskip("numba", reason="the dev set-up installs numba (the calibration extra)")


def _numpy_only(monkeypatch):
    monkeypatch.setattr(histogram, "kernel", lambda: None)


@pytest.fixture
def every_size(monkeypatch):
    """The kernel counts tensors of any size (it is used only from KERNEL_MIN_VALUES up, for speed)."""
    monkeypatch.setattr(histogram, "KERNEL_MIN_VALUES", 0)


def test_the_kernel_is_what_counts_when_numba_is_installed(every_size):
    assert bin_counting.kernel() is not None
    hist = StreamingHistogram(bins=128)
    hist.update(np.array([0.0, 2.0], dtype=np.float32))  # sets the range to the largest |x|: 2
    assert (hist.range, hist.kernel_counted, hist.counts[0], hist.counts[-1]) == (2.0, 2, 1, 1)
    hist.update(np.array([0.5, -1.0, 2.0, 1.999], dtype=np.float32))  # inside the range
    assert hist.total == hist.kernel_counted == 6 and hist.counts[-1] == 3  # 2.0 twice and 1.999 in the last bin
    hist.update(np.array([3.0], dtype=np.float32))  # above: the range grows to 4, the bins merge two by two
    assert hist.range == 4.0 and hist.total == hist.kernel_counted == 7 and hist.counts[96] == 1 and hist.counts[63] == 3
    zeros = StreamingHistogram(bins=128)
    zeros.update(np.zeros(5, dtype=np.float32))  # nothing but zeros: no range yet, all in the first bin
    assert (zeros.range, zeros.total, zeros.counts[0], zeros.kernel_counted) == (0.0, 5, 5, 5)


def test_small_tensors_are_counted_by_numpy_where_it_is_faster(monkeypatch):
    calls = []
    monkeypatch.setattr(histogram, "kernel", lambda: (lambda *args: calls.append(args[0].size) or (np.zeros(128, np.int64), 1.0, 0)))
    hist = StreamingHistogram(bins=128)
    hist.update(np.ones(10, dtype=np.float32))
    hist.update(np.ones(histogram.KERNEL_MIN_VALUES - 1, dtype=np.float32))
    assert calls == [] and hist.total == histogram.KERNEL_MIN_VALUES + 9
    hist.update(np.ones(histogram.KERNEL_MIN_VALUES, dtype=np.float32))  # at the cut: the kernel's
    assert calls == [histogram.KERNEL_MIN_VALUES] and hist.kernel_counted == histogram.KERNEL_MIN_VALUES


def test_real_calibration_histograms_are_bin_for_bin_those_of_numpy(tmp_path, monkeypatch, every_size):
    # The reference model's 19 planned tensors over 48 real images, batch 4: ranges grow batch by batch, so
    # both the kernel (inside the range) and the NumPy path (growth) count, and every bin must agree.
    export_model(build_model("sknet26-digits"), tmp_path)
    model = onnx.load(str(tmp_path / FP32_ONNX))
    names = list(plan_quantization(model).activations)
    preprocess = load_export(tmp_path).preprocess

    def histograms():
        stream = ImageStream(sample_paths(find_images(CALIB)), preprocess, 4, 48, root=CALIB)
        return collect_histograms(model, names, stream, 2048)[0]

    fast = histograms()
    _numpy_only(monkeypatch)
    slow = histograms()
    monkeypatch.undo()
    assert fast.keys() == slow.keys() and len(fast) >= 10
    for name in names:
        a, b = fast[name], slow[name]
        assert (a.range, a.amax, a.total) == (b.range, b.amax, b.total), name
        assert np.array_equal(a.counts, b.counts), name
    assert sum(h.total for h in fast.values()) > 1_000_000
    # The kernel counted every value, the first batch's and the batches that grew a range included.
    assert all(h.kernel_counted == h.total for h in fast.values()) and not any(h.kernel_counted for h in slow.values())
    assert bin_counting.counted_with(fast.values()) == f"numba {numba.__version__}"
    assert bin_counting.counted_with(slow.values()) == "numpy"


def test_calib_json_says_what_counted_not_what_is_installed(tmp_path, monkeypatch):
    # numba is installed here, but with every tensor under the kernel's cut NumPy counts them all, and calib.json
    # must not claim numba (it did until this test).
    export_model(build_model("sknet26-digits"), tmp_path)
    monkeypatch.setattr(histogram, "KERNEL_MIN_VALUES", 1 << 40)
    calibrate(tmp_path, CALIB, CalibrationOptions(num_images=8, batch=4))
    assert read_view(tmp_path, CALIB_JSON).settings["bin_counting"] == "numpy"
    monkeypatch.setattr(histogram, "KERNEL_MIN_VALUES", 64 * 1024)  # the reference model's smaller tensors: NumPy's
    calibrate(tmp_path, CALIB, CalibrationOptions(num_images=8, batch=4), force=True)
    assert read_view(tmp_path, CALIB_JSON).settings["bin_counting"].startswith(f"numba {numba.__version__} for ")


def test_what_counted_is_recorded_by_share_of_the_values():
    small = StreamingHistogram(bins=128)
    small.update(np.array([0.0, 2.0], dtype=np.float32))  # under the kernel's cut: NumPy
    assert bin_counting.counted_with([small]) == "numpy"
    large = StreamingHistogram(bins=128)
    large.update(np.linspace(0, 1, histogram.KERNEL_MIN_VALUES * 3, dtype=np.float32))  # the range set and counted by the kernel
    assert large.kernel_counted == large.total and bin_counting.counted_with([large]) == f"numba {numba.__version__}"
    share = 100 * large.total / (large.total + small.total)
    assert bin_counting.counted_with([small, large]) == f"numba {numba.__version__} for {share:.1f}% of the values, numpy for the rest"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("first", [True, False])
def test_nan_and_inf_raise_in_the_first_batch_and_later_ones(bad, first, every_size):
    hist = StreamingHistogram(bins=128)
    if not first:
        hist.update(np.ones(10, dtype=np.float32))
    x = np.ones(1000, dtype=np.float32)
    x[517] = bad
    with pytest.raises(ValueError, match="inf or NaN"):
        hist.update(x)
    assert hist.total == (0 if first else 10)  # nothing of the bad batch was counted


def test_random_tensors_agree_with_numpy_in_every_shape_and_layout(monkeypatch, every_size):
    rng = np.random.default_rng(3)
    batches = [np.maximum(rng.standard_normal((4, 8, 9, 7)), 0).astype(np.float32) * s for s in (1.0, 0.5, 3.0, 0.9)]
    batches.append(np.asfortranarray(batches[1]))  # not C-contiguous: counted from a contiguous copy
    batches.append(batches[0][:, ::2])  # a strided view
    fast = StreamingHistogram(bins=256)
    for b in batches:
        fast.update(b)
    _numpy_only(monkeypatch)
    slow = StreamingHistogram(bins=256)
    for b in batches:
        slow.update(b.copy())
    assert (fast.range, fast.amax, fast.total) == (slow.range, slow.amax, slow.total)
    assert np.array_equal(fast.counts, slow.counts)


def test_the_arena_is_decided_from_the_tapped_tensors_as_onnx_runtime_makes_them(tmp_path):
    """tapped_bytes_per_image (shape inference) against the bytes a real session hands back for a batch of 3."""
    from sk_edge.backends.onnxruntime import OnnxRuntimeRunner
    from sk_edge.quantize.calibration import ARENA_MAX_TAPPED_BYTES, arena_fits, tapped_bytes_per_image, tapped_model

    export_model(build_model("sknet26-digits"), tmp_path)
    model = onnx.load(str(tmp_path / FP32_ONNX))
    names = list(plan_quantization(model).activations)
    per_image = tapped_bytes_per_image(onnx.shape_inference.infer_shapes(model), names)
    with OnnxRuntimeRunner(tapped_model(model, names), dynamic_batch=True) as runner:
        input_name = runner.session.get_inputs()[0].name
        batch = np.zeros((3, *load_export(tmp_path).input_shape), np.float32)
        fetched = [n for n in names if n != input_name]
        outputs = runner.session.run(fetched, {input_name: batch})
    held = sum(o.nbytes for o in outputs) + (batch.nbytes if input_name in names else 0)
    assert per_image is not None and 3 * per_image == held
    # SKNet-50 at 224 (53 MB of planned tensors an image, 179 MB with --legacy-ranges): the arena where it costs
    # about 120 MB, not where it cost a gigabyte.
    assert arena_fits(53 << 20, 4) and arena_fits(179 << 20, 4) and not arena_fits(179 << 20, 8)
    assert arena_fits(ARENA_MAX_TAPPED_BYTES, 1) and not arena_fits(ARENA_MAX_TAPPED_BYTES + 1, 1)
    assert not arena_fits(None, 1)  # a shape shape inference could not give: no arena
    unknown = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", "c"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "c"])]))
    assert tapped_bytes_per_image(onnx.shape_inference.infer_shapes(unknown), ["y"]) is None


@pytest.mark.parametrize("legacy", [False, True])
def test_a_graph_that_overflows_on_real_images_names_the_tensor_and_the_images(tmp_path, legacy):
    """The reference graph with its stem's weights scaled to 1e36 (finite) reaches inf on real images: calibration
    stops with the tensor and the images named, from whichever counting thread met it; with --legacy-ranges too
    (its running max had taken max(0.0, nan) = 0.0 without a word)."""
    from sk_edge.errors import SkEdgeError

    export_model(build_model("sknet26-digits"), tmp_path)
    model = onnx.load(str(tmp_path / FP32_ONNX))
    plan = plan_quantization(model)
    stem = next(i for i in model.graph.initializer if len(i.dims) == 4)
    weights = onnx.numpy_helper.to_array(stem)
    stem.CopyFrom(onnx.numpy_helper.from_array(np.sign(weights).astype(np.float32) * np.float32(1e36), stem.name))
    planned = list(plan.activations)
    # legacy: only the running maxima of the other activations are taken, so it is their path that must refuse
    names, maxima = ([], dict.fromkeys(legacy_tensor_names(model, planned), 0.0)) if legacy else (planned, None)
    stream = ImageStream(sample_paths(find_images(CALIB)), load_export(tmp_path).preprocess, 4, 8, root=CALIB)
    with pytest.raises(SkEdgeError, match=r"tensor '.+' of the FP32 graph holds inf or NaN on the calibration images "
                       r".+\.png.*: the model overflows on them"):
        collect_histograms(model, names, stream, 2048, maxima=maxima)


def _bins_by_definition(values: np.ndarray, range_: float, bins: int) -> tuple[np.ndarray, int]:
    """(counts, outside) as the NumPy path defines them: |x| <= range_ compared in float64, the bin int(|x| * scale)
    in float32, a value at the range's top in the last bin."""
    a = np.abs(values.astype(np.float32))
    inside = a.astype(np.float64) <= range_
    k = np.minimum((a[inside] * np.float32(bins / range_)).astype(np.int64), bins - 1)
    return np.bincount(k, minlength=bins), int((~inside).sum())


@pytest.mark.parametrize("size", [1, 3, 4, 2047, 2048, 2049, 8195])
@pytest.mark.parametrize("range_", [2.0, 0.1, 1.0 + 2**-30])  # 0.1 and 1 + 2**-30 are not float32 numbers
def test_the_kernel_counts_every_size_and_range_as_defined(size, range_):
    from sk_edge.quantize._numba_bins import count_within

    rng = np.random.default_rng(size)
    values = (rng.standard_normal(size) * range_ / 2).astype(np.float32)
    top = np.float32(range_)
    edges = [0.0, -0.0, float(top), -float(top), float(np.nextafter(top, np.float32(0))), float(np.nextafter(top, np.float32(9)))]
    values[: min(size, len(edges))] = edges[: min(size, len(edges))]
    counts, largest, outside = count_within(values, range_, np.float32(256 / range_), 256)
    expected, expected_outside = _bins_by_definition(values, range_, 256)
    assert np.array_equal(counts, expected) and outside == expected_outside
    assert largest == float(np.abs(values).max())


def test_the_kernel_splits_what_would_overflow_its_counts(monkeypatch):
    from sk_edge.quantize import _numba_bins

    values = np.maximum(np.random.default_rng(5).standard_normal(10_001), 0).astype(np.float32)
    whole = _numba_bins.count_within(values, 4.5, np.float32(128 / 4.5), 128)
    monkeypatch.setattr(_numba_bins, "MAX_VALUES", 1000)  # 2**31 in use: 11 calls here
    split = _numba_bins.count_within(values, 4.5, np.float32(128 / 4.5), 128)
    assert np.array_equal(whole[0], split[0]) and whole[1:] == split[1:]
    assert np.array_equal(whole[0], _bins_by_definition(values, 4.5, 128)[0])
