"""Frames in GPU memory preprocessed by the C++ runtime's kernels from Python (sk_edge.frame_kernels).

Here (no GPU): the package ships the C++ kernel source itself; NVIDIA's NVRTC compiles it for every
target GPU; the kernel parameters' ctypes layout equals g++'s; the plane arithmetic of every pixel
format, padded rows included, finds the planes (checked by reading them back from real memory); the
Engine hands each frame of a batch to the kernels with its own slot of the input. Where a GPU and
cuda-python are present, the kernels' output is compared with the numpy reference
(sk_edge.resampling, itself equal to Pillow) for every pixel format.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sk_edge.device_arrays import CudaArrayView
from sk_edge.errors import UsageError
from sk_edge.frame_kernels import (
    FORMAT_CODES,
    KERNELS,
    Normalisation,
    PixelSource,
    YuvCoefficients,
    compile_kernels,
    frame_planes,
    kernel_sources,
)
from sk_edge.images import normalize
from sk_edge.pixels import FORMATS, to_rgb
from sk_edge.preprocess import Preprocess
from sk_edge.reference.digits import ASSETS
from sk_edge.resampling import resize_reference

from test_pixels import camera_frames

ROOT = Path(__file__).resolve().parents[1]
CPP_INCLUDE = ROOT / "cpp" / "include" / "sk_edge"
PHOTO = sorted((ASSETS / "backgrounds").glob("*.jpg"))[0]
# Orin and Thor, and the desktop GPUs from Turing to Blackwell.
TARGETS = [(7, 5), (8, 6), (8, 7), (8, 9), (9, 0), (11, 0), (12, 0)]


def test_the_package_ships_the_cpp_runtimes_kernel_source_itself():
    source, headers = kernel_sources()
    assert source == (CPP_INCLUDE / "preprocess_kernels.cuh").read_bytes()
    assert headers == {"sk_edge/pixels.hpp": (CPP_INCLUDE / "pixels.hpp").read_bytes()}


@pytest.mark.parametrize("target", TARGETS, ids=[f"sm_{a}{b}" for a, b in TARGETS])
def test_nvrtc_compiles_the_kernels_for_every_target(target):
    cubin = compile_kernels(target)
    assert cubin[:4] == b"\x7fELF"
    for name in KERNELS:  # C linkage: the names the runtime looks up are in the image as written
        assert name.encode() in cubin


LAYOUT_PROGRAM = r"""
#include <cstddef>
#include <cstdio>
#include "sk_edge/preprocess_kernels.cuh"
using namespace sk_edge;
int main() {
    std::printf("PixelSource %zu %zu %zu %zu %zu %zu %zu %zu %zu\n", sizeof(PixelSource), offsetof(PixelSource, plane0),
                offsetof(PixelSource, plane1), offsetof(PixelSource, plane2), offsetof(PixelSource, pitch0),
                offsetof(PixelSource, pitch1), offsetof(PixelSource, pitch2), offsetof(PixelSource, format),
                offsetof(PixelSource, yuv));
    std::printf("YuvCoefficients %zu\n", sizeof(YuvCoefficients));
    std::printf("Normalisation %zu %zu %zu %zu %zu\n", sizeof(Normalisation), offsetof(Normalisation, mean),
                offsetof(Normalisation, std), offsetof(Normalisation, source), offsetof(Normalisation, fill));
    const PixelFormat formats[] = {PixelFormat::RGB, PixelFormat::BGR, PixelFormat::RGBA, PixelFormat::BGRA,
                                   PixelFormat::BGRX, PixelFormat::GRAY8, PixelFormat::NV12, PixelFormat::I420,
                                   PixelFormat::YUYV, PixelFormat::UYVY};
    std::printf("PixelFormat");
    for (PixelFormat f : formats) std::printf(" %d", static_cast<int>(f));
    std::printf("\n");
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on this machine to compile the layout program")
def test_the_kernel_parameters_have_the_c_layout(tmp_path):
    (tmp_path / "layout.cpp").write_text(LAYOUT_PROGRAM)
    subprocess.run(["g++", "-std=c++17", f"-I{CPP_INCLUDE.parent}", "layout.cpp", "-o", "layout"], cwd=tmp_path, check=True)
    printed = dict(line.split(" ", 1) for line in subprocess.check_output([tmp_path / "layout"], text=True).splitlines())
    ours = {
        "PixelSource": [ctypes.sizeof(PixelSource)] + [getattr(PixelSource, f).offset for f, _ in PixelSource._fields_],
        "YuvCoefficients": [ctypes.sizeof(YuvCoefficients)],
        "Normalisation": [ctypes.sizeof(Normalisation)] + [getattr(Normalisation, f).offset for f, _ in Normalisation._fields_],
        "PixelFormat": [FORMAT_CODES[name] for name in FORMATS],
    }
    assert {name: [int(v) for v in values.split()] for name, values in printed.items()} == ours


def camera_frame(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """The photo as a ``fmt`` frame (sk_edge.pixels' numpy layouts): YUV as test_pixels makes it from OpenCV's encoder."""
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    packed = {"rgb": rgb, "bgr": bgr, "rgba": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA), "bgra": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
              "bgrx": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "gray8": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)}
    return np.ascontiguousarray(packed[fmt]) if fmt in packed else camera_frames(bgr)[fmt]


def padded(frame: np.ndarray, fmt: str, pad: int) -> tuple[np.ndarray, CudaArrayView]:
    """The frame in a buffer whose rows are ``pad`` bytes longer (I420's chroma rows: half), and its view."""
    rows, row = frame.shape[0], int(np.prod(frame.shape[1:]))
    pitch = row + pad
    buffer = np.zeros(rows * pitch + 64, np.uint8)
    if fmt == "i420":  # Y rows at the pitch, then U and V rows at half of it
        h = rows * 2 // 3
        flat = frame.reshape(-1)
        buffer[: h * pitch].reshape(h, pitch)[:, :row] = flat[: h * row].reshape(h, row)
        chroma = flat[h * row :].reshape(h, row // 2)  # h/2 U rows then h/2 V rows, each row // 2 bytes
        buffer[h * pitch : h * pitch + h * (pitch // 2)].reshape(h, pitch // 2)[:, : row // 2] = chroma
    else:
        buffer[: rows * pitch].reshape(rows, pitch)[:, :row] = frame.reshape(rows, row)
    return buffer, CudaArrayView(buffer.ctypes.data, frame.shape, np.dtype(np.uint8), None, False, pitch)


def read_back(source: PixelSource, fmt: str, height: int, width: int) -> np.ndarray:
    """The frame reassembled, sk_edge.pixels' layout, from the planes at the addresses PixelSource gives."""
    def rows(address: int, pitch: int, count: int, size: int) -> np.ndarray:
        return np.stack([np.frombuffer(ctypes.string_at(address + r * pitch, size), np.uint8) for r in range(count)])

    bpp = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "bgrx": 4, "gray8": 1, "yuyv": 2, "uyvy": 2}
    if fmt in bpp:
        plane = rows(source.plane0, source.pitch0, height, width * bpp[fmt])
        return plane.reshape((height, width, bpp[fmt]) if bpp[fmt] in (3, 4) else plane.shape)
    luma = rows(source.plane0, source.pitch0, height, width)
    if fmt == "nv12":
        return np.concatenate([luma, rows(source.plane1, source.pitch1, height // 2, width)])
    u = rows(source.plane1, source.pitch1, height // 2, width // 2)
    v = rows(source.plane2, source.pitch2, height // 2, width // 2)
    return np.concatenate([luma, np.concatenate([u.reshape(-1), v.reshape(-1)]).reshape(height // 2, width)])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(PHOTO) as image:
        rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[: rgb.shape[0] & ~1, : rgb.shape[1] & ~1])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pad", [0, 64])
def test_the_planes_of_every_format_are_found_where_they_lie(photo, fmt, pad):
    frame = camera_frame(photo, fmt)
    buffer, view = padded(frame, fmt, pad)
    located = frame_planes(view, fmt)
    height, width = photo.shape[:2]
    assert (located.height, located.width, located.source.format) == (height, width, FORMAT_CODES[fmt])
    assert np.array_equal(read_back(located.source, fmt, height, width), frame)
    assert located.source.yuv.y_offset == 16  # BT.601 limited range, the default
    assert frame_planes(view, fmt, "bt709", full_range=True).source.yuv.y_offset == 0


@pytest.mark.parametrize("fmt, shape, dtype, message", [
    ("nv12", (482, 640), np.uint8, r"one \(H \* 3 / 2, W\) uint8 buffer"),
    ("rgba", (480, 640, 3), np.uint8, r"uint8 array of shape \(H, W, 4\)"),
    ("rgb", (480, 640, 3), np.float32, "uint8 array, got float32"),
    ("yuyv", (480, 641, 2), np.uint8, r"\(H, W, 2\) or \(H, 2 W\)"),
    ("rgb565", (480, 640), np.uint8, "pixel format must be one of"),
])
def test_a_frame_that_is_not_of_its_format_is_refused_in_one_line(fmt, shape, dtype, message):
    with pytest.raises(UsageError, match=message):
        frame_planes(CudaArrayView(0x7F000, shape, np.dtype(dtype), None, False), fmt)


def _gpu_driver():
    """cuda-python's driver with a usable GPU, or a skip saying why not."""
    driver = pytest.importorskip("cuda.bindings.driver", reason="cuda-python is not installed")
    try:
        (err,) = driver.cuInit(0)
    except Exception as exc:  # noqa: BLE001 - cuda-python raises its loader's own error type where libcuda is absent
        pytest.skip(f"no CUDA driver here ({type(exc).__name__}): the kernels are compiled above, not run")
    if int(err) != 0:
        pytest.skip(f"no usable CUDA GPU here ({err}): the kernels are compiled above, not run")
    return driver


def test_the_kernels_give_the_reference_bytes_on_a_gpu(photo):
    """On a GPU: every format, padded rows, each resize mode: the kernels' tensor equals the numpy reference's."""
    from sk_edge.frame_kernels import FramePreprocessor

    driver = _gpu_driver()
    _, device = driver.cuDeviceGet(0)
    _, context = driver.cuDevicePrimaryCtxRetain(device)
    driver.cuCtxPushCurrent(context)
    try:
        _, major = driver.cuDeviceGetAttribute(driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        _, minor = driver.cuDeviceGetAttribute(driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        with FramePreprocessor(driver, (major, minor)) as kernels:
            for fmt in FORMATS:
                for pre in (Preprocess(input_size=224), Preprocess(input_size=(96, 128), resize="letterbox",
                            interpolation="bicubic", channel_order="BGR"), Preprocess(input_size=64, resize="resize",
                            interpolation="nearest")):
                    frame = camera_frame(photo, fmt)
                    expected = normalize(resize_reference(to_rgb(frame, fmt), pre), pre)
                    got = _run_on_gpu(driver, kernels, frame, fmt, pre)
                    assert np.array_equal(got, expected), (fmt, pre)
    finally:
        driver.cuCtxPopCurrent()
        driver.cuDevicePrimaryCtxRelease(device)


def _run_on_gpu(driver, kernels, frame: np.ndarray, fmt: str, pre: Preprocess) -> np.ndarray:
    host, view = padded(frame, fmt, 64)
    _, source = driver.cuMemAlloc(host.nbytes)
    _, out = driver.cuMemAlloc(3 * pre.height * pre.width * 4)
    try:
        driver.cuMemcpyHtoD(source, host.ctypes.data, host.nbytes)
        on_device = CudaArrayView(int(source), view.shape, view.dtype, None, False, view.row_pitch)
        kernels.enqueue(frame_planes(on_device, fmt), pre, int(out), 0)
        result = np.empty((3, pre.height, pre.width), np.float32)
        (err,) = driver.cuMemcpyDtoH(result.ctypes.data, out, result.nbytes)  # on the legacy stream: after the kernels
        assert int(err) == 0
        return result
    finally:
        driver.cuMemFree(source)
        driver.cuMemFree(out)


# --- The Engine's side, on the stand-in of TensorRT 10.13's API and FakeCuda's host-backed memory ---------------
class HostKernels:
    """FramePreprocessor's contract carried out on the host: the numpy reference of the planes it is handed,
    written at the device address it is told (FakeCuda's memory). What it checks is the Engine's part: which
    planes go to the kernels, into which slot of the input, on which stream."""

    def __init__(self, engine):
        self.engine, self.calls, self.closed = engine, [], False

    def enqueue(self, frame, pre, out, stream_handle):
        fmt = FORMATS[frame.source.format]
        rgb = to_rgb(read_back(frame.source, fmt, frame.height, frame.width), fmt)
        tensor = normalize(resize_reference(rgb, pre), pre).astype(np.float32)
        base = int(self.engine._device["input"])  # FakeCuda's addresses are keys, not a flat address space
        memory = self.engine.cuda.memory[base]
        assert 0 <= out - base and out - base + tensor.nbytes <= memory.nbytes, "a slot outside the engine's input"
        memory[out - base : out - base + tensor.nbytes] = tensor.view(np.uint8).reshape(-1)
        self.calls.append((fmt, out - base, stream_handle))

    def close(self):
        self.closed = True


class Frame:
    """A frame handed over through the CUDA Array Interface (here in host memory, which FakeCuda reads)."""

    def __init__(self, buffer: np.ndarray, view: CudaArrayView):
        self.buffer = buffer  # keeps the memory alive
        strides = (view.row_pitch,) + tuple(np.cumprod((1,) + view.shape[:0:-1])[::-1][1:]) if len(view.shape) > 1 else None
        self.__cuda_array_interface__ = {"shape": view.shape, "typestr": "|u1", "data": (view.pointer, False),
                                         "version": 3, "strides": strides}


@pytest.fixture
def frame_engine(tmp_path):
    import json

    from sk_edge.backends.tensorrt import engine_sidecar_path
    from sk_edge.runtime import Engine
    from trt_standin import FakeCuda, engine_sidecar, scenario, standin_module

    holder: dict = {"bound": {}, "batch": 1}
    plan = tmp_path / "model.fp16.engine"
    plan.write_bytes(b"serialized plan")
    engine_sidecar_path(plan).write_text(json.dumps(engine_sidecar()))
    cuda = FakeCuda()
    run = scenario(holder)

    def execute(self, stream):  # "logits": each batch row's first 10 input values
        batch = holder["batch"]
        values = cuda.memory[holder["bound"]["input"]].view(np.float32).reshape(batch, -1)[:, :10]
        cuda.memory[holder["bound"]["logits"]][:] = values.reshape(-1).view(np.uint8)
        return True

    run.returns["IExecutionContext.set_input_shape"] = lambda self, name, shape: holder.__setitem__("batch", shape[0]) or True
    run.returns["IExecutionContext.get_tensor_shape"] = lambda self, name: (
        (holder["batch"], 3, 64, 64) if name == "input" else (holder["batch"], 10))
    run.returns["IExecutionContext.set_tensor_address"] = lambda self, name, address: holder["bound"].__setitem__(
        name, int(address)) or True
    run.returns["IExecutionContext.execute_async_v3"] = execute
    holder["trt"] = standin_module("10.13.3.9", run)
    with Engine(plan, check_sidecar=False, trt=holder["trt"], cuda=cuda) as engine:
        engine._frames = HostKernels(engine)
        yield engine, cuda, holder


def test_frames_in_gpu_memory_reach_the_kernels_each_into_its_own_slot(frame_engine, photo):
    engine, cuda, holder = frame_engine
    kernels = engine._frames
    frames = {fmt: camera_frame(photo, fmt) for fmt in ("nv12", "yuyv")}
    on_device = [Frame(*padded(frames["nv12"], "nv12", 64)), Frame(*padded(frames["nv12"][:, ::-1].copy(), "nv12", 0))]
    logits = engine.infer_frames(on_device, fmt="nv12", matrix="bt601")
    # The same frames as numpy take the CPU path (Pillow); the GPU path must give the same input, slot by slot.
    on_host = engine.infer_frames([frames["nv12"], frames["nv12"][:, ::-1].copy()], fmt="nv12")
    assert logits.shape == (2, 10) and np.array_equal(logits, on_host)
    slot = 3 * 64 * 64 * 4
    assert kernels.calls == [("nv12", 0, engine.stream.handle), ("nv12", slot, engine.stream.handle)]
    # TensorRT reads the engine's own input buffer, which the kernels wrote: no host-to-device copy of a frame.
    assert holder["bound"]["input"] == int(engine._device["input"])
    single = engine.infer_frames(Frame(*padded(frames["yuyv"], "yuyv", 32)), fmt="yuyv")
    assert np.array_equal(single, engine.infer_frames(frames["yuyv"], fmt="yuyv"))
    import torch  # a DLPack tensor in host memory takes the numpy frames' path

    assert np.array_equal(engine.infer_frames([torch.from_numpy(frames["yuyv"])], fmt="yuyv"), single)
    assert len(kernels.calls) == 3
    engine.close()
    assert kernels.closed and engine._frames is None


def test_frames_the_engine_cannot_take_are_refused_before_anything_is_queued(frame_engine, photo):
    engine, _, _ = frame_engine
    kernels = engine._frames
    frame = camera_frame(photo, "nv12")
    with pytest.raises(UsageError, match="not a mix"):
        engine.infer_frames([Frame(*padded(frame, "nv12", 0)), frame], fmt="nv12")
    with pytest.raises(UsageError, match=r"a rgba frame is a uint8 array of shape \(H, W, 4\)"):
        engine.infer_frames(Frame(*padded(frame, "nv12", 0)), fmt="rgba")
    with pytest.raises(UsageError, match="no frames given"):
        engine.infer_frames([], fmt="nv12")
    assert kernels.calls == []
