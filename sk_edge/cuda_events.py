"""One CUDA stream waiting for another on the GPU, through the CUDA driver library itself.

A CUDA array handed to the runtime names the stream its producer wrote it on (the CUDA Array
Interface's ``stream``). The engine's stream must not read the memory before that work ends, and the
CPU should not block for it either: an event recorded on the producer's stream and waited for on the
engine's (``cuEventRecord`` + ``cuStreamWaitEvent``) orders the two on the GPU. pycuda cannot wrap a
stream handle it did not create, and cuda-python is optional, so the three driver calls go through
ctypes on ``libcuda`` (``nvcuda.dll`` on Windows), which every machine with an NVIDIA driver has.
"""

from __future__ import annotations

import ctypes
import sys

from .errors import SkEdgeError

_CU_EVENT_DISABLE_TIMING = 0x2  # cuda.h: the event orders work only; no timestamp to keep


def _driver() -> ctypes.CDLL:
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise SkEdgeError(f"the CUDA driver library ({name}) cannot be loaded: {exc}") from None


class StreamOrder:
    """Makes ``consumer`` wait (on the GPU) for what is queued on a producer's stream so far.

    Needs the CUDA context current (the runtime pushes it around every call); one event, made on
    first use and destroyed by :meth:`close`."""

    def __init__(self) -> None:
        self._cuda: ctypes.CDLL | None = None
        self._event = ctypes.c_void_p()

    def _call(self, name: str, *args) -> None:
        assert self._cuda is not None
        result = getattr(self._cuda, name)(*args)
        if result != 0:
            raise SkEdgeError(f"CUDA driver call {name} failed with CUresult {result}")

    def wait(self, consumer: int, producer: int) -> None:
        if producer == consumer:
            return  # work on one stream is already in order
        if self._cuda is None:
            self._cuda = _driver()
            self._call("cuEventCreate", ctypes.byref(self._event), ctypes.c_uint(_CU_EVENT_DISABLE_TIMING))
        self._call("cuEventRecord", self._event, ctypes.c_void_p(producer))
        self._call("cuStreamWaitEvent", ctypes.c_void_p(consumer), self._event, ctypes.c_uint(0))

    def close(self) -> None:
        if self._cuda is not None and self._event.value:
            self._cuda.cuEventDestroy_v2(self._event)  # cuda.h maps cuEventDestroy to its _v2 symbol
        self._cuda, self._event = None, ctypes.c_void_p()
