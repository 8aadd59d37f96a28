"""The SK rewrite in PyTorch: exact for every family and form, loud on what it cannot do."""

import pytest
import torch
from torch import nn

from sk_edge.errors import UnsupportedModelError, UsageError
from sk_edge.export.sk_rewrite import FoldedSelectiveKernel, rewrite_sk_units
from sk_edge.models import build_model
from sk_edge.models.sknet import SelectiveKernelConv

from conftest import TINY_SKNET_ARGS, randomize_batchnorm

FAMILIES = {
    "sknet-M2": ("sknet26", TINY_SKNET_ARGS),
    "sknet-M3": ("sknet26", {**TINY_SKNET_ARGS, "branches": 3}),
    "timm-skresnet18": ("timm:skresnet18", {}),
}


def _model(key):
    name, args = FAMILIES[key]
    return randomize_batchnorm(build_model(name, input_size=64, args=args).module)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["auto", "sigmoid", "softmax4d", "exp"])
def test_rewrite_is_exact(family, form):
    model = _model(family)
    branches = 3 if family == "sknet-M3" else 2
    if form == "sigmoid" and branches != 2:
        with pytest.raises(UsageError, match="exact only for 2 branches"):
            rewrite_sk_units(model, form)
        return
    rewritten, report = rewrite_sk_units(model, form)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), rewritten(x)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert report.count == 8
    expected = {"auto": "sigmoid" if branches == 2 else "exp"}.get(form, form)
    assert {u["form"] for u in report.units} == {expected}
    assert not any(isinstance(m, SelectiveKernelConv) for m in rewritten.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in _sk_units(rewritten))
    # the original model is left untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _sk_units(model):
    return [m for unit in model.modules() if isinstance(unit, FoldedSelectiveKernel) for m in unit.modules()]


def test_sigmoid_form_merges_the_two_select_fcs():
    unit = randomize_batchnorm(SelectiveKernelConv(32, 32, groups=8))
    model = nn.Sequential(unit)
    rewritten, _ = rewrite_sk_units(model, "sigmoid")
    folded = rewritten[0]
    # one FC with W0 - W1, instead of two FCs and a softmax
    assert folded.select.out_channels == 32
    w0, w1 = unit.select[0].weight, unit.select[1].weight
    torch.testing.assert_close(folded.select.weight, w0 - w1)
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        a = unit.attention(x)[:, 0]
        g, one_minus_g = folded.branch_weights(x)
    torch.testing.assert_close(g, a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g + one_minus_g, torch.ones_like(g))


def test_custom_timm_configs_are_exact():
    from timm.models.resnet import ResNet
    from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck

    configs = [
        # three real kernel sizes as dilated 3x3s, no input split, wide attention
        (SelectiveKernelBasic, dict(kernel_size=[3, 5, 7], split_input=False, rd_ratio=1 / 4)),
        # a true 5x5 branch (keep_3x3=False) with the input split across branches
        (SelectiveKernelBottleneck, dict(kernel_size=[3, 5], keep_3x3=False, split_input=True, rd_ratio=1 / 8)),
    ]
    for block, sk_kwargs in configs:
        model = randomize_batchnorm(
            ResNet(block=block, layers=[1, 1, 1, 1], num_classes=10, block_args=dict(sk_kwargs=sk_kwargs))
        )
        rewritten, report = rewrite_sk_units(model)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            diff = (rewritten(x) - model(x)).abs().max().item()
        assert diff < 1e-5, (block.__name__, sk_kwargs, diff)
        assert report.count == 4
        assert report.units[0]["split_input"] == sk_kwargs["split_input"]
        assert report.units[0]["branches"] == len(sk_kwargs["kernel_size"])


class PatchedSK(SelectiveKernelConv):
    """A subclass whose forward differs: the parts would not describe what it computes."""

    def forward(self, x):
        return super().forward(x) * 2


def test_unrecognised_sk_subclass_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 32, 3), PatchedSK(32, 32, groups=8))
    with pytest.raises(UnsupportedModelError, match=r"first 1 \(PatchedSK\)"):
        rewrite_sk_units(model)


def test_timm_unit_with_groupnorm_is_refused():
    from timm.layers import SelectiveKernel

    unit = SelectiveKernel(32, 32, norm_layer=lambda c, **kw: nn.GroupNorm(4, c))
    with pytest.raises(UnsupportedModelError, match="only BatchNorm can be folded"):
        rewrite_sk_units(nn.Sequential(unit))
