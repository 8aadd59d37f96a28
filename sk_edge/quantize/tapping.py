"""The session calibration reads its tapped tensors from, each read where ONNX Runtime computes it.

On x86-64, ONNX Runtime's CPU provider runs chains of convolutions in a blocked channel layout (NCHWc, its
``com.microsoft.nchwc`` operators) and adds a ``ReorderOutput`` node wherever one of their tensors must be handed back
as NCHW: a graph output, so every tapped tensor of that layout that had none for its NCHW readers already. On SKNet-50
at 224 the 53 tapped tensors added 29 reorders to the 42 of the plain graph (numbers: docs/results.md).

A histogram counts values, not where they sit, and a blocked tensor whose channels fill whole blocks holds exactly
the values of its NCHW twin. So the tapped graph is optimized once by ONNX Runtime and saved (to a scratch folder,
deleted with the session; one a killed run left is deleted by the next), the reorders that only served a tap are removed, and the blocked tensors themselves become
the graph's outputs. A tensor whose channel count ONNX Runtime pads to a whole block keeps its reorder (the padding is
not the tensor's), as does every tensor where no blocked layout was made (ARM, GPU providers): those are read as NCHW.
If the scratch folder cannot be written or ONNX Runtime cannot save or reload the graph, every tensor is read as NCHW:
the values counted are the same, only slower. ``SK_EDGE_TAPPED_LAYOUT=nchw`` reads them all as NCHW (the A/B of
benchmarks/calibration.py, and a way round an ONNX Runtime whose saved graphs misbehave).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from ..backends.onnxruntime import OnnxRuntimeRunner
from ..errors import SkEdgeError

BLOCKED_DOMAIN = "com.microsoft.nchwc"
_OPTIMIZED = "optimized.onnx"
_WITHOUT_REORDERS = "blocked.onnx"
_SCRATCH_PREFIX = "sk-edge-taps-"


@dataclass(frozen=True)
class BlockedTensor:
    """A tapped tensor's blocked twin in ONNX Runtime's optimized graph."""

    source: str  # the ReorderOutput's input: the tensor in the blocked layout
    channels: int  # the tapped tensor's channels (the reorder's ``channels``): the twin must have no more


@dataclass
class TappedRun:
    """A session that hands back the tapped tensors of each batch (values in any order: see the module docstring)."""

    session: Any  # onnxruntime.InferenceSession
    fetched: dict[str, str]  # tapped tensor -> the graph output that holds its values
    blocked: dict[str, BlockedTensor] = field(default_factory=dict)  # the tensors read in the blocked layout

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = list(self.fetched)
        outputs = self.session.run([self.fetched[n] for n in names], {self.input_name: batch})
        tapped = dict(zip(names, outputs))
        for name, twin in self.blocked.items():  # what unpadded() decided from the session's shapes, kept at every run
            if tapped[name].ndim < 2 or tapped[name].shape[1] != twin.channels:
                raise SkEdgeError(
                    f"ONNX Runtime handed back tensor '{name}' in its blocked layout with shape {tapped[name].shape}, "
                    f"not {twin.channels} channels: calibration stopped rather than count other values. Run it with "
                    "SK_EDGE_TAPPED_LAYOUT=nchw, and please report this to sk-edge with your ONNX Runtime version"
                )
        return tapped


def blocked_tensors(optimized: onnx.ModelProto, names: list[str]) -> dict[str, BlockedTensor]:
    """The tensors of ``names`` that ``optimized`` (a graph as ONNX Runtime saved it) reorders out of its blocked layout
    only to hand them back: graph outputs that no node reads."""
    outputs = {o.name for o in optimized.graph.output}
    read = Counter(i for node in optimized.graph.node for i in node.input)
    wanted = set(names) & outputs
    found = {}
    for node in optimized.graph.node:
        if node.domain != BLOCKED_DOMAIN or node.op_type != "ReorderOutput" or node.output[0] not in wanted:
            continue
        channels = next((a.i for a in node.attribute if a.name == "channels"), 0)
        if read[node.output[0]] == 0 and channels > 0:
            found[node.output[0]] = BlockedTensor(node.input[0], channels)
    return found


def without_reorders(optimized: onnx.ModelProto, blocked: dict[str, BlockedTensor]) -> onnx.ModelProto:
    """A copy of ``optimized`` whose outputs are the blocked twins of ``blocked``'s tensors, without their reorders."""
    edited = onnx.ModelProto()
    edited.CopyFrom(optimized)
    kept = [node for node in edited.graph.node if not (node.op_type == "ReorderOutput" and node.output[0] in blocked)]
    del edited.graph.node[:]
    edited.graph.node.extend(kept)
    for output in edited.graph.output:
        if output.name in blocked:
            output.name = blocked[output.name].source
            output.type.tensor_type.ClearField("shape")  # ONNX Runtime infers the blocked shape
    return edited


def unpadded(session, blocked: dict[str, BlockedTensor]) -> dict[str, BlockedTensor]:
    """The tensors of ``blocked`` whose twin, as ONNX Runtime's session shapes it, has exactly their channels."""
    shapes = {o.name: o.shape for o in session.get_outputs()}
    return {
        name: twin
        for name, twin in blocked.items()
        if len(shapes.get(twin.source) or []) > 1 and shapes[twin.source][1] == twin.channels
    }


@contextmanager
def tapped_session(
    tapped: onnx.ModelProto,
    names: list[str],
    options: dict,
    log: Callable[[str], None] = lambda message: None,
    scratch: Path | None = None,
) -> Iterator[TappedRun]:
    """A TappedRun over ``tapped`` (a graph whose outputs include ``names``), open for the ``with`` block.
    ``options``: OnnxRuntimeRunner's keywords (providers, memory_arena, config); ``scratch``: where the optimized
    graph is saved for the while (the system's temporary folder by default)."""
    with ExitStack() as held:
        run = None
        on_cpu = options.get("providers", ["CPUExecutionProvider"])[0] == "CPUExecutionProvider"
        if on_cpu and os.environ.get("SK_EDGE_TAPPED_LAYOUT") != "nchw":
            run = _blocked_run(held, tapped, names, options, log, scratch)
        if run is None:
            runner = held.enter_context(OnnxRuntimeRunner(tapped, dynamic_batch=True, **options))
            run = TappedRun(runner.session, {name: name for name in names})
        try:
            yield run
        finally:
            run.session = None  # the session goes before its scratch folder (a mapped file cannot be removed everywhere)


def _blocked_run(
    held: ExitStack,
    tapped: onnx.ModelProto,
    names: list[str],
    options: dict,
    log: Callable[[str], None],
    scratch: Path | None,
) -> TappedRun | None:
    """A TappedRun reading what it can in the blocked layout; None where nothing can be (said in ``log`` if failed)."""
    try:
        folder = _scratch_folder(scratch)
        # Removed at the end, or left where it cannot be (not an error: the histograms are done by then).
        # TemporaryDirectory's ignore_cleanup_errors still raised on a file that could not be removed (Python 3.11).
        held.callback(shutil.rmtree, folder, ignore_errors=True)
        optimized = _optimized_graph(tapped, folder, options)
        reading = _runner_reading_blocked(optimized, blocked_tensors(optimized, names), folder, options)
        if reading is None:
            return None
        runner, kept = reading
        session = held.enter_context(runner).session
    except Exception as exc:  # noqa: BLE001 - any failure leaves the NCHW path, which counts the very same values
        log(f"  reading every tapped tensor as NCHW: its blocked layout was not available ({_first_line(exc)})")
        return None
    fetched = {name: kept[name].source if name in kept else name for name in names}
    return TappedRun(session, fetched, kept)


def _scratch_folder(parent: Path | None) -> Path:
    """A new folder for the optimized graph, named after this process; those of processes that are gone (killed
    before they could remove theirs: about the model's size each) are removed first."""
    parent = Path(parent or tempfile.gettempdir())
    for left in parent.glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = left.name[len(_SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)) and _untouched_for_a_minute(left):
            shutil.rmtree(left, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-", dir=parent))


def _untouched_for_a_minute(folder: Path) -> bool:
    """A real folder (not a link) unchanged for a minute: a run whose process this one cannot see (another PID
    namespace sharing the folder) reads its files only in the seconds after writing them."""
    try:
        return folder.is_dir() and not folder.is_symlink() and time.time() - folder.stat().st_mtime > 60
    except OSError:
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's, or not ours to ask about: left alone
    return True


def _optimized_graph(tapped: onnx.ModelProto, folder: Path, options: dict) -> onnx.ModelProto:
    """``tapped`` as ONNX Runtime optimizes it for this machine, read back without its weights (left on disk)."""
    saving = {**options, "config": {"session.disable_prepacking": "1"}}  # this session never runs
    with OnnxRuntimeRunner(tapped, dynamic_batch=True, save_optimized_to=folder / _OPTIMIZED, **saving) as runner:
        _ = runner.session  # building it writes the optimized graph
    return onnx.load(str(folder / _OPTIMIZED), load_external_data=False)


def _runner_reading_blocked(
    optimized: onnx.ModelProto, blocked: dict[str, BlockedTensor], folder: Path, options: dict
) -> tuple[OnnxRuntimeRunner, dict[str, BlockedTensor]] | None:
    """A runner over ``optimized`` reading the unpadded tensors of ``blocked`` in the blocked layout, and those
    tensors; None where there are none."""
    while blocked:
        path = folder / _WITHOUT_REORDERS
        onnx.save(without_reorders(optimized, blocked), str(path))  # its weights stay in the optimized graph's file
        runner = OnnxRuntimeRunner(path, optimization="disabled", **options)
        kept = unpadded(runner.session, blocked)
        if kept == blocked:
            return runner, blocked
        runner.close()  # some twins hold padding: their tensors keep their reorders
        blocked = kept
    return None


def _first_line(exc: Exception, most: int = 160) -> str:
    """The end of ``exc``'s first line: ONNX Runtime's messages start with source locations and end with the cause."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= most else "..." + line[-most:]
