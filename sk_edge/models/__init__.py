"""SKNet model family: our own SKNet-26/50/101 and timm's SelectiveKernel models.

``build_model(name, ...)`` (:mod:`.registry`) turns a model name from the command line into a
PyTorch module in eval mode, with weights loaded and the preprocessing it expects:

- ``sknet26-digits``: the bundled, trained reference model (:mod:`sk_edge.reference`).
- ``sknet26``, ``sknet50``, ``sknet101``: :mod:`sk_edge.models.sknet`; model arguments
  ``branches`` (M), ``groups`` (G), ``reduction`` (r), ``min_dim`` (L), ``base_width``,
  ``stem_width``, ``in_chans``.
- ``timm:NAME``: any timm model (``skresnet18``, ``skresnext50_32x4d``...); model
  arguments go to ``timm.create_model``.

The names are re-exported lazily: importing this package does not import PyTorch.
"""

from __future__ import annotations

from importlib import import_module

_REGISTRY_NAMES = (
    "BuiltModel",
    "build_model",
    "model_names",
    "default_input_size",
    "check_input_size",
    "OWN_MODELS",
    "DEFAULT_INPUT_SIZE",
    "TIMM_PREFIX",
)

__all__ = list(_REGISTRY_NAMES)


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        return getattr(import_module(".registry", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
