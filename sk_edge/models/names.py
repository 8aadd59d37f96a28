"""The model names sk-edge knows, without importing PyTorch: the build's plan checks a name before any work, and a
build whose stages are all up to date imports no torch at all (a no-op build in about a second)."""

from __future__ import annotations

from ..errors import UsageError

# Ours (registry.OWN_MODELS builds them; tests/test_models.py checks that the two lists agree).
OWN_MODEL_NAMES = ("sknet26-digits", "sknet26", "sknet50", "sknet101")
TIMM_PREFIX = "timm:"


def check_model_name(name: str) -> None:
    """A usage error for a name that is neither one of ours nor timm:NAME (a timm name is checked by timm itself)."""
    if name not in OWN_MODEL_NAMES and not name.startswith(TIMM_PREFIX):
        raise UsageError(
            f"unknown model '{name}'; choose one of: {', '.join(OWN_MODEL_NAMES)}, or timm:NAME for a timm SelectiveKernel "
            "model (`sk-edge models` lists them)"
        )
