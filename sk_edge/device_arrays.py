"""Arrays already in GPU memory, as the Python runtime takes them: the CUDA Array Interface.

PyTorch CUDA tensors, CuPy arrays and Numba device arrays all expose ``__cuda_array_interface__``
(version 2 or 3 of NVIDIA's protocol, https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html):
a dict with the device pointer, shape, type string, strides and, from version 3, the stream the
producer last wrote the data on. :func:`cuda_array_view` reads it into one checked record, so the
runtime binds the memory directly (no copy through the host) and waits for the producer's stream.
Nothing here needs CUDA: the protocol is plain Python data, tested on this machine without a GPU.
"""

from __future__ import annotations

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

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def is_cuda_array(obj) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


def cuda_array_view(obj, what: str = "input") -> CudaArrayView:
    """The device memory ``obj`` exposes; a one-line :class:`UsageError` for what the runtime cannot bind."""
    try:
        interface = obj.__cuda_array_interface__
    except AttributeError:
        raise UsageError(f"the {what} is not a CUDA array (no __cuda_array_interface__)") from None
    shape = tuple(int(d) for d in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    if interface.get("mask") is not None:
        raise UsageError(f"the {what} is a masked CUDA array; pass its data without the mask")
    strides = interface.get("strides")
    if strides is not None and not _c_contiguous(shape, tuple(strides), dtype.itemsize):
        raise UsageError(f"the {what} is not C-contiguous (strides {tuple(strides)}); pass a contiguous copy, "
                         "e.g. tensor.contiguous() or cupy.ascontiguousarray(a)")
    pointer, readonly = interface["data"]
    if pointer == 0 and any(shape):
        raise UsageError(f"the {what} has a null device pointer")
    stream = interface.get("stream") if int(interface.get("version", 2)) >= 3 else None
    if stream == 0:
        raise UsageError(f"the {what}'s __cuda_array_interface__ names stream 0, which the protocol disallows")
    return CudaArrayView(int(pointer), shape, dtype, None if stream is None else int(stream), bool(readonly))


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    """Row-major with no gaps; a dimension of size 1 may carry any stride (PyTorch gives them several)."""
    step = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != step:
            return False
        step *= dim
    return True
