"""Rewrite every SK unit into a deployment form that TensorRT and ONNX Runtime digest well.

A trained SK unit computes, for M branch outputs U_m (B, C, H, W):

    s = GAP(sum_m U_m);  z = act(FC_fuse(s));  a = softmax over m of FC_m(z);  V = sum_m a_m U_m

The textbook form stacks the branches into a 5-D (B, M, C, H, W) tensor and takes a
Softmax over axis 1. TensorRT handles neither well (5-D tensors break Conv/pointwise
fusion and the Softmax over a non-last axis becomes a transpose + softmax), and the
stack is a full copy of every branch. The rewrite here is exact up to float rounding:

- BatchNorm in every branch and in the fuse FC is folded into the convolution before it.
- GAP(sum_m U_m) = sum_m GAP(U_m): the full-size sum of the branches is never built.
- The select step takes one of three forms, all 4-D and free of cross-branch Softmax:

  ``sigmoid`` (M = 2 only): softmax([z0, z1])[0] = sigmoid(z0 - z1). The two select FCs
  merge into one with weight W0 - W1 and bias b0 - b1, and V = U1 + g * (U0 - U1).

  ``softmax4d`` (any M): the select FCs become one 1x1 conv whose output channels are
  ordered (c, m); a reshape to (B, C, 1, M) puts the branches on the last axis, where a
  Softmax is a plain TensorRT softmax; M slices of (B, C, 1, 1) weight the branches.

  ``exp`` (any M): per-branch logits as M channel slices, max-subtracted exp, and their
  sum as normaliser; only element-wise ops on (B, C, 1, 1) tensors plus the weighted sum.

Which general form is fastest was measured by ``benchmarks/export_speed.py``;
``select_form="auto"`` uses ``sigmoid`` for M = 2 and :data:`GENERAL_FORM` otherwise.
"""

from __future__ import annotations

import copy
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError, UsageError
from ..models.sknet import SelectiveKernelConv
from .batchnorm import fold_conv_bn

from .options import SELECT_FORMS  # noqa: E402,F401 - the forms are named beside the export options

# The general-M form used by "auto"; see benchmarks/export_speed.py and the README.
GENERAL_FORM = "exp"


@dataclass
class SKUnitParts:
    """An SK unit reduced to its parts, with BatchNorm already folded.

    Attributes:
        paths: M modules; path m maps the unit input (or its m-th channel split) to U_m.
        split_input: the input channels are split evenly across the paths (timm option).
        fuse: 1x1 conv C -> d with bias (the fuse FC with its BatchNorm folded in).
        fuse_act: activation after ``fuse``.
        select_weight: (M, C, d) weights of the per-branch select FCs.
        select_bias: (M, C) their biases (zeros when the FCs have none).
    """

    paths: list[nn.Module]
    split_input: bool
    fuse: nn.Conv2d
    fuse_act: nn.Module
    select_weight: torch.Tensor
    select_bias: torch.Tensor

    @property
    def num_branches(self) -> int:
        return len(self.paths)

    @property
    def channels(self) -> int:
        return self.select_weight.shape[1]


class FoldedSelectiveKernel(nn.Module):
    """Deployment form of an SK unit: same function, BatchNorm folded, 4-D select step.

    Built from :class:`SKUnitParts` by :func:`rewrite_sk_units`; see the module docstring
    for the three select forms.
    """

    def __init__(self, parts: SKUnitParts, form: str):
        super().__init__()
        m, c, d = parts.select_weight.shape
        if form == "sigmoid" and m != 2:
            raise ValueError(f"the sigmoid select form is exact only for 2 branches, not {m}")
        if form not in SELECT_FORMS[1:]:
            raise ValueError(f"unknown select form '{form}'")
        self.form = form
        self.num_branches = m
        self.channels = c
        self.split_input = parts.split_input
        # Channels each path reads; a Python int so the exporter records a constant split.
        self.path_in_channels = next(mod for mod in parts.paths[0].modules() if isinstance(mod, nn.Conv2d)).in_channels
        self.paths = nn.ModuleList(parts.paths)
        self.fuse = nn.Sequential(parts.fuse, parts.fuse_act)
        w, b = parts.select_weight.detach().double(), parts.select_bias.detach().double()
        if form == "sigmoid":
            # softmax([z0, z1])[0] == sigmoid(z0 - z1): one FC with the difference weights.
            w, b = w[0] - w[1], b[0] - b[1]
        elif form == "softmax4d":
            # Output channel c * M + m, so that a reshape to (B, C, 1, M) puts m last.
            w, b = w.transpose(0, 1).reshape(c * m, d), b.transpose(0, 1).reshape(c * m)
        else:  # exp: output channel m * C + c, M slices of C channels.
            w, b = w.reshape(m * c, d), b.reshape(m * c)
        self.select = nn.Conv2d(d, w.shape[0], kernel_size=1, bias=True)
        dtype = parts.select_weight.dtype
        self.select.weight = nn.Parameter(w.to(dtype)[:, :, None, None], requires_grad=False)
        self.select.bias = nn.Parameter(b.to(dtype), requires_grad=False)

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.split_input:
            chunks = torch.split(x, self.path_in_channels, dim=1)
            return [path(chunk) for path, chunk in zip(self.paths, chunks)]
        return [path(x) for path in self.paths]

    def _select_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        # GAP(sum_m U_m) == sum_m GAP(U_m): pool each branch, never build the full-size sum.
        s = F.adaptive_avg_pool2d(feats[0], 1)
        for u in feats[1:]:
            s = s + F.adaptive_avg_pool2d(u, 1)
        return self.select(self.fuse(s))

    def _softmax_weights(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """softmax4d / exp forms: M attention tensors of shape (B, C, 1, 1)."""
        if self.form == "softmax4d":
            a = torch.softmax(logits.reshape(-1, self.channels, 1, self.num_branches), dim=-1)
            return list(a.split(1, dim=3))
        zs = logits.split(self.channels, dim=1)
        top = zs[0]
        for z in zs[1:]:
            top = torch.maximum(top, z)
        exps = [torch.exp(z - top) for z in zs]
        inv = 1 / sum(exps[1:], exps[0])
        return [e * inv for e in exps]

    def branch_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The attention a_m for input ``x``: M tensors of shape (B, C, 1, 1)."""
        logits = self._select_logits(self.branch_outputs(x))
        if self.form == "sigmoid":
            g = torch.sigmoid(logits)
            return [g, 1 - g]
        return self._softmax_weights(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.branch_outputs(x)
        logits = self._select_logits(feats)
        if self.form == "sigmoid":
            # V = g U0 + (1 - g) U1 = U1 + g (U0 - U1): three full-size ops, no 1 - g.
            g = torch.sigmoid(logits)
            return feats[1] + g * (feats[0] - feats[1])
        weights = self._softmax_weights(logits)
        out = weights[0] * feats[0]
        for a, u in zip(weights[1:], feats[1:]):
            out = out + a * u
        return out


# --- converters: recognised SK unit classes -> SKUnitParts -----------------------------


# The converters read submodules by attribute, which torch types as `Tensor | Module`: they take
# the unit as Any and check at run time the classes that matter (exact types, nn.Conv2d, BatchNorm).
def _parts_from_sknet(unit: Any, where: str) -> SKUnitParts:
    paths: list[nn.Module] = []
    for conv, bn, act in unit.branches:
        paths.append(nn.Sequential(fold_conv_bn(conv, bn), copy.deepcopy(act)))
    fuse_conv, fuse_bn, fuse_act = unit.fuse
    weight = torch.stack([fc.weight[:, :, 0, 0] for fc in unit.select])
    bias = torch.stack([fc.bias if fc.bias is not None else torch.zeros(fc.out_channels) for fc in unit.select])
    return SKUnitParts(
        paths=paths,
        split_input=False,
        fuse=fold_conv_bn(fuse_conv, fuse_bn),
        fuse_act=copy.deepcopy(fuse_act),
        select_weight=weight.detach(),
        select_bias=bias.detach(),
    )


def _timm_classes() -> dict[str, Any]:
    # A timm model means timm is imported already; importing it for one of ours would cost seconds
    # (timm imports torchvision, which imports torch._dynamo: 7 s of every export on a 2-core machine).
    if "timm" not in sys.modules:
        return {}
    try:
        from timm.layers import BatchNormAct2d, SelectiveKernel
        from timm.layers.selective_kernel import SelectiveKernelAttn
    except ImportError:
        return {}
    return {"SelectiveKernel": SelectiveKernel, "Attn": SelectiveKernelAttn, "BatchNormAct2d": BatchNormAct2d}


def _timm_path(path: Any, where: str, timm_cls: dict[str, Any]) -> nn.Module:
    conv: Any = getattr(path, "conv", None)
    bn: Any = getattr(path, "bn", None)
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedModelError(
            f"SK unit '{where}': branch convolution is {type(conv).__name__}, only nn.Conv2d can be folded"
        )
    if type(bn) is nn.BatchNorm2d:
        tail = []
    elif type(bn) is timm_cls["BatchNormAct2d"]:
        tail = [copy.deepcopy(bn.drop), copy.deepcopy(bn.act)]
    else:
        raise UnsupportedModelError(f"SK unit '{where}': branch norm layer is {type(bn).__name__}, only BatchNorm can be folded")
    aa = getattr(path, "aa", None)
    if aa is not None:
        tail.append(copy.deepcopy(aa))
    try:
        folded = fold_conv_bn(conv, bn)
    except ValueError as exc:
        raise UnsupportedModelError(f"SK unit '{where}': {exc}") from None
    return nn.Sequential(folded, *tail)


def _parts_from_timm(unit: Any, where: str) -> SKUnitParts:
    timm_cls = _timm_classes()
    attn = unit.attn
    if type(attn) is not timm_cls["Attn"] or type(attn.bn) is not nn.BatchNorm2d:
        raise UnsupportedModelError(
            f"SK unit '{where}': attention {type(attn).__name__} with norm "
            f"{type(getattr(attn, 'bn', None)).__name__} is not timm's SelectiveKernelAttn with BatchNorm"
        )
    m = unit.num_paths
    fc = attn.fc_select
    c = fc.out_channels // m
    weight = fc.weight[:, :, 0, 0].reshape(m, c, -1)  # timm views the output as (B, M, C, 1, 1)
    bias = fc.bias.reshape(m, c) if fc.bias is not None else torch.zeros(m, c)
    return SKUnitParts(
        paths=[_timm_path(p, f"{where}.paths.{i}", timm_cls) for i, p in enumerate(unit.paths)],
        split_input=bool(unit.split_input),
        fuse=fold_conv_bn(attn.fc_reduce, attn.bn),
        fuse_act=copy.deepcopy(attn.act),
        select_weight=weight.detach(),
        select_bias=bias.detach(),
    )


def _converter_for(module: nn.Module) -> Callable[[Any, str], SKUnitParts] | None:
    # Exact type checks: a subclass may override forward(), and then our parts would not
    # describe what it computes.
    if type(module) is SelectiveKernelConv:
        return _parts_from_sknet
    timm_sk = _timm_classes().get("SelectiveKernel")
    if timm_sk is not None and type(module) is timm_sk:
        return _parts_from_timm
    return None


# Class names that look like an SK unit. A module with such a name that no converter
# recognises (and that neither contains nor sits inside a recognised unit) is refused
# rather than exported with its Softmax intact.
_SK_LIKE = re.compile(r"selective.?kernel|sk.?(conv|unit|attn|attention|layer)", re.IGNORECASE)


@dataclass
class RewriteReport:
    """What :func:`rewrite_sk_units` changed, one entry per SK unit."""

    units: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.units)

    def summary(self) -> dict:
        return {
            "sk_units": self.count,
            "select_forms": dict(Counter(u["form"] for u in self.units)),
            "branches": sorted({u["branches"] for u in self.units}),
            "split_input_units": sum(u["split_input"] for u in self.units),
            "batchnorm_folded": sum(u["batchnorm_folded"] for u in self.units),
            "units": self.units,
        }


def resolve_form(select_form: str, branches: int, where: str) -> str:
    if select_form not in SELECT_FORMS:
        raise UsageError(f"unknown select form '{select_form}'; choose one of {', '.join(SELECT_FORMS)}")
    if select_form == "auto":
        return "sigmoid" if branches == 2 else GENERAL_FORM
    if select_form == "sigmoid" and branches != 2:
        raise UsageError(
            f"--select-form sigmoid is exact only for 2 branches, but SK unit '{where}' has {branches}; "
            "use auto, softmax4d or exp"
        )
    return select_form


def _looks_like_sk_unit(module: nn.Module) -> bool:
    known = tuple(c for c in (SelectiveKernelConv, _timm_classes().get("SelectiveKernel")) if c is not None)
    return isinstance(module, known) or bool(_SK_LIKE.search(type(module).__name__))


def find_unrecognised_sk_units(model: nn.Module) -> list[str]:
    """Names of SK-looking modules (subclasses of the known SK classes, or class names
    matching :data:`_SK_LIKE`) that no converter handles."""
    named = list(model.named_modules())
    recognised = [n for n, m in named if _converter_for(m) is not None]
    out = []
    for name, module in named:
        if _converter_for(module) is not None or not _looks_like_sk_unit(module):
            continue
        inside = any(name.startswith(r + ".") for r in recognised)
        contains = name == "" or any(r.startswith(name + ".") for r in recognised)
        if not inside and not contains:
            out.append(f"{name or '<root>'} ({type(module).__name__})")
    return out


def rewrite_sk_units(model: nn.Module, select_form: str = "auto") -> tuple[nn.Module, RewriteReport]:
    """A copy of ``model`` (eval mode) with every SK unit replaced by its deployment form.

    Raises:
        UnsupportedModelError: a module looks like an SK unit but no converter knows it,
            or a recognised unit has parts that cannot be folded exactly.
    """
    unknown = find_unrecognised_sk_units(model)
    if unknown:
        raise UnsupportedModelError(
            f"{len(unknown)} SK-like modules are not recognised, first {unknown[0]}; sk-edge rewrites "
            "sk_edge.models.sknet.SelectiveKernelConv and timm.layers.SelectiveKernel exactly"
        )
    model = copy.deepcopy(model).eval()
    report = RewriteReport()
    done: list[str] = []
    for name, module in list(model.named_modules()):
        if any(name.startswith(d + ".") for d in done):
            continue
        convert = _converter_for(module)
        if convert is None:
            continue
        parts = convert(module, name)
        form = resolve_form(select_form, parts.num_branches, name)
        folded = FoldedSelectiveKernel(parts, form)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, folded)
        done.append(name)
        report.units.append(
            {
                "name": name,
                "source": f"{type(module).__module__}.{type(module).__name__}",
                "branches": parts.num_branches,
                "channels": parts.channels,
                "attention_width": parts.fuse.out_channels,
                "split_input": parts.split_input,
                "form": form,
                # one per branch plus the one in the fuse FC
                "batchnorm_folded": parts.num_branches + 1,
            }
        )
    return model, report
