"""The model registry: names on the command line -> PyTorch modules with weights and preprocessing.

See the package docstring (:mod:`sk_edge.models`) for the names it knows.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .. import reference
from ..errors import UsageError
from ..preprocess import Preprocess, PreprocessRequest, parse_size, resolve
from . import sknet
from .names import TIMM_PREFIX, check_model_name
from .weights import apply_state_dict, checkpoint_preprocess, load_state_dict

OWN_MODELS: dict[str, Callable[..., sknet.SKNet]] = {
    reference.NAME: reference.build,
    "sknet26": sknet.sknet26,
    "sknet50": sknet.sknet50,
    "sknet101": sknet.sknet101,
}
DEFAULT_INPUT_SIZE = 224


@dataclass
class BuiltModel:
    """A model ready for export, and what the later stages need to know about it."""

    name: str
    module: nn.Module
    preprocess: Preprocess
    total_stride: int
    family: str  # "sknet" or "timm"
    args: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None  # the file the weights came from; None: random initialisation
    preprocess_sources: dict = field(default_factory=dict)  # field -> where its value came from
    class_names: list[str] | None = None  # class k's name, from --class-names or the class folders
    checkpoint_accuracy: dict | None = None  # the top-1 accuracy the checkpoint records (weights.checkpoint_accuracy)


def _own_model_args() -> set[str]:
    # The depth (layers) is what names the model; everything else may change.
    return {p for p in inspect.signature(sknet.SKNet).parameters} - {"num_classes", "layers"}


def default_input_size(name: str) -> int:
    return reference.INPUT_SIZE if name == reference.NAME else DEFAULT_INPUT_SIZE


def model_names() -> list[str]:
    from .timm_models import sk_model_names

    return list(OWN_MODELS) + [TIMM_PREFIX + n for n in sk_model_names()]


def check_input_size(input_size: int | tuple[int, int], total_stride: int, model_name: str) -> None:
    if isinstance(input_size, tuple):
        for side in input_size:
            check_input_size(side, total_stride, model_name)
        return
    if input_size < total_stride or input_size % total_stride:
        lower = max(total_stride, input_size // total_stride * total_stride)
        raise UsageError(
            f"--input-size {input_size} does not suit {model_name}, which downsamples by "
            f"{total_stride}: use a multiple of {total_stride} (e.g. {lower} or {lower + total_stride})"
        )


def build_model(
    name: str,
    num_classes: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    weights: str | Path | None = None,
    args: dict[str, Any] | None = None,
    preprocess: list[PreprocessRequest] | None = None,
) -> BuiltModel:
    """Create the model called ``name``, load ``weights`` into it and put it in eval mode.

    The reference model (``sknet26-digits``) comes with its trained weights unless other
    weights, classes or model arguments are given. The preprocessing is the model's own
    (64 px for the reference model, 224 otherwise; timm's pretrained config for timm models),
    overridden field by field by what the checkpoint carries, then by ``preprocess`` (requests,
    the first winning), then by ``input_size``.
    """
    args = dict(args or {})
    default_size = default_input_size(name)
    if name.startswith(TIMM_PREFIX):
        from .timm_models import create_timm_model, timm_preprocess, timm_total_stride

        module = create_timm_model(name[len(TIMM_PREFIX) :], num_classes, args)
        built = BuiltModel(
            name=name,
            module=module,
            preprocess=timm_preprocess(module, default_size),
            total_stride=timm_total_stride(module),
            family="timm",
            args=args,
        )
        defaults = "timm's pretrained config"
    elif name in OWN_MODELS:
        allowed = _own_model_args()
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise UsageError(f"{name} has no model argument '{unknown[0]}'; its arguments are: {', '.join(sorted(allowed))}")
        classes = {} if num_classes is None else {"num_classes": num_classes}
        try:
            module = OWN_MODELS[name](**args, **classes)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"cannot build {name} with {args}: {exc}") from None
        preprocess_default = Preprocess(input_size=default_size)
        if name == reference.NAME:
            preprocess_default = reference.PREPROCESS
            if weights is None and num_classes in (None, reference.NUM_CLASSES) and not args:
                weights = reference.WEIGHTS
        built = BuiltModel(
            name=name,
            module=module,
            preprocess=preprocess_default,
            total_stride=sknet.SKNet.total_stride,
            family="sknet",
            args=args,
        )
        defaults = "the model's defaults"
    else:
        check_model_name(name)
    requests: list[PreprocessRequest | None] = []
    if input_size is not None:
        requests.append(PreprocessRequest(source="--input-size", input_size=parse_size(input_size)))
    requests += list(preprocess or [])
    if weights is not None and Path(weights) != reference.WEIGHTS:
        requests.append(checkpoint_preprocess(weights))
    built.preprocess, built.preprocess_sources = resolve(built.preprocess, requests, defaults)
    check_input_size(built.preprocess.input_size, built.total_stride, name)
    if weights is not None:
        apply_state_dict(built.module, load_state_dict(weights), weights, name)
        built.weights = Path(weights)
        if Path(weights) != reference.WEIGHTS:
            from .weights import checkpoint_accuracy

            built.checkpoint_accuracy = checkpoint_accuracy(weights)
    built.module.eval()
    return built
