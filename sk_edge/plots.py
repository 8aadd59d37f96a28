"""bench.png and selection.png, drawn with matplotlib (the ``plots`` extra).

matplotlib is optional so that the device install stays light: without it the figures are not
drawn and the caller says so once; the JSON and Markdown reports hold every number either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import artifacts

INSTALL_HINT = "pip install 'sk-edge[plots]' (matplotlib) to draw it"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_figure(draw, doc: dict, path: Path, log) -> bool:
    """``draw(doc, path)`` when matplotlib is here; else the figure is not drawn (an earlier one, now stale, is
    removed) and ``log`` says how to get it. Whether it was drawn."""
    if available():
        return draw(doc, path)
    path.unlink(missing_ok=True)
    log(f"{path.name} not drawn: {INSTALL_HINT}")
    return False


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a CI machine or a headless Jetson
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with artifacts.atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _horizontal() -> dict:
    """boxplot's horizontal switch: ``orientation`` from Matplotlib 3.10, ``vert`` (deprecated there) before."""
    import matplotlib

    major_minor = tuple(int(part) for part in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if major_minor >= (3, 10) else {"vert": False}


def latency_plot(doc: dict, path: Path) -> bool:
    """Latency per configuration as box plots (p5-p95 box, median line, min/max whiskers).

    The axis is logarithmic when the rows span more than a decade (a PyTorch CPU row beside a
    TensorRT engine), so that every row stays readable. False when there is nothing to draw.
    """
    rows = [r for r in doc["results"] if r.get("latencies_ms")]
    if not rows:
        return False
    plt = _pyplot()
    labels = [
        f"{r['config']['backend']} {r['config']['precision']} {r['config']['device']} b{r['config']['batch']}" for r in rows
    ]
    data = [np.asarray(r["latencies_ms"]) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    ax.boxplot(
        data,
        **_horizontal(),
        whis=(0, 100),
        widths=0.6,
        showfliers=False,
        medianprops={"color": "black", "linewidth": 2},
        boxprops={"facecolor": "#78aadc"},
        patch_artist=True,
        tick_labels=labels,
    )
    medians = [float(np.median(d)) for d in data]
    if max(medians) / max(min(medians), 1e-9) > 10:
        ax.set_xscale("log")
    for y, m in enumerate(medians, start=1):
        ax.annotate(f"{m:.2f}", (max(d.max() for d in data), y), xytext=(4, -3), textcoords="offset points", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency per batch, ms")
    ax.set_title(f"sk-edge bench: {doc['model']}", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


def selection_plot(doc: dict, path: Path) -> bool:
    """Attention(large) - attention(small) per SK unit, one colour per object scale; FP32 solid, candidate dashed."""
    units, scales = doc["units"], [f"{s:g}" for s in doc["scales"]]
    if not units:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(1, len(units) + 1)
    for k, scale in enumerate(scales):
        color = f"C{k}"
        ax.plot(x, [u["reference"][scale] for u in units], "-o", color=color, ms=3, label=f"object {scale}x, FP32")
        ax.plot(
            x,
            [u["candidate"][scale] for u in units],
            "--o",
            color=color,
            ms=3,
            mfc="none",
            label=f"object {scale}x, {doc['candidate']}",
        )
    ax.axhline(0.0, color="0.8", lw=1)
    ax.set_xticks(x)
    ax.set_xlabel("SK unit (input side -> output side)")
    ax.set_ylabel("attention(large) - attention(small)")
    ax.set_title(f"SK kernel selection: {doc['model']}", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)
    return True
