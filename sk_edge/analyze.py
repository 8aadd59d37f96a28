"""Kernel-selection analysis (the SKNet paper's Sec. 4.3), for the reference and the candidate.

The paper enlarges the object about the image centre (1.0x, 1.5x, 2.0x) and finds that in
early SK units the attention on the larger kernel grows with the object, an effect that
fades in deep units. Here, for every SK unit of a two-branch SKNet, the gate of the
rewritten select step is ``g = softmax(z)[small kernel] = sigmoid(z0 - z1)``, so the
attention difference *large minus small* is ``1 - 2g``, averaged over channels and images.
It is measured on the FP32 graph (the reference, equal to PyTorch within the export's
parity tolerance) and on the candidate graph (INT8/FP16) side by side: a quantized model
that no longer selects kernels like its reference is a regression top-1 agreement can hide.

Zooming is a centre crop of 1/scale of the image resized back to the input size, before
the model's own preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from PIL import Image

from . import artifacts, plots
from .backends.onnxruntime import judging_runner
from .backends.runner import Lifecycle
from .errors import SkEdgeError
from .evaluation import SELECTION_IMAGES
from .images import find_images, to_tensor
from .quantize.plan import plan_quantization
from .workdir import FP32_ONNX, GRAPH_NAMES, load_export, load_graph

SCALES = (1.0, 1.5, 2.0)
SELECTION_JSON, SELECTION_PNG = "selection.json", "selection.png"


def gate_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(SK unit, gate tensor) in graph order: the Sigmoid outputs of the attention path."""
    plan = plan_quantization(model)
    gates = []
    for node in model.graph.node:
        if node.op_type == "Sigmoid" and node.name in plan.float_nodes:
            parts = node.name.strip("/").split("/")
            unit = "/".join(parts[: parts.index("sk")]) if "sk" in parts else "/".join(parts[:-1])
            gates.append((unit, node.output[0]))
    return gates


class GateRunner(Lifecycle):
    """Runs a graph and returns its gate tensors (one per SK unit), reduced to (N, C); ``with`` closes its session."""

    def __init__(self, path: Path, gates: list[str]):
        from .quantize.calibration import tapped_model

        self.gates = gates
        self.runner = judging_runner(tapped_model(onnx.load(str(path)), gates))

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        session = self.runner.session
        outs = session.run(self.gates, {session.get_inputs()[0].name: x})
        return [o.astype(np.float64).reshape(o.shape[0], -1) for o in outs]

    def close(self) -> None:
        self.runner.close()


def zoom(image: Image.Image, scale: float) -> Image.Image:
    """The object ``scale`` times larger: centre crop of 1/scale, resized back."""
    if scale == 1.0:
        return image
    w, h = image.size
    cw, ch = w / scale, h / scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return image.resize((w, h), Image.Resampling.BILINEAR, box=box)


def analyze_selection(
    workdir: str | Path,
    images: Path,
    candidate: str = "int8",
    scales: tuple[float, ...] = SCALES,
    count: int = SELECTION_IMAGES,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Per SK unit and scale, mean attention difference (large - small kernel), reference vs candidate."""
    workdir = Path(workdir)
    export = load_export(workdir)
    pre = export.preprocess
    fp32 = onnx.load(str(workdir / FP32_ONNX))
    gates = gate_tensors(fp32)
    if not gates:
        raise SkEdgeError(
            "no two-branch SK gate (Sigmoid) in this graph: the analysis needs M=2 units exported with the "
            "sigmoid select form (`sk-edge export --select-form sigmoid`)"
        )
    load_graph(workdir, candidate)  # there, intact, and made from the current export and calibration
    cand_path = workdir / GRAPH_NAMES[candidate]
    names = [t for _, t in gates]
    paths = find_images(images)[:count]
    pil = []
    for p in paths:
        try:
            with Image.open(p) as im:
                pil.append(im.convert("RGB"))
        except OSError as exc:
            log(f"  skipped unreadable image {p.name}: {exc}")
    if not pil:
        raise SkEdgeError(f"no readable image in '{images}'")
    units: list[dict[str, Any]] = [
        {"unit": unit, "gate": tensor, "reference": {}, "candidate": {}, "gate_abs_diff": {}} for unit, tensor in gates
    ]
    with GateRunner(workdir / FP32_ONNX, names) as ref_run, GateRunner(cand_path, names) as cand_run:
        for scale in scales:
            x = np.stack([to_tensor(zoom(im, scale), pre) for im in pil])
            for u, r, c in zip(units, ref_run(x), cand_run(x)):
                key = f"{scale:g}"
                u["reference"][key] = float(np.mean(1 - 2 * r))
                u["candidate"][key] = float(np.mean(1 - 2 * c))
                u["gate_abs_diff"][key] = float(np.mean(np.abs(r - c)))
    drift = float(np.mean([u["gate_abs_diff"][f"{s:g}"] for u in units for s in scales]))
    doc = {
        "kind": "sk-edge/selection",
        "model": export.model,
        "candidate": cand_path.name,
        "images": len(pil),
        "images_dir": str(images),
        "scales": list(scales),
        "measure": "mean over channels and images of attention(large kernel) - attention(small kernel) = 1 - 2g",
        "selection_drift": drift,
        "units": units,
    }
    artifacts.write_json(workdir / SELECTION_JSON, doc)
    plots.draw_figure(plots.selection_plot, doc, workdir / SELECTION_PNG, log)
    log(f"{len(units)} SK units, {len(pil)} images x {len(scales)} scales; selection drift (mean |g_ref - g_cand|) {drift:.4f}")
    return doc


def selection_drift(workdir: Path, candidate_path: Path, x: np.ndarray) -> float | None:
    """Mean |gate_ref - gate_cand| over SK units, channels and the images ``x``; None without gates."""
    fp32 = onnx.load(str(workdir / FP32_ONNX))
    names = [t for _, t in gate_tensors(fp32)]
    if not names:
        return None
    with GateRunner(workdir / FP32_ONNX, names) as ref_run, GateRunner(candidate_path, names) as cand_run:
        ref, cand = ref_run(x), cand_run(x)
    return float(np.mean([np.mean(np.abs(r - c)) for r, c in zip(ref, cand)]))
