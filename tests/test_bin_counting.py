"""numba's one-pass bin counting gives calibration the very bins of the NumPy path, on a real model's tensors."""

import numpy as np
import onnx
import pytest

from sk_edge.export import export_model
from sk_edge.images import ImageStream, find_images, sample_paths
from sk_edge.models import build_model
from sk_edge.quantize import bin_counting, histogram
from sk_edge.quantize.calibration import collect_histograms
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
    hist.update(np.array([0.0, 2.0], dtype=np.float32))  # sets the range: the NumPy path
    x = np.array([0.5, -1.0, 2.0, 1.999], dtype=np.float32)
    assert hist._count_within_range(x)  # inside the range: counted by the kernel
    assert hist.total == 6 and hist.counts[-1] == 3  # 2.0 twice and 1.999 in the last bin
    assert not hist._count_within_range(np.array([3.0], dtype=np.float32))  # above: left to the NumPy path
    assert hist.total == 6


def test_small_tensors_are_counted_by_numpy_where_it_is_faster(monkeypatch):
    calls = []
    monkeypatch.setattr(histogram, "kernel", lambda: (lambda *args: calls.append(args[0].size) or (None, 0.0, 1)))
    hist = StreamingHistogram(bins=128)
    hist.update(np.ones(10, dtype=np.float32))
    hist.update(np.ones(histogram.KERNEL_MIN_VALUES - 1, dtype=np.float32))
    assert calls == [] and hist.total == histogram.KERNEL_MIN_VALUES + 9
    hist.update(np.ones(histogram.KERNEL_MIN_VALUES, dtype=np.float32))  # "outside": left to NumPy, counted once
    assert calls == [histogram.KERNEL_MIN_VALUES] and hist.total == 2 * histogram.KERNEL_MIN_VALUES + 9


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
    # The first batch of each tensor sets its range (NumPy); the kernel counts the rest, and the record says so.
    share = 100 * sum(h.kernel_counted for h in fast.values()) / sum(h.total for h in fast.values())
    assert 50 < share < 100 and not any(h.kernel_counted for h in slow.values())
    assert bin_counting.counted_with(fast.values()) == (
        f"numba {numba.__version__} for {share:.1f}% of the values, numpy for the rest")
    assert bin_counting.counted_with(slow.values()) == "numpy"


def test_calib_json_says_what_counted_not_what_is_installed(tmp_path, monkeypatch):
    # numba is installed here, but every tensor of the reference model is under the kernel's cut: NumPy counted
    # them all, and calib.json must not claim numba (it did until this test).
    export_model(build_model("sknet26-digits"), tmp_path)
    calibrate(tmp_path, CALIB, CalibrationOptions(num_images=8, batch=4))
    assert read_view(tmp_path, CALIB_JSON).settings["bin_counting"] == "numpy"
    monkeypatch.setattr(histogram, "KERNEL_MIN_VALUES", 0)
    calibrate(tmp_path, CALIB, CalibrationOptions(num_images=8, batch=4), force=True)
    assert read_view(tmp_path, CALIB_JSON).settings["bin_counting"].startswith(f"numba {numba.__version__} for ")


def test_a_histogram_counted_only_by_the_kernel_is_recorded_as_numba(every_size):
    hist = StreamingHistogram(bins=128)
    hist.update(np.array([0.0, 2.0], dtype=np.float32))  # sets the range: the NumPy path
    assert bin_counting.counted_with([hist]) == "numpy"
    kernel_only = StreamingHistogram.from_counts(np.zeros(128), 2.0, 0.0)  # a range, no counts yet
    kernel_only.update(np.array([0.5, 1.0], dtype=np.float32))
    assert kernel_only.kernel_counted == kernel_only.total == 2
    assert bin_counting.counted_with([kernel_only]) == f"numba {numba.__version__}"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_still_raise_once_the_range_is_set(bad, every_size):
    hist = StreamingHistogram(bins=128)
    hist.update(np.ones(10, dtype=np.float32))
    x = np.ones(1000, dtype=np.float32)
    x[517] = bad
    with pytest.raises(ValueError, match="inf or NaN"):
        hist.update(x)
    assert hist.total == 10  # nothing of the bad batch was counted


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
