"""ONNX Runtime backend: a session built lazily from a path or serialized model.

Like Polygraphy's runners: construction is cheap and remembers *what* to load; the
session is created on first use, so a pipeline can be assembled before anything heavy
happens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntimeRunner:
    """Runs an ONNX model with ONNX Runtime; numpy in, numpy out.

    Args:
        model: path to an .onnx file, or the serialized model bytes.
        providers: execution providers in order of preference; CPU when omitted, which is
            what sk-edge uses to measure numerical parity and INT8 drift.
        threads: intra-op threads; ONNX Runtime's default (all cores) when omitted.
        optimization: ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disabled"``.
        dynamic_batch: run any batch size through a graph exported with a static batch, by
            making dimension 0 of its input and output symbolic. Valid for sk-edge's graphs,
            whose every reshape keeps the batch as -1.
        memory_arena: keep ONNX Runtime's CPU memory arena (faster repeated runs). Off for
            runs that fetch many large tensors, where the arena holds on to their peak.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        providers: list[str] | None = None,
        threads: int | None = None,
        optimization: str = "all",
        dynamic_batch: bool = False,
        memory_arena: bool = True,
    ):
        self.model = model if isinstance(model, bytes) else Path(model)
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.optimization = optimization
        self.dynamic_batch = dynamic_batch
        self.memory_arena = memory_arena
        self._session = None

    def _source(self) -> str | bytes:
        if not self.dynamic_batch:
            return self.model if isinstance(self.model, bytes) else str(self.model)
        import onnx

        proto = onnx.load_from_string(self.model) if isinstance(self.model, bytes) else onnx.load(str(self.model))
        for value in list(proto.graph.input) + list(proto.graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].dim_param = "batch"
        del proto.graph.value_info[:]  # inferred for the old batch; ONNX Runtime re-infers
        return proto.SerializeToString()

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = {
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            }[self.optimization]
            if self.threads:
                opts.intra_op_num_threads = self.threads
            opts.enable_cpu_mem_arena = self.memory_arena
            opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise
            self._session = ort.InferenceSession(self._source(), sess_options=opts, providers=self.providers)
        return self._session

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
