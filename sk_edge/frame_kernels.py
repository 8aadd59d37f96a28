"""Camera frames already in GPU memory, preprocessed there by the C++ runtime's own kernels.

``cpp/include/sk_edge/preprocess_kernels.cuh`` (shipped in this package as ``sk_edge/kernels/``)
converts the frame's pixel format, resizes it as Pillow does, normalises it and writes the NCHW
float32 input in two launches. The Python runtime compiles that source with NVRTC for the GPU it
runs on, once per process (about a second), and launches it with cuda-python's driver bindings on
the engine's stream with the coefficients of sk_edge.resampling: the same bytes as the C++ runtime
and as the host's Pillow preprocessing, with no copy of the frame through the host.

What runs where: the NVRTC compile of the kernels (for every target architecture) and the kernel
parameter layouts (against g++'s ``offsetof``) are tested on machines without a GPU; the launches
are tested against sk_edge.resampling's numpy reference where a GPU and cuda-python are present
(``tests/test_frame_kernels.py``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from . import cuda_python
from .device_arrays import DL_CUDA, DL_CUDA_MANAGED, CudaArrayView, cuda_array_view, dlpack_device_type, dlpack_view
from .device_arrays import is_cuda_array, is_dlpack_array
from .errors import SkEdgeError, UsageError
from .pixels import FORMATS, frame_size, pixel_format, yuv_coefficients
from .preprocess import Preprocess
from .resampling import ResizePlan, axis_coefficients, letterbox_fill, plan_resize

KERNEL_SOURCE = "preprocess_kernels.cuh"
KERNEL_HEADERS = ("pixels.hpp",)  # what the source includes, as "sk_edge/<name>"
KERNELS = ("sk_edge_horizontal_pass", "sk_edge_vertical_pass_normalise")
FORMAT_CODES = {name: code for code, name in enumerate(FORMATS)}  # sk_edge::PixelFormat's order
BLOCK = (32, 8, 1)


# --- The kernels' by-value parameters, in the C ABI's layout (cpp/include/sk_edge/pixels.hpp and the .cuh) ---
class YuvCoefficients(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("y_scale", "y_offset", "r_v", "g_u", "g_v", "b_u")]


class PixelSource(ctypes.Structure):
    _fields_ = [
        ("plane0", ctypes.c_void_p),
        ("plane1", ctypes.c_void_p),
        ("plane2", ctypes.c_void_p),
        ("pitch0", ctypes.c_size_t),
        ("pitch1", ctypes.c_size_t),
        ("pitch2", ctypes.c_size_t),
        ("format", ctypes.c_int32),
        ("yuv", YuvCoefficients),
    ]


class Normalisation(ctypes.Structure):
    _fields_ = [
        ("mean", ctypes.c_float * 3),
        ("std", ctypes.c_float * 3),
        ("source", ctypes.c_int32 * 3),
        ("fill", ctypes.c_uint8 * 3),
    ]


def kernel_sources() -> tuple[bytes, dict[str, bytes]]:
    """The kernel source and the headers it includes (by their include names), from the package data."""
    folder = resources.files("sk_edge") / "kernels"
    headers = {f"sk_edge/{name}": (folder / name).read_bytes() for name in KERNEL_HEADERS}
    return (folder / KERNEL_SOURCE).read_bytes(), headers


@dataclass(frozen=True)
class DeviceFrame:
    """A frame's planes in GPU memory: what PixelSource carries, with the frame's size."""

    width: int
    height: int
    source: PixelSource


def frame_planes(view: CudaArrayView, fmt: str, matrix: str = "bt601", full_range: bool = False) -> DeviceFrame:
    """Where the planes of a frame of ``fmt`` lie in the device array ``view``.

    Layouts as sk_edge.pixels describes them for numpy frames, with rows possibly padded (``view.row_pitch``):
    NV12's interleaved chroma rows and I420's U and V rows follow the luma with the same padding (NV12) or half
    of it (I420), as GStreamer and OpenCV lay them out."""
    fmt = pixel_format(fmt)
    if view.dtype != np.uint8:
        raise UsageError(f"a {fmt} frame is a uint8 array, got {view.dtype}")
    height, width = frame_size(view.shape, fmt)
    pitch = view.row_bytes
    planes = [view.pointer, 0, 0]
    pitches = [pitch, 0, 0]
    if fmt == "nv12":
        planes[1], pitches[1] = view.pointer + height * pitch, pitch
    elif fmt == "i420":
        chroma_pitch, chroma_rows = pitch // 2, height // 2
        planes[1] = view.pointer + height * pitch
        planes[2] = planes[1] + chroma_rows * chroma_pitch
        pitches[1] = pitches[2] = chroma_pitch
    source = PixelSource(*planes, *pitches, FORMAT_CODES[fmt], YuvCoefficients(*yuv_coefficients(matrix, full_range)))
    return DeviceFrame(width, height, source)


def device_frame_view(frame, stream_handle: int) -> tuple[CudaArrayView, Any] | None:
    """(the frame's device memory, what keeps it alive) for a CUDA array or a CUDA DLPack tensor; None for
    anything else (numpy frames take the CPU path). A DLPack producer orders its pending work before
    ``stream_handle`` (the protocol's ``stream`` argument)."""
    if is_cuda_array(frame):
        return cuda_array_view(frame, "frame", padded_rows=True), frame
    if is_dlpack_array(frame) and dlpack_device_type(frame) in (DL_CUDA, DL_CUDA_MANAGED):
        capsule = frame.__dlpack__(stream=stream_handle)
        return dlpack_view(capsule, "frame", padded_rows=True)[1], capsule
    return None


def normalisation(pre: Preprocess) -> Normalisation:
    """The kernels' per-channel constants: network channel c reads RGB channel c, or 2 - c for a BGR-trained model."""
    source = (2, 1, 0) if pre.channel_order == "BGR" else (0, 1, 2)
    return Normalisation(
        (ctypes.c_float * 3)(*pre.mean),
        (ctypes.c_float * 3)(*pre.std),
        (ctypes.c_int32 * 3)(*source),
        (ctypes.c_uint8 * 3)(*letterbox_fill(pre)),
    )


def compile_kernels(compute_capability: tuple[int, int]) -> bytes:
    """The kernels as a cubin for ``compute_capability`` (NVRTC; no GPU needed). A SkEdgeError with NVRTC's log."""
    nvrtc = cuda_python.bindings("nvrtc", "frames in GPU memory (their kernels are compiled with NVRTC)")
    source, headers = kernel_sources()
    err, program = nvrtc.nvrtcCreateProgram(
        source, KERNEL_SOURCE.encode(), len(headers), list(headers.values()), [name.encode() for name in headers]
    )
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
    try:
        arch = f"--gpu-architecture=sm_{compute_capability[0]}{compute_capability[1]}".encode()
        options = [arch, b"-std=c++17"]
        (err,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        if int(err) != 0:
            raise SkEdgeError(
                f"NVRTC could not compile the preprocessing kernels for {arch.decode()[20:]}: {_program_log(nvrtc, program)}"
            )
        err, size = nvrtc.nvrtcGetCUBINSize(program)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBINSize")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(program, cubin)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBIN")
        return cubin
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def _program_log(nvrtc, program) -> str:
    _, size = nvrtc.nvrtcGetProgramLogSize(program)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(program, log)
    return " ".join(log.rstrip(b"\0").decode(errors="replace").split())


def _nvrtc_check(nvrtc, err, call: str) -> None:
    if int(err) != 0:
        raise SkEdgeError(f"NVRTC failed in {call}: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")


def _driver_check(returned):
    """A cuda-python driver call of the frames' preprocessing: its value(s), or a SkEdgeError."""
    return cuda_python.result(returned, "CUDA preprocessing of frames on the GPU")


@dataclass(frozen=True)
class _Resize:
    """One frame size's plan and its coefficients in device memory (first, count, weights per axis)."""

    plan: ResizePlan
    horizontal: tuple[int, int, int, int]  # first, count, weights (device addresses), taps
    vertical: tuple[int, int, int, int]


class FramePreprocessor:
    """The kernels loaded in the current CUDA context, the coefficients of each frame size (uploaded once, so a
    camera loop uploads nothing per frame) and the 8-bit intermediate of the two passes.

    Holds GPU memory, so it has the runner lifecycle: ``close()`` or a ``with`` block frees it. Every call runs
    with the CUDA context it was made in current (the Engine pushes its own)."""

    def __init__(self, driver, compute_capability: tuple[int, int]):
        self._driver = driver
        self._allocations: list[Any] = []
        self._module = _driver_check(driver.cuModuleLoadData(compile_kernels(compute_capability)))
        self._functions = {name: _driver_check(driver.cuModuleGetFunction(self._module, name.encode())) for name in KERNELS}
        self._resizes: dict[tuple[int, int, Preprocess], _Resize] = {}
        self._mid, self._mid_bytes = 0, 0

    def __enter__(self) -> "FramePreprocessor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the coefficients, the intermediate and the module. Safe to call twice."""
        for allocation in self._allocations:
            self._driver.cuMemFree(allocation)
        self._allocations, self._resizes, self._mid, self._mid_bytes = [], {}, 0, 0
        if self._module is not None:
            self._driver.cuModuleUnload(self._module)
            self._module = None

    def _upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        allocation = _driver_check(self._driver.cuMemAlloc(max(array.nbytes, 1)))
        self._allocations.append(allocation)
        _driver_check(self._driver.cuMemcpyHtoD(allocation, array.ctypes.data, array.nbytes))
        return int(allocation)

    def _resize(self, width: int, height: int, pre: Preprocess) -> _Resize:
        key = (width, height, pre)
        if key not in self._resizes:
            plan = plan_resize(width, height, pre)
            axes = []
            for size, out in ((width, plan.resized_width), (height, plan.resized_height)):
                c = axis_coefficients(size, out, pre.interpolation)
                axes.append((self._upload(c.first), self._upload(c.count), self._upload(c.weights), c.taps))
            self._resizes[key] = _Resize(plan, axes[0], axes[1])
        return self._resizes[key]

    def _intermediate(self, nbytes: int) -> int:
        if nbytes > self._mid_bytes:  # grows, never shrinks; the old one is freed with the rest at close()
            self._mid = int(_driver_check(self._driver.cuMemAlloc(nbytes)))
            self._allocations.append(self._mid)
            self._mid_bytes = nbytes
        return self._mid

    def enqueue(self, frame: DeviceFrame, pre: Preprocess, out: int, stream_handle: int) -> None:
        """Queue the frame's preprocessing into ``out`` (3 * height * width float32 in device memory) on the stream."""
        resize = self._resize(frame.width, frame.height, pre)
        plan = resize.plan
        mid = self._intermediate(frame.height * plan.resized_width * 3)
        first, count, weights, taps = resize.horizontal
        c_int, pointer = ctypes.c_int, ctypes.c_void_p
        self._launch(
            KERNELS[0], (plan.resized_width, frame.height), stream_handle,
            [frame.source, c_int(frame.height), c_int(plan.resized_width), pointer(first), pointer(count),
             pointer(weights), c_int(taps), pointer(mid)],
        )  # fmt: skip
        first, count, weights, taps = resize.vertical
        self._launch(
            KERNELS[1], (plan.out_width, plan.out_height), stream_handle,
            [pointer(mid), c_int(plan.resized_width), c_int(plan.resized_height), c_int(plan.out_width),
             c_int(plan.out_height), c_int(plan.offset_x), c_int(plan.offset_y), pointer(first), pointer(count),
             pointer(weights), c_int(taps), normalisation(pre), pointer(out)],
        )  # fmt: skip

    def _launch(self, name: str, threads: tuple[int, int], stream_handle: int, args: list) -> None:
        # cuLaunchKernel's kernelParams: an array of pointers, each to one argument's bytes (copied at the launch).
        params = (ctypes.c_void_p * len(args))(*(ctypes.addressof(a) for a in args))
        grid = ((threads[0] + BLOCK[0] - 1) // BLOCK[0], (threads[1] + BLOCK[1] - 1) // BLOCK[1], 1)
        stream = self._driver.CUstream(stream_handle)
        _driver_check(self._driver.cuLaunchKernel(self._functions[name], *grid, *BLOCK, 0, stream, ctypes.addressof(params), 0))
