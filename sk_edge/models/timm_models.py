"""timm models built from ``timm.layers.SelectiveKernel``.

timm is optional (``pip install 'sk-edge[timm]'``); it is imported only when a
``timm:NAME`` model is asked for.
"""

from __future__ import annotations

from torch import nn

from ..errors import UsageError
from ..preprocess import Preprocess

INSTALL_HINT = "install it with: pip install 'sk-edge[timm]'"


def import_timm():
    try:
        import timm
    except ImportError as exc:
        raise UsageError(f"timm models need timm, which is not importable ({exc}); {INSTALL_HINT}") from None
    return timm


def selective_kernel_class():
    """timm's SelectiveKernel class, or None when timm is not installed."""
    try:
        from timm.layers import SelectiveKernel
    except ImportError:
        return None
    return SelectiveKernel


def sk_model_names() -> list[str]:
    """timm's registered SKNet variants (empty when timm is not installed)."""
    try:
        import timm
    except ImportError:
        return []
    return timm.list_models("sk*")


def create_timm_model(name: str, num_classes: int | None, args: dict) -> nn.Module:
    timm = import_timm()
    if name not in timm.list_models():
        close = [n for n in timm.list_models(f"*{name[:4]}*")][:5] if len(name) >= 4 else []
        hint = f" (similar: {', '.join(close)})" if close else f" (SKNets in timm: {', '.join(sk_model_names())})"
        raise UsageError(f"timm has no model '{name}'{hint}")
    kwargs = dict(args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise UsageError(f"timm:{name} does not accept these model arguments: {exc}") from None


def timm_preprocess(model: nn.Module, input_size: int) -> Preprocess:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    defaults = Preprocess()
    return Preprocess(
        input_size=input_size,
        mean=tuple(cfg.get("mean", defaults.mean)),
        std=tuple(cfg.get("std", defaults.std)),
        crop_pct=float(cfg.get("crop_pct", defaults.crop_pct)),
        interpolation=str(cfg.get("interpolation", defaults.interpolation)),
    )


def timm_total_stride(model: nn.Module) -> int:
    info = getattr(model, "feature_info", None)
    if info:
        return int(info[-1].get("reduction", 32))
    return 32
