"""sk-edge: Selective Kernel Networks to ONNX and TensorRT for NVIDIA edge and desktop GPUs.

``sk_edge.build(...)`` runs ``sk-edge build`` from Python (:mod:`sk_edge.pipeline`); it is
imported on first use, so ``import sk_edge`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["build", "BuildRequest", "BuildOutcome", "__version__"]


def __getattr__(name: str):
    if name in ("build", "BuildRequest", "BuildOutcome"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'sk_edge' has no attribute '{name}'")
