"""Make an SKNet graph friendlier to the Jetson DLA before a (legacy) DLA build.

The DLA runs pooling windows of at most 8x8 and no ReduceMean, so the global average
pool of an SK unit's fuse step (and of the head) falls back to the GPU, splitting the
unit into DLA / GPU / DLA segments with a copy each way. A global average over H x W
equals a chain of average pools whose windows multiply to H x W (every window the same
size within a step, no padding), so each GlobalAveragePool whose H and W factor into
parts <= 8 becomes such a chain: 56 = 8 x 7, 28 = 7 x 4, 14 = 7 x 2, 7, 16 = 8 x 2.
A side with a prime factor above 8 (13, 17...) stays a GlobalAveragePool and is reported.

Which layers the DLA then accepts is TensorRT's decision, asked per layer with
``IBuilderConfig.can_run_on_DLA`` at build time and written to ``dla.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

DLA_MAX_POOL_WINDOW = 8


def factor_window(n: int, limit: int = DLA_MAX_POOL_WINDOW) -> list[int] | None:
    """Factors of ``n``, each <= ``limit``, largest first (8 x 7 for 56); None if impossible."""
    factors, rest = [], n
    while rest > 1:
        f = next((d for d in range(min(limit, rest), 1, -1) if rest % d == 0), None)
        if f is None:
            return None
        factors.append(f)
        rest //= f
    return factors or [1]


@dataclass
class DlaPoolingReport:
    rewritten: dict[str, list[list[int]]] = field(default_factory=dict)  # node -> windows
    kept: dict[str, str] = field(default_factory=dict)  # node -> why it stays global

    def as_dict(self) -> dict:
        return {"rewritten": self.rewritten, "kept_global": self.kept}


def chain_global_pools(model: onnx.ModelProto) -> tuple[onnx.ModelProto, DlaPoolingReport]:
    """``model`` with each eligible GlobalAveragePool replaced by AveragePools of window <= 8."""
    graph = gs.import_onnx(shape_inference.infer_shapes(model))
    report = DlaPoolingReport()
    for node in [n for n in graph.nodes if n.op == "GlobalAveragePool"]:
        shape = node.inputs[0].shape
        if not shape or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            report.kept[node.name] = f"input shape {shape} is not static 4-D"
            continue
        h, w = shape[2], shape[3]
        fh, fw = factor_window(h), factor_window(w)
        if fh is None or fw is None:
            report.kept[node.name] = f"{h}x{w} has a prime factor above {DLA_MAX_POOL_WINDOW}"
            continue
        steps = max(len(fh), len(fw))
        fh, fw = fh + [1] * (steps - len(fh)), fw + [1] * (steps - len(fw))
        current, out = node.inputs[0], node.outputs[0]
        node.outputs = []
        for i, (kh, kw) in enumerate(zip(fh, fw)):
            last = i == steps - 1
            nxt = out if last else gs.Variable(f"{node.name}_dla_pool{i}", dtype=current.dtype)
            graph.nodes.append(
                gs.Node(
                    "AveragePool",
                    f"{node.name}_dla_pool{i}",
                    attrs={"kernel_shape": [kh, kw], "strides": [kh, kw]},
                    inputs=[current],
                    outputs=[nxt],
                )
            )
            current = nxt
        report.rewritten[node.name] = [[kh, kw] for kh, kw in zip(fh, fw)]
    graph.cleanup().toposort()
    return gs.export_onnx(graph), report
