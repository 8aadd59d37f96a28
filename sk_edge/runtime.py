"""Run an sk-edge TensorRT or TensorRT-RTX engine from numpy or GPU arrays: small enough to paste into a camera loop.

    from sk_edge.runtime import Engine

    engine = Engine("workdir/model.int8.engine")      # refuses an engine built elsewhere
    logits = engine(batch)                            # float32 NCHW in, float32 logits out
    engine(cuda_tensor, out=cuda_logits)              # already on the GPU (__cuda_array_interface__): no host copy

A TensorRT-RTX engine (``model.int8.rtx.engine``) loads the same way: its header is checked
against this machine first (``Runtime.get_engine_validity``), and the kernels TensorRT-RTX
compiles for this GPU are kept in ``model.int8.rtx.runtime.cache`` beside it for the next start.

One CUDA stream; pinned host buffers and device buffers allocated once per input shape
(never in the call); host-to-device copy, ``execute_async_v3`` and device-to-host copy
queued on the stream, one synchronisation at the end. I/O names, shapes and types come
from the engine, never from constants. ``cuda_graph=True`` captures the enqueue once per
shape and replays it (through cuda-python's driver bindings: pycuda has no stream capture),
which saves CPU launch overhead on small Jetson CPUs.

Needs TensorRT and pycuda (``pip install 'sk-edge[tensorrt]'``, or JetPack's bindings), or for
TensorRT-RTX engines ``pip install 'sk-edge[rtx]'`` and pycuda.
"""

from __future__ import annotations

import sys
from typing import Any
from pathlib import Path

import numpy as np

from .backends.tensorrt import (
    TensorRTUnavailable,
    TrtFeatures,
    engine_mismatch,
    engine_sidecar_path,
    gpu_identity,
    import_tensorrt,
    rtx_header_version,
    same_tensorrt_version,
)
from . import cuda_python
from .cuda_events import StreamOrder
from .device_arrays import (
    DL_CPU,
    DL_CUDA,
    DL_CUDA_MANAGED,
    CudaArrayView,
    cuda_array_view,
    dlpack_device_type,
    dlpack_view,
    is_cuda_array,
    is_dlpack_array,
)
from .errors import SkEdgeError, UsageError
from .frame_kernels import FramePreprocessor, device_frame_view, frame_planes
from .sidecars import EngineInfo
from .workdir import engine_target, runtime_cache_name


def import_pycuda():
    """``pycuda.driver`` with a context on device 0, or :class:`TensorRTUnavailable`."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise TensorRTUnavailable("pycuda is not installed (pip install 'sk-edge[tensorrt]')") from None
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise TensorRTUnavailable("no CUDA GPU is visible (pycuda found 0 devices)")
    except cuda.Error as exc:
        raise TensorRTUnavailable(f"the CUDA driver is not usable: {exc}") from None
    return cuda


class Engine:
    """A deserialized TensorRT engine with its buffers, stream and execution context.

    Holds GPU resources, so it follows Polygraphy's runner lifecycle: ``close()`` (or leaving a
    ``with Engine(...) as engine:`` block) frees the device buffers, the CUDA graph, the
    execution context, engine and runtime, and releases the CUDA context it retained. An app
    that loads and unloads models keeps no memory of the ones it dropped.
    """

    def __init__(
        self,
        path: str | Path,
        cuda_graph: bool = False,
        check_sidecar: bool = True,
        trt=None,
        cuda=None,
        gpu: dict | None = None,
        stage_times: bool = False,
    ):
        """``trt``, ``cuda`` (``pycuda.driver``) and ``gpu`` default to what is installed here. ``stage_times``:
        time each call's copy in, execution and copy out with CUDA events (``last_stages_ms``; the plain enqueue
        only, so not with ``cuda_graph``)."""
        path = Path(path)
        if stage_times and cuda_graph:
            raise UsageError("stage_times times the plain enqueue; it cannot be used with cuda_graph=True")
        if not path.is_file():
            raise SkEdgeError(f"engine file '{path}' does not exist; build it with `sk-edge build`")
        self._closed = True  # until everything below exists
        self._runtime_cache: RuntimeCache | None = None
        sidecar: EngineInfo | None = read_sidecar(path) if check_sidecar else _sidecar_if_readable(path)
        # The sidecar says which TensorRT made the engine (TensorRT or TensorRT-RTX); without one, the file name.
        self.trt = trt or import_tensorrt(sidecar.target if sidecar is not None else engine_target(path.name))
        features = TrtFeatures.of(self.trt)
        if check_sidecar and sidecar is not None:  # read_sidecar returns one or raises
            self._check_sidecar(path, sidecar, gpu or gpu_identity())
        plan = path.read_bytes()
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        if features.rtx:  # before any CUDA work: a foreign or damaged engine is refused in one line
            why = rtx_engine_invalid(self.trt, self.runtime, plan)
            if why:
                raise SkEdgeError(f"'{path}' cannot run here: {why}")
        self.cuda = cuda or import_pycuda()
        # Device 0's primary context, shared with any other CUDA user in the process.
        self._context = self.cuda.Device(0).retain_primary_context()
        self._context.push()
        try:
            self._load(path, plan, sidecar, features, stage_times)
        finally:
            self._context.pop()
        self.cuda_graph = cuda_graph
        self.preprocess = sidecar.preprocess if sidecar is not None else None  # for infer_frames
        self._shape: tuple[int, ...] | None = None
        self._graph: Any = None  # the instantiated CUDA graph (a cuda-python handle)
        self._device: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        self._stream_order = StreamOrder()  # a CUDA array's producer stream before the engine's
        self.last_stages_ms: dict[str, float] | None = None
        self._pending: Pending | None = None  # the call in flight, if its wait() has not come yet
        self._frames: FramePreprocessor | None = None  # enqueue_frames' GPU preprocessing, made at first use
        self._closed = False

    def _load(self, path: Path, plan: bytes, sidecar: EngineInfo | None, features: TrtFeatures, stage_times: bool) -> None:
        """The engine deserialized, its execution context, stream, events and I/O tensors (in the pushed CUDA context)."""
        if sidecar is not None and sidecar.dla_core is not None:
            # Must be set before deserializing: the engine runs on the core the runtime names,
            # so an engine built for core 1 would otherwise run on core 0.
            self.runtime.DLA_core = sidecar.dla_core
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise SkEdgeError(f"{features.name} could not load '{path}' (see its messages above); rebuild it")
        if features.runtime_cache:
            cache = self._runtime_cache = RuntimeCache(self.engine, path.with_name(runtime_cache_name(path.name)))
            self.context = self.engine.create_execution_context(cache.config)
        else:
            self.context = self.engine.create_execution_context()
        self.stream = self.cuda.Stream()
        # Four events: before the copy in, after it, after the execution, after the copy out.
        self._marks = [self.cuda.Event() for _ in range(4)] if stage_times else None
        self.inputs, self.outputs = self._io_tensors()

    def _io_tensors(self) -> tuple[list[tuple[str, np.dtype]], list[tuple[str, np.dtype]]]:
        """(name, dtype) of the engine's inputs and of its outputs, as the engine declares them."""
        inputs: list[tuple[str, np.dtype]] = []
        outputs: list[tuple[str, np.dtype]] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            (inputs if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT else outputs).append((name, dtype))
        return inputs, outputs

    def _check_sidecar(self, path: Path, sidecar: EngineInfo, gpu: dict | None) -> None:
        why = engine_mismatch(sidecar, self.trt.__version__, gpu)
        if why:
            raise SkEdgeError(refusal_message(path, sidecar, why))

    def close(self) -> None:
        """Free the engine's GPU resources; the Engine cannot run afterwards. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._context.push()
        try:
            if self._pending is not None:  # nothing is freed under work still queued on the stream
                self.stream.synchronize()
                self._pending = None
            if self._graph is not None:
                _cuda_driver().cuGraphExecDestroy(self._graph)
                self._graph = None
            self._stream_order.close()
            if self._frames is not None:
                self._frames.close()
                self._frames = None
            self._marks = None
            for buffer in self._device.values():
                free = getattr(buffer, "free", None)  # pycuda's DeviceAllocation
                if free is not None:
                    free()
            self._device, self._host = {}, {}
            if self._runtime_cache is not None:  # the kernels compiled for this GPU, for the next run
                self._runtime_cache.save()
            # TensorRT objects release their memory when the last reference goes, context first.
            del self.context, self._runtime_cache, self.engine, self.runtime
            self.stream = None
        finally:
            self._context.pop()
            detach = getattr(self._context, "detach", None)  # give back the retained primary context
            if detach is not None:
                detach()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def input_name(self) -> str:
        return self.inputs[0][0]

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Buffers for an input of ``shape`` (done once per shape, outside the timed call)."""
        name, dtype = self.inputs[0]
        if not self.context.set_input_shape(name, shape):
            raise UsageError(f"input shape {shape} is outside the engine's profile for '{name}'")
        self._host, self._device = {}, {}
        for tensor, tdtype in self.inputs + self.outputs:
            tshape = tuple(self.context.get_tensor_shape(tensor))
            self._host[tensor] = self.cuda.pagelocked_empty(tshape, tdtype)
            self._device[tensor] = self.cuda.mem_alloc(self._host[tensor].nbytes)
            self.context.set_tensor_address(tensor, int(self._device[tensor]))
        self._shape, self._graph = shape, None

    def _enqueue(self, source: CudaArrayView | None = None, target: CudaArrayView | None = None) -> None:
        """Queue input copy, engine and output copy; a CUDA array in or out replaces that copy."""
        name, output = self.input_name, self.outputs[0][0]
        self._mark(0)
        if source is None:
            self.cuda.memcpy_htod_async(self._device[name], self._host[name], self.stream)
        elif source.stream is not None:
            self._stream_order.wait(self.stream.handle, source.stream)
        # Bound every call: a CUDA array's address is its own, and the next numpy call needs ours back.
        self.context.set_tensor_address(name, source.pointer if source is not None else int(self._device[name]))
        self.context.set_tensor_address(output, target.pointer if target is not None else int(self._device[output]))
        self._mark(1)
        if not self.context.execute_async_v3(self.stream.handle):
            raise SkEdgeError("TensorRT failed to enqueue the engine (see its messages above)")
        self._mark(2)
        if target is None:
            self.cuda.memcpy_dtoh_async(self._host[output], self._device[output], self.stream)
        self._mark(3)

    def _mark(self, index: int) -> None:
        if self._marks is not None:
            self._marks[index].record(self.stream)

    def _read_marks(self) -> None:
        """The stage times of the call just synchronised (pycuda's Event.time_since: milliseconds)."""
        if self._marks is not None:
            m = self._marks
            self.last_stages_ms = {
                "host_to_device": m[1].time_since(m[0]),
                "inference": m[2].time_since(m[1]),
                "device_to_host": m[3].time_since(m[2]),
            }

    def __call__(self, x, out=None):
        """Logits for the NCHW batch ``x``: a numpy array, or a CUDA array already on the GPU (blocks; see enqueue)."""
        return self.enqueue(x, out).wait()

    def enqueue(self, x, out=None) -> "Pending":
        """Queue inference of the NCHW batch ``x`` on the engine's stream and return at once.

        ``x`` is a numpy array or a CUDA array (a PyTorch CUDA tensor, a CuPy array: anything with
        ``__cuda_array_interface__``), which is read where it lies, with no copy through the host; the
        engine's stream waits on the GPU for the stream the array names. ``out``, a CUDA array of the
        output's shape and type, receives the logits on the GPU; without it they come back as numpy.
        The returned :class:`Pending`'s ``wait()`` gives the logits; meanwhile the caller prepares the
        next frame (its preprocessing overlaps this inference). A numpy input is copied into the
        engine's pinned staging buffer before this returns, so the caller may reuse it. One call is in
        flight at a time: the next ``enqueue`` first completes this one (its result is kept for its
        ``wait()``), because both use the engine's buffers. Device arrays run the plain enqueue; a CUDA
        graph (``cuda_graph=True``) is for numpy inputs, whose buffers stay where it captured them.
        """
        self._check_open()
        source, held, x = self._device_input(x)
        shape, dtype = (source.shape, source.dtype) if source is not None else self._host_input(x)
        self._check_input(shape, dtype, "a CUDA array" if source is not None else "a numpy array")

        def queue(target: CudaArrayView | None) -> None:
            if source is None:
                np.copyto(self._host[self.input_name], x)
            if source is None and target is None and self.cuda_graph:
                self._replay_graph()
            else:
                self._enqueue(source, target)

        return self._queue(tuple(shape), out, queue, held)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this Engine was closed; create a new one")

    def _queue(self, shape: tuple[int, ...], out, queue, held) -> "Pending":
        """The call's frame: the previous call completed, buffers for ``shape``, ``queue(target)`` run in the
        engine's CUDA context, a completion event recorded; ``held`` kept alive until the call is waited for."""
        target = cuda_array_view(out, "output") if out is not None else None
        if self._pending is not None:
            self._pending.wait()  # its buffers are about to be reused: its result is kept first
        self._context.push()
        try:
            if shape != self._shape:
                self._allocate(shape)
            if target is not None:
                self._check_output(target)
            queue(target)
            finished = self.cuda.Event()
            finished.record(self.stream)
        finally:
            self._context.pop()
        self._pending = Pending(self, finished, out if target is not None else None, held=(held, out))
        return self._pending

    def _device_input(self, x) -> tuple[CudaArrayView | None, Any, Any]:
        """(the GPU memory ``x`` lies in, or None; what must stay alive while the engine reads it; ``x``, as numpy
        when it is a DLPack array in host memory)."""
        if is_cuda_array(x):
            return cuda_array_view(x), x, x
        if not is_dlpack_array(x):
            return None, None, x
        kind = dlpack_device_type(x)
        if kind == DL_CPU:
            return None, None, np.from_dlpack(x)
        if kind not in (DL_CUDA, DL_CUDA_MANAGED):
            raise UsageError(f"the input's DLPack device type {kind} is neither the CPU nor a CUDA GPU")
        # Given the engine's stream, the producer orders its pending work before it (the DLPack protocol).
        capsule = x.__dlpack__(stream=self.stream.handle)
        _, view = dlpack_view(capsule)
        return view, capsule, x  # the capsule holds the producer's tensor until the inference is done

    def _finish(self, pending: "Pending"):
        """Block until ``pending``'s work is done; its logits (the caller's CUDA array, or a numpy copy)."""
        if self._closed:
            raise UsageError("this Engine was closed before the inference was waited for")
        self._context.push()
        try:
            pending.event.synchronize()
            self._read_marks()
        finally:
            self._context.pop()
        if self._pending is pending:
            self._pending = None
        return pending.out if pending.out is not None else self._host[self.outputs[0][0]].copy()

    @staticmethod
    def _host_input(x) -> tuple[tuple[int, ...], np.dtype]:
        if not isinstance(x, np.ndarray):
            raise UsageError(f"input must be a numpy array or a CUDA array (__cuda_array_interface__), got {type(x).__name__}")
        return tuple(x.shape), x.dtype

    def _check_input(self, shape: tuple[int, ...], dtype: np.dtype, kind: str) -> None:
        expected = self.inputs[0][1]
        if len(shape) != 4:
            raise UsageError(f"input must be 4-D NCHW, got {kind} of shape {shape}")
        if dtype != expected:
            raise UsageError(f"input must be {expected}, got {dtype} (convert it to {expected} first)")

    def _check_output(self, target: CudaArrayView) -> None:
        name, dtype = self.outputs[0]
        shape = self._host[name].shape
        if target.shape != shape or target.dtype != dtype or target.readonly:
            raise UsageError(
                f"out must be a writable {dtype} CUDA array of shape {shape}, "
                f"got {target.dtype} {target.shape}{' (read-only)' if target.readonly else ''}"
            )

    def infer_frames(self, frames, fmt: str = "rgb", matrix: str = "bt601", full_range: bool = False, out=None):
        """Camera frames in pixel format ``fmt`` (sk_edge.pixels) to logits, one row per frame (blocks; see
        enqueue_frames)."""
        return self.enqueue_frames(frames, fmt, matrix, full_range, out).wait()

    def enqueue_frames(self, frames, fmt: str = "rgb", matrix: str = "bt601", full_range: bool = False, out=None):
        """Queue camera frames (one, or a list run as one batch) in pixel format ``fmt`` and return a :class:`Pending`.

        Preprocessed as the host judged the model (the sidecar's preprocessing; YUV decoded with ``matrix``,
        ``"bt601"`` or ``"bt709"``, and ``full_range`` as the camera says). numpy frames are preprocessed on the
        CPU. Frames already in GPU memory (CUDA arrays, CUDA DLPack tensors; rows may be padded) are
        preprocessed on the GPU, on the engine's stream, by the C++ runtime's kernels (compiled with NVRTC at the
        first such call; needs cuda-python): no copy through the host, the same bytes as the CPU path. They must
        stay unchanged until the call is waited for. ``out`` as in :meth:`enqueue`.
        """
        self._check_open()
        if self.preprocess is None:
            raise UsageError("this engine has no sidecar, so its preprocessing is unknown: pass NCHW tensors to engine(x)")
        frames = [frames] if isinstance(frames, np.ndarray) or not isinstance(frames, (list, tuple)) else list(frames)
        if not frames:
            raise UsageError("no frames given")
        # A DLPack tensor in host memory (a PyTorch CPU tensor) is a numpy frame.
        frames = [np.from_dlpack(f) if is_dlpack_array(f) and dlpack_device_type(f) == DL_CPU else f for f in frames]
        if all(isinstance(f, np.ndarray) for f in frames):
            return self.enqueue(frames_to_batch(frames, self.preprocess, fmt, matrix, full_range), out)
        found = [device_frame_view(f, self.stream.handle) for f in frames]
        views = [v for v in found if v is not None]
        if len(views) != len(frames):
            raise UsageError("frames are all numpy arrays or all in GPU memory (CUDA arrays, CUDA DLPack tensors), not a mix")
        located = [frame_planes(view, fmt, matrix, full_range) for view, _ in views]
        pre = self.preprocess
        shape = (len(frames), 3, pre.height, pre.width)
        self._check_input(shape, np.dtype(np.float32), "camera frames preprocessed to float32")

        def queue(target: CudaArrayView | None) -> None:
            kernels = self._frame_kernels()
            base, step = int(self._device[self.input_name]), 3 * pre.height * pre.width * 4
            for index, ((view, _), frame) in enumerate(zip(views, located)):
                if view.stream is not None:  # the producer's pending writes come first
                    self._stream_order.wait(self.stream.handle, view.stream)
                kernels.enqueue(frame, pre, base + index * step, self.stream.handle)
            self._enqueue(CudaArrayView(base, shape, np.dtype(np.float32), None, False), target)

        return self._queue(shape, out, queue, [keep for _, keep in views])

    def _frame_kernels(self) -> FramePreprocessor:
        """The GPU preprocessing, made at the first call with frames in GPU memory (in the engine's context)."""
        if self._frames is None:
            major, minor = self.cuda.Device(0).compute_capability()
            self._frames = FramePreprocessor(_cuda_driver("frames in GPU memory"), (major, minor))
        return self._frames

    def _replay_graph(self) -> None:
        # pycuda (2026.1 checked) has no stream capture, so the graph goes through NVIDIA's
        # cuda-python driver bindings on pycuda's stream handle. TensorRT asks for one plain
        # enqueue after a shape change before capture ("CUDA Graphs" in its developer guide).
        driver = _cuda_driver()
        stream = driver.CUstream(self.stream.handle)
        if self._graph is None:
            self._enqueue()
            self.stream.synchronize()
            _check(driver.cuStreamBeginCapture(stream, driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))
            self._enqueue()
            graph = _check(driver.cuStreamEndCapture(stream))
            self._graph = _check(driver.cuGraphInstantiate(graph, 0))
        _check(driver.cuGraphLaunch(self._graph, stream))


class Pending:
    """One inference :meth:`Engine.enqueue` queued: ``wait()`` blocks until it is done and returns its logits."""

    def __init__(self, engine: Engine, event, out, held: Any = None):
        self.event = event  # a pycuda Event recorded on the engine's stream after the copy out
        self.out = out
        self._held = held  # the caller's GPU arrays (or DLPack capsule), alive until the work is done
        self._engine = engine
        self._result: Any = None
        self._waited = False

    def done(self) -> bool:
        """Whether the GPU has finished it (never blocks)."""
        return self._waited or bool(self.event.query())

    def wait(self):
        if not self._waited:
            self._result = self._engine._finish(self)
            self._waited, self._held = True, None
        return self._result


class RuntimeCache:
    """TensorRT-RTX's runtime cache: the kernels it compiles for this GPU when an engine loads (JIT), kept in a
    file beside the engine so that the next run starts without compiling them again.

    A cache made for another GPU, TensorRT-RTX or CUDA release is not used by TensorRT-RTX and is
    replaced on :meth:`save` ("Working with Runtime Cache"). Saving is atomic; a folder that
    cannot be written keeps the old file and costs only the compile time of the next start.
    """

    def __init__(self, engine, path: Path):
        self.path = path
        self.config = engine.create_runtime_config()
        self.cache = self.config.create_runtime_cache()
        if path.is_file():
            self.cache.deserialize(path.read_bytes())
        self.config.set_runtime_cache(self.cache)

    def save(self) -> None:
        from .artifacts import atomic_output

        try:
            with atomic_output(self.path) as tmp:
                tmp.write_bytes(bytes(self.cache.serialize()))
        except OSError as exc:
            print(
                f"sk-edge: warning: the TensorRT-RTX runtime cache was not saved to '{self.path}': {exc.strerror}",
                file=sys.stderr,
            )


# The bits of EngineInvalidityDiagnostics (TensorRT-RTX 1.1 on), in the C++ runtime's order and words.
_INVALIDITY_DIAGNOSTICS = (
    "VERSION_MISMATCH",
    "UNSUPPORTED_CC",
    "OLD_CUDA_DRIVER",
    "OLD_CUDA_RUNTIME",
    "INSUFFICIENT_GPU_MEMORY",
    "MALFORMED_ENGINE",
    "CUDA_ERROR",
)


def frames_to_batch(frames, pre, fmt: str = "rgb", matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """(N, 3, H, W) float32: each frame converted to RGB (sk_edge.pixels.to_rgb) and preprocessed (sk_edge.images)."""
    from PIL import Image

    from .images import to_tensor
    from .pixels import to_rgb

    frames = [frames] if isinstance(frames, np.ndarray) else list(frames)
    if not frames:
        raise UsageError("no frames given")
    return np.stack([to_tensor(Image.fromarray(to_rgb(f, fmt, matrix, full_range)), pre) for f in frames])


def rtx_engine_invalid(trt, runtime, plan: bytes) -> str | None:
    """Why TensorRT-RTX cannot load ``plan`` on this machine, or None.

    The header's own release is compared first (an engine is tied to the TensorRT-RTX release that
    built it, and a machine without a driver cannot ask the runtime), then
    ``Runtime.get_engine_validity`` reads the header against this GPU, driver and release.
    """
    made_by = rtx_header_version(plan)
    if made_by is None:
        return "it is not a TensorRT-RTX engine (its header is not one); rebuild it with `sk-edge build --target rtx`"
    if not same_tensorrt_version(made_by, trt.__version__):
        return f"it was built by TensorRT-RTX {made_by} and this is TensorRT-RTX {trt.__version__}; rebuild it with this release"
    validity, diagnostics = runtime.get_engine_validity(plan[: runtime.engine_header_size])
    if validity == trt.EngineValidity.INVALID:
        reasons = [
            name.lower().replace("_", " ")
            for name in _INVALIDITY_DIAGNOSTICS
            if int(diagnostics) & int(getattr(trt.EngineInvalidityDiagnostics, name))
        ]
        return (
            "TensorRT-RTX says the engine is invalid on this machine ("
            + (", ".join(reasons) if reasons else "no usable CUDA driver or GPU")
            + ")"
        )
    return None


def refusal_message(path: Path, sidecar: EngineInfo, why: str) -> str:
    """Why the engine at ``path`` is refused, and the command that rebuilds it (the C++ runtime words it the same)."""
    target = " --target rtx" if sidecar.target == "rtx" else ""
    return (
        f"'{path}' cannot run here: {why}; rebuild it on this device with "
        f"`sk-edge build --from {path.parent} --precision {sidecar.precision}{target}`"
    )


def read_sidecar(path: Path) -> EngineInfo:
    """The sidecar of the engine at ``path``, schema and fields checked; a one-line error naming the fix otherwise."""
    from .artifacts import read_json

    source = engine_sidecar_path(path)
    doc = read_json(source)
    if doc is None:
        raise SkEdgeError(
            f"'{source}' is missing or unreadable, so '{path.name}' cannot be checked; rebuild with `sk-edge build`"
        )
    return EngineInfo.from_doc(doc, source)


def _sidecar_if_readable(path: Path) -> EngineInfo | None:
    """check_sidecar=False: the sidecar's DLA core when it has a valid one, nothing checked."""
    try:
        return read_sidecar(path)
    except SkEdgeError:
        return None


def _cuda_driver(need: str = "cuda_graph=True"):
    """cuda-python's driver bindings; ``need`` names what asked for them in the error where they are missing."""
    return cuda_python.bindings("driver", need)


def _check(returned):
    """A cuda-python driver call of the CUDA graph: its value(s), or a SkEdgeError."""
    return cuda_python.result(returned, "CUDA graph call")
