"""Our SKNet family against the paper, and model building from names."""

import pytest
import torch

from sk_edge.errors import UsageError
from sk_edge.models import build_model, model_names
from sk_edge.models.complexity import count_macs, count_params
from sk_edge.models.sknet import SelectiveKernelConv, attention_width, sknet50

from conftest import TINY_SKNET_ARGS


def test_sknet50_matches_the_paper_size():
    # Paper, Table 2: SKNet-50 has 27.5M parameters and 4.47 GFLOPs (multiply-adds) at 224.
    model = sknet50()
    assert count_params(model) / 1e6 == pytest.approx(27.5, rel=0.005)
    assert count_macs(model, 224) / 1e9 == pytest.approx(4.47, rel=0.005)


def test_sknet50_has_the_same_size_as_timm_skresnext50():
    # Two independent implementations of the same architecture.
    ours = build_model("sknet50").module
    theirs = build_model("timm:skresnext50_32x4d").module
    assert count_params(ours) == count_params(theirs)
    assert count_macs(ours, 224) == count_macs(theirs, 224)


def test_sk_unit_follows_the_paper():
    unit = SelectiveKernelConv(64, 64, branches=3, groups=8, reduction=16, min_dim=32).eval()
    dilations = [branch[0].dilation for branch in unit.branches]
    assert dilations == [(1, 1), (2, 2), (3, 3)]
    assert all(branch[0].kernel_size == (3, 3) and branch[0].groups == 8 for branch in unit.branches)
    assert unit.fuse[0].out_channels == attention_width(64, 16, 32) == 32
    with torch.no_grad():
        attn = unit.attention(torch.randn(2, 64, 9, 9))
    assert attn.shape == (2, 3, 64, 1, 1)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(2, 64, 1, 1))
    assert attention_width(2048, 16, 32) == 128


@pytest.mark.parametrize("input_size", [64, 96, 160])
def test_any_class_count_and_input_size(input_size):
    built = build_model("sknet26", num_classes=7, input_size=input_size, args=TINY_SKNET_ARGS)
    with torch.no_grad():
        out = built.module(torch.randn(2, 3, input_size, input_size))
    assert out.shape == (2, 7)
    assert not built.module.training


def test_model_names_list_own_and_timm_models():
    names = model_names()
    assert names[:4] == ["sknet26-digits", "sknet26", "sknet50", "sknet101"]
    assert "timm:skresnet18" in names and "timm:skresnext50_32x4d" in names


def test_timm_model_keeps_its_preprocessing():
    built = build_model("timm:skresnet18", num_classes=5, input_size=96)
    assert built.family == "timm"
    assert built.preprocess.input_size == 96
    assert built.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert built.module.fc.out_features == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "sknet51"}, "unknown model 'sknet51'"),
        ({"name": "timm:skresnet19"}, "timm has no model 'skresnet19' (similar: skresnet18"),
        ({"name": "sknet26", "input_size": 100}, "use a multiple of 32 (e.g. 96 or 128)"),
        ({"name": "sknet26", "input_size": 16}, "use a multiple of 32"),
        ({"name": "sknet26", "args": {"branchez": 3}}, "has no model argument 'branchez'"),
        ({"name": "sknet26", "args": {"groups": 7}}, "groups=7 must divide"),
        ({"name": "sknet26", "args": {"branches": 1}}, "at least 2 branches"),
    ],
)
def test_bad_model_requests_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError) as info:
        build_model(**kwargs)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_the_torch_free_model_names_are_the_registry_s_and_the_name_check_imports_no_torch():
    import subprocess
    import sys

    from sk_edge.models.names import OWN_MODEL_NAMES
    from sk_edge.models.registry import OWN_MODELS

    assert tuple(OWN_MODELS) == OWN_MODEL_NAMES
    # The build's plan checks the name before any work; a no-op build must not pay torch's import for it.
    probe = ("import sys; from sk_edge.models.names import check_model_name; check_model_name('sknet26'); "
             "check_model_name('timm:skresnet18'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
