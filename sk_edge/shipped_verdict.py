"""Whether the work directory's verdict is about the artifact a serving export ships.

verify.json records the sha256 chain of what it judged (export -> calibration -> graph ->
engine). After a PASS the graph can change under it (``calibrate --method percentile``,
``quantize --force``); a Triton repository or a DeepStream config made then would serve a graph
nobody judged under a verdict that still says ``passed: true``. So a serving export compares the
file it ships with the chain: the same file judged and passed, or the graph an engine was built
from judged and passed (said as such), or it refuses. ``unverified=True`` ships anyway and says
so where the export records what it shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import artifacts
from .errors import SkEdgeError
from .verify import VERIFY_JSON

FIX = "run `sk-edge verify -w {w}` (or the build) to judge it, or pass --unverified to ship it without a verdict"


class NoVerdict(SkEdgeError):
    """The artifact to ship has no passing verdict of its own (none, a failed one, or one about another file)."""


@dataclass(frozen=True)
class ShippedVerdict:
    """What a serving export says of the verdict on the file it ships (``status``: pass, graph-pass, unverified)."""

    status: str
    line: str
    verify_sha256: str | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "line": self.line, "verify_json_sha256": self.verify_sha256}


def judged_artifact(doc: dict) -> tuple[str, str] | None:
    """(file name, sha256) of what verify.json judged: the engine, else the graph, else the FP32 export."""
    chain = doc.get("chain") or {}
    for section in ("engine", "graph"):
        if chain.get(section):
            return next(iter(chain[section].items()))
    export = chain.get("export") or {}
    fp32 = next(((k, v) for k, v in export.items() if k.endswith(".onnx")), None)
    return fp32


def check(workdir: Path, shipped: Path, built_from: tuple[str, str] | None = None, unverified: bool = False) -> ShippedVerdict:
    """The verdict on ``shipped`` (a file in ``workdir``); ``built_from`` is (graph name, sha256) for an engine.

    Raises NoVerdict when there is no passing verdict on that very file (or on the graph the engine
    was built from), unless ``unverified``.
    """
    fix = FIX.format(w=workdir)
    doc = artifacts.read_json(workdir / VERIFY_JSON) or {}
    judged = judged_artifact(doc) if doc else None
    sha = artifacts.sha256_file(shipped)
    if judged is None:
        problem = (
            f"{shipped.name} has no verdict ({VERIFY_JSON} is {'unreadable' if (workdir / VERIFY_JSON).exists() else 'absent'})"
        )
    elif judged == (shipped.name, sha) or (built_from is not None and judged == built_from):
        if doc.get("passed") is True:
            verify_sha = artifacts.sha256_file(workdir / VERIFY_JSON)
            if judged[0] == shipped.name:
                return ShippedVerdict("pass", f"verdict PASS on {shipped.name} ({VERIFY_JSON})", verify_sha)
            return ShippedVerdict(
                "graph-pass",
                f"verdict PASS on {judged[0]}, the graph {shipped.name} was built from, on "
                f"ONNX Runtime; the engine itself was not judged (sk-edge verify --candidate engine on "
                "the device)",
                verify_sha,
            )
        problem = f"the verdict on {shipped.name} FAILED ({'; '.join(doc.get('broken') or ['see verify.md'])})"
    elif judged[0] == shipped.name or (built_from is not None and judged[0] == built_from[0]):
        problem = (
            f"{VERIFY_JSON} judged an earlier {judged[0]} (sha256 {judged[1][:12]}...), not the one here: the verdict is stale"
        )
    else:
        problem = f"{VERIFY_JSON} judged {judged[0]}, not {shipped.name}"
    if unverified:
        return ShippedVerdict("unverified", f"shipped without a verdict (--unverified): {problem}")
    raise NoVerdict(f"{problem}; {fix}")
