"""Arrays already in GPU memory, as the Python runtime takes them: the CUDA Array Interface.

PyTorch CUDA tensors, CuPy arrays and Numba device arrays all expose ``__cuda_array_interface__``
(version 2 or 3 of NVIDIA's protocol, https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html):
a dict with the device pointer, shape, type string, strides and, from version 3, the stream the
producer last wrote the data on. :func:`cuda_array_view` reads it into one checked record, so the
runtime binds the memory directly (no copy through the host) and waits for the producer's stream.
Nothing here needs CUDA: the protocol is plain Python data, tested on this machine without a GPU.
DLPack (``__dlpack__``, the protocol JAX speaks) is read from its capsule's C struct (:func:`dlpack_view`),
tested on the real capsules numpy and PyTorch make of CPU arrays, whose struct is the same.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

# CAI v3: stream 1 is the legacy default stream, 2 the per-thread default stream, 0 is disallowed.
LEGACY_DEFAULT_STREAM, PER_THREAD_DEFAULT_STREAM = 1, 2


@dataclass(frozen=True)
class CudaArrayView:
    """One C-contiguous array in device memory.

    Attributes:
        pointer: the device address of element 0.
        shape: its shape.
        dtype: its element type.
        stream: the producer's stream handle (None: the producer promised no pending work, or is a
            version 2 producer, whose data is ready when it hands the array over).
        readonly: the producer marked the memory read-only (fine for an input, refused as an output).
    """

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype
    stream: int | None
    readonly: bool
    row_pitch: int | None = None  # bytes from one row (first index) to the next, where rows are padded

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes from one row to the next: the pitch of a padded array, else a row's size."""
        return self.row_pitch or int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def is_cuda_array(obj) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


def cuda_array_view(obj, what: str = "input", padded_rows: bool = False) -> CudaArrayView:
    """The device memory ``obj`` exposes; a one-line :class:`UsageError` for what the runtime cannot bind.

    ``padded_rows``: rows may lie further apart than their size (a pitched camera frame: cudaMallocPitch,
    an NvBufSurface plane), as long as each row is contiguous."""
    try:
        interface = obj.__cuda_array_interface__
    except AttributeError:
        raise UsageError(f"the {what} is not a CUDA array (no __cuda_array_interface__)") from None
    shape = tuple(int(d) for d in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    if interface.get("mask") is not None:
        raise UsageError(f"the {what} is a masked CUDA array; pass its data without the mask")
    strides = interface.get("strides")
    pitch = _row_pitch(shape, tuple(strides), dtype.itemsize) if strides is not None and padded_rows else None
    if strides is not None and pitch is None and not _c_contiguous(shape, tuple(strides), dtype.itemsize):
        raise UsageError(
            f"the {what} is not C-contiguous (strides {tuple(strides)}); pass a contiguous copy, "
            "e.g. tensor.contiguous() or cupy.ascontiguousarray(a)"
        )
    pointer, readonly = interface["data"]
    if pointer == 0 and any(shape):
        raise UsageError(f"the {what} has a null device pointer")
    stream = interface.get("stream") if int(interface.get("version", 2)) >= 3 else None
    if stream == 0:
        raise UsageError(f"the {what}'s __cuda_array_interface__ names stream 0, which the protocol disallows")
    return CudaArrayView(int(pointer), shape, dtype, None if stream is None else int(stream), bool(readonly), pitch)


def _row_pitch(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int | None:
    """The first dimension's stride in bytes where each row is contiguous and rows do not overlap, else None."""
    if len(shape) < 2 or not _c_contiguous(shape[1:], strides[1:], itemsize):
        return None
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    return int(strides[0]) if strides[0] >= row else None


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    """Row-major with no gaps; a dimension of size 1 may carry any stride (PyTorch gives them several)."""
    step = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != step:
            return False
        step *= dim
    return True


# --- DLPack: the other protocol (JAX, and PyTorch/CuPy too) ------------------------------------------------
# dlpack.h: DLDeviceType kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3 (pinned host memory), kDLCUDAManaged = 13;
# DLDataTypeCode kDLInt = 0, kDLUInt = 1, kDLFloat = 2.
DL_CPU, DL_CUDA, DL_CUDA_HOST, DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_KINDS = {0: "i", 1: "u", 2: "f"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):  # the unversioned struct a "dltensor" capsule holds
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def is_dlpack_array(obj) -> bool:
    """A DLPack producer that is not numpy (numpy arrays are taken as they are)."""
    return hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__") and not isinstance(obj, np.ndarray)


def dlpack_device_type(obj) -> int:
    return int(obj.__dlpack_device__()[0])


def dlpack_view(capsule, what: str = "input", padded_rows: bool = False) -> tuple[int, CudaArrayView]:
    """(DLPack device type, the memory) of a ``dltensor`` capsule, which stays the caller's: hold it while the
    memory is in use (its destructor gives the producer its tensor back)."""
    try:
        address = _capsule_pointer(capsule, b"dltensor")
    except ValueError:
        raise UsageError(f"the {what}'s __dlpack__() did not give an unused 'dltensor' capsule") from None
    tensor = _DLManagedTensor.from_address(address).dl_tensor
    dtype = tensor.dtype
    if dtype.code not in _DL_KINDS or dtype.lanes != 1 or dtype.bits % 8:
        raise UsageError(f"the {what} has DLPack type code {dtype.code}, {dtype.bits} bits, {dtype.lanes} lanes; pass float32")
    np_dtype = np.dtype(f"{_DL_KINDS[dtype.code]}{dtype.bits // 8}")
    shape = tuple(int(tensor.shape[i]) for i in range(tensor.ndim))
    pitch = None
    if tensor.strides:  # in elements; NULL means compact row-major
        strides = tuple(int(tensor.strides[i]) * np_dtype.itemsize for i in range(tensor.ndim))
        pitch = _row_pitch(shape, strides, np_dtype.itemsize) if padded_rows else None
        if pitch is None and not _c_contiguous(shape, strides, np_dtype.itemsize):
            raise UsageError(f"the {what} is not C-contiguous (DLPack strides {strides} bytes); pass a contiguous copy")
    pointer = (tensor.data or 0) + int(tensor.byte_offset)
    return int(tensor.device.device_type), CudaArrayView(pointer, shape, np_dtype, None, False, pitch)
