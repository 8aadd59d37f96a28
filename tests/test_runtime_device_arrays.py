"""The Python runtime on arrays already in GPU memory (the CUDA Array Interface), without a GPU.

The protocol is plain data, so :func:`sk_edge.device_arrays.cuda_array_view` is tested on the
dicts producers hand over (PyTorch's, CuPy's and Numba's shapes of them). The Engine's device path
runs against the stand-in of TensorRT's real API surface (tests/trt_standin.py) and FakeCuda's
host-backed "device" memory: what it proves is which addresses TensorRT is given and which copies
are queued; what it cannot prove here is a kernel reading that memory (no GPU on this machine).
"""

from __future__ import annotations

import numpy as np
import pytest

from sk_edge.device_arrays import cuda_array_view
from sk_edge.errors import SkEdgeError, UsageError
from sk_edge.runtime import Engine

from trt_standin import FakeCuda, scenario, standin_module


class Producer:
    """What a CUDA array library hands over: an object whose only contract is the interface dict."""

    def __init__(self, pointer: int, shape, typestr: str = "<f4", version: int = 3, **extra):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (pointer, False),
                                         "version": version, "strides": None, **extra}


def test_the_interface_of_a_contiguous_array_is_read_as_given():
    view = cuda_array_view(Producer(0x7F00, (2, 3, 64, 64), stream=7))
    assert (view.pointer, view.shape, view.dtype, view.stream, view.readonly) == (0x7F00, (2, 3, 64, 64), np.float32, 7, False)
    assert view.nbytes == 2 * 3 * 64 * 64 * 4
    # Version 2 has no stream: the producer's data is ready when handed over.
    assert cuda_array_view(Producer(0x7F00, (1, 10), version=2, stream=7)).stream is None
    # Explicit C strides, and PyTorch's arbitrary stride on a size-1 dimension, are contiguous.
    assert cuda_array_view(Producer(0x7F00, (1, 3, 4, 4), strides=(192, 64, 16, 4))).shape == (1, 3, 4, 4)
    assert cuda_array_view(Producer(0x7F00, (1, 3, 4, 4), strides=(4, 64, 16, 4))).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("extra, message", [
    ({"strides": (4, 16, 64, 192)}, r"not C-contiguous \(strides \(4, 16, 64, 192\)\); pass a contiguous copy"),
    ({"mask": object()}, "masked CUDA array"),
    ({"stream": 0}, "names stream 0, which the protocol disallows"),
])
def test_what_cannot_be_bound_is_refused_in_one_line(extra, message):
    with pytest.raises(UsageError, match=message) as caught:
        cuda_array_view(Producer(0x7F00, (1, 3, 4, 4), **extra))
    assert "\n" not in str(caught.value)


def test_an_object_without_the_interface_is_refused():
    with pytest.raises(UsageError, match="not a CUDA array"):
        cuda_array_view(np.zeros(3))


@pytest.fixture
def engine(tmp_path):
    holder: dict = {"addresses": []}
    plan = tmp_path / "model.fp16.engine"
    plan.write_bytes(b"serialized plan")
    run = scenario(holder)
    run.returns["IExecutionContext.set_tensor_address"] = lambda self, name, address: holder["addresses"].append(
        (name, int(address))) or True
    holder["trt"] = standin_module("10.13.3.9", run)
    cuda = FakeCuda()
    copies = {"htod": 0, "dtoh": 0}
    htod, dtoh = cuda.memcpy_htod_async, cuda.memcpy_dtoh_async
    cuda.memcpy_htod_async = lambda *a: copies.__setitem__("htod", copies["htod"] + 1) or htod(*a)
    cuda.memcpy_dtoh_async = lambda *a: copies.__setitem__("dtoh", copies["dtoh"] + 1) or dtoh(*a)
    with Engine(plan, check_sidecar=False, trt=holder["trt"], cuda=cuda) as opened:
        yield opened, holder["addresses"], copies


def test_device_arrays_in_and_out_are_bound_where_they_are_with_no_host_copy(engine):
    engine, addresses, copies = engine
    frames, logits = Producer(0xA000, (1, 3, 64, 64), stream=None), Producer(0xB000, (1, 10), stream=None)
    assert engine(frames, out=logits) is logits
    assert addresses[-2:] == [("input", 0xA000), ("logits", 0xB000)]
    assert copies == {"htod": 0, "dtoh": 0}
    # Device in, host out: one copy back, into the engine's own output buffer.
    result = engine(frames)
    assert addresses[-2:] == [("input", 0xA000), ("logits", int(engine._device["logits"]))]
    assert result.shape == (1, 10) and copies == {"htod": 0, "dtoh": 1}
    # The next numpy call is bound to the engine's own buffers again.
    engine(np.zeros((1, 3, 64, 64), np.float32))
    assert addresses[-2:] == [("input", int(engine._device["input"])), ("logits", int(engine._device["logits"]))]
    assert copies == {"htod": 1, "dtoh": 2}


@pytest.mark.parametrize("frames, out, message", [
    (Producer(0xA000, (3, 64, 64)), None, r"input must be 4-D NCHW, got a CUDA array of shape \(3, 64, 64\)"),
    (Producer(0xA000, (1, 3, 64, 64), typestr="<f2"), None, "input must be float32, got float16"),
    (Producer(0xA000, (1, 3, 64, 64)), Producer(0xB000, (1, 1000)), r"out must be a writable float32 CUDA array of shape \(1, 10\)"),
    (Producer(0xA000, (1, 3, 64, 64)), Producer(0xB000, (1, 10), data=(0xB000, True)), r"\(read-only\)"),
    ([[0.0]], None, "input must be a numpy array or a CUDA array"),
])
def test_device_inputs_the_engine_cannot_take_are_refused_in_one_line(engine, frames, out, message):
    engine, _, _ = engine
    with pytest.raises(UsageError, match=message):
        engine(frames, out=out)


def test_stage_times_split_each_call_into_copy_in_execution_and_copy_out(tmp_path):
    holder: dict = {}
    plan = tmp_path / "model.fp16.engine"
    plan.write_bytes(b"serialized plan")
    holder["trt"] = standin_module("10.13.3.9", scenario(holder))
    with pytest.raises(UsageError, match="cannot be used with cuda_graph=True"):
        Engine(plan, check_sidecar=False, trt=holder["trt"], cuda=FakeCuda(), stage_times=True, cuda_graph=True)
    with Engine(plan, check_sidecar=False, trt=holder["trt"], cuda=FakeCuda(), stage_times=True) as engine:
        assert engine.last_stages_ms is None
        engine(np.zeros((1, 3, 64, 64), np.float32))
        stages = engine.last_stages_ms
    assert set(stages) == {"host_to_device", "inference", "device_to_host"} and min(stages.values()) >= 0


def test_a_producer_stream_is_waited_for_on_the_gpu_and_a_machine_without_a_driver_says_so(engine):
    engine, _, _ = engine
    # Here there is no libcuda: the wait (cuEventRecord + cuStreamWaitEvent through the driver) cannot be queued.
    with pytest.raises(SkEdgeError, match=r"the CUDA driver library \(libcuda.so.1\) cannot be loaded"):
        engine(Producer(0xA000, (1, 3, 64, 64), stream=99))
    # The engine's own stream needs no wait: nothing is asked of the driver.
    assert engine(Producer(0xA000, (1, 3, 64, 64), stream=engine.stream.handle)).shape == (1, 10)


@pytest.fixture
def echo_engine(tmp_path):
    """An engine whose "execution" writes the input's first 10 values as the logits, in FakeCuda's memory."""
    holder: dict = {"bound": {}}
    plan = tmp_path / "model.fp16.engine"
    plan.write_bytes(b"serialized plan")
    cuda = FakeCuda()
    run = scenario(holder)

    def bind(self, name, address):
        holder["bound"][name] = int(address)
        return True

    def execute(self, stream):
        values = cuda.memory[holder["bound"]["input"]].view(np.float32)[:10]
        cuda.memory[holder["bound"]["logits"]][:] = values.view(np.uint8)
        return True

    run.returns["IExecutionContext.set_tensor_address"] = bind
    run.returns["IExecutionContext.execute_async_v3"] = execute
    holder["trt"] = standin_module("10.13.3.9", run)
    return Engine(plan, check_sidecar=False, trt=holder["trt"], cuda=cuda)


def test_enqueue_returns_at_once_and_each_pending_keeps_its_own_result(echo_engine):
    first, second = (np.random.default_rng(i).standard_normal((1, 3, 64, 64)).astype(np.float32) for i in (1, 2))
    expected_first, expected_second = first.reshape(-1)[:10].copy(), second.reshape(-1)[:10].copy()
    pending_first = echo_engine.enqueue(first)
    first[:] = 0  # the caller reuses its frame: the engine staged a copy before enqueue returned
    pending_second = echo_engine.enqueue(second)  # before the first was waited for: its result is kept
    assert pending_first.done() and np.array_equal(pending_first.wait()[0], expected_first)
    assert np.array_equal(pending_second.wait()[0], expected_second)
    assert np.array_equal(pending_second.wait(), pending_second.wait())  # waiting twice gives the same result
    assert np.array_equal(echo_engine(second)[0], expected_second)  # the blocking call is enqueue + wait
    pending = echo_engine.enqueue(second)
    echo_engine.close()
    with pytest.raises(UsageError, match="closed before the inference was waited for"):
        pending.wait()


def test_dlpack_capsules_of_real_producers_are_read_as_they_lie():
    """numpy's and PyTorch's own capsules: the struct a CUDA producer hands over is the same one."""
    import torch

    from sk_edge.device_arrays import DL_CPU, dlpack_view

    array = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    device, view = dlpack_view(array.__dlpack__())
    assert (device, view.pointer, view.shape, view.dtype) == (DL_CPU, array.ctypes.data, (2, 3, 8, 8), np.float32)
    tensor = torch.zeros(96, dtype=torch.float16)[48:].reshape(1, 3, 4, 4)  # a contiguous view 96 bytes into its storage
    device, view = dlpack_view(tensor.__dlpack__())
    assert (device, view.pointer, view.shape, view.dtype) == (DL_CPU, tensor.data_ptr(), (1, 3, 4, 4), np.float16)
    with pytest.raises(UsageError, match=r"not C-contiguous \(DLPack strides \(96, 32, 8, 2\) bytes\)"):
        dlpack_view(torch.zeros((1, 3, 4, 4), dtype=torch.float16)[:, :, 1:].__dlpack__())
    with pytest.raises(UsageError, match=r"not C-contiguous \(DLPack strides \(24, 8\) bytes\)"):
        dlpack_view(torch.arange(24.0).reshape(4, 6)[:, ::2].__dlpack__())
    with pytest.raises(UsageError, match="did not give an unused 'dltensor' capsule"):
        dlpack_view(object())


def test_a_dlpack_tensor_in_host_memory_runs_as_numpy_does(echo_engine):
    import torch

    frames = torch.randn(1, 3, 64, 64)
    assert np.array_equal(echo_engine(frames), echo_engine(frames.numpy()))
    assert np.array_equal(echo_engine(frames)[0], frames.reshape(-1)[:10].numpy())
