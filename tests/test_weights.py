"""Loading user weights: safe unpickling, checkpoint layouts, mismatch messages."""

import pickle

import pytest
import torch

from sk_edge.errors import WeightsError
from sk_edge.models import build_model
from sk_edge.models.sknet import sknet26

from conftest import TINY_SKNET_ARGS, randomize_batchnorm


@pytest.fixture
def trained():
    """A tiny SKNet with non-default weights, standing in for a fine-tuned model."""
    model = sknet26(num_classes=10, **TINY_SKNET_ARGS)
    return randomize_batchnorm(model, seed=3)


def _build(weights, **overrides):
    kwargs = dict(num_classes=10, input_size=64, args=TINY_SKNET_ARGS)
    kwargs.update(overrides)
    return build_model("sknet26", weights=weights, **kwargs)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"epoch": 7, "state_dict": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
    ],
    ids=["state_dict", "checkpoint", "ddp-prefix", "no-num_batches_tracked"],
)
def test_loads_common_checkpoint_layouts(tmp_path, trained, wrap):
    path = tmp_path / "w.pth"
    torch.save(wrap(trained.state_dict()), path)
    assert _same_weights(_build(path).module, trained)


def test_loads_safetensors(tmp_path, trained):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    assert _same_weights(_build(path).module, trained)


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path, trained):
    path = tmp_path / "w.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(WeightsError) as info:
        _build(path, num_classes=1000)
    msg = str(info.value)
    assert "'fc.weight' is (10, 512) in the file but (1000, 512) in the model" in msg
    assert "--num-classes 10" in msg and str(path) in msg


def test_architecture_mismatch_names_the_first_missing_key(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(sknet26(**{**TINY_SKNET_ARGS, "branches": 2}).state_dict(), path)
    with pytest.raises(WeightsError, match=r"tensors missing, first 'stages\.0\.0\.sk\.branches\.2\.0\.weight'"):
        build_model("sknet26", weights=path, input_size=64, args={**TINY_SKNET_ARGS, "branches": 3})


def test_unexpected_keys_are_reported(tmp_path, trained):
    path = tmp_path / "w.pth"
    torch.save({**trained.state_dict(), "extra.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match=r"1 unexpected tensors, first 'extra.weight' \(3\)"):
        _build(path)


class _Payload:
    """Unpickling this would create a file: proof that no arbitrary code runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Payload(str(marker))}, f)
    with pytest.raises(WeightsError, match=r"was refused: it holds code to run when loaded \(io\.open\)"):
        _build(path)
    assert not marker.exists()


class TrainingConfig:
    """A harmless object such as training scripts often save beside the weights."""

    lr = 0.1


def test_pickled_objects_in_a_torch_file_are_refused(tmp_path, trained):
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": trained.state_dict(), "config": TrainingConfig()}, path)
    with pytest.raises(WeightsError, match=r"contains a pickled Python object \(test_weights.TrainingConfig\)"):
        _build(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is not a file"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "is not a PyTorch checkpoint"),
        (lambda p: torch.save([torch.zeros(1)], p), "holds a list, not a state dict"),
        (lambda p: torch.save({"epoch": 3}, p), "dict without tensors"),
    ],
    ids=["missing", "directory", "garbage", "list", "no-tensors"],
)
def test_unreadable_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "w.pth"
    make(path)
    with pytest.raises(WeightsError) as info:
        _build(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def _tiny_state(num_classes: int) -> dict:
    return build_model("sknet26", num_classes=num_classes, args=TINY_SKNET_ARGS).module.state_dict()


@pytest.mark.parametrize("save", ["safetensors", "checkpoint dict", "legacy pickle"])
def test_the_classifier_shape_is_read_without_loading_the_weights(tmp_path, save):
    from safetensors.torch import save_file

    from sk_edge.models.weights import classifier_shape

    state = _tiny_state(7)
    path = tmp_path / ("w.safetensors" if save == "safetensors" else "w.pth")
    if save == "safetensors":
        save_file(state, path)
    elif save == "checkpoint dict":  # nested, with DataParallel's prefix: what load_state_dict accepts
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:  # the pre-1.6 format cannot be memory-mapped: no early answer, the export's strict load decides
        torch.save(state, path, _use_new_zipfile_serialization=False)
    expected = None if save == "legacy pickle" else ("fc.weight", (7, state["fc.weight"].shape[1]))
    assert classifier_shape(path) == expected


def test_a_num_classes_the_checkpoint_contradicts_is_a_usage_error_before_any_work(tmp_path):
    import sk_edge
    from sk_edge.errors import UsageError

    torch.save(_tiny_state(7), tmp_path / "seven.pth")
    with pytest.raises(UsageError, match=r"--num-classes 5 does not match .*'fc.weight' is \(7, \d+\): pass --num-classes 7"):
        sk_edge.build(model="sknet26", weights=tmp_path / "seven.pth", num_classes=5, model_args=TINY_SKNET_ARGS,
                      verify=False, workdir=tmp_path / "work")
    assert not (tmp_path / "work" / "export.json").exists()


def test_an_unknown_model_name_is_said_before_anything_else(tmp_path):
    import sk_edge
    from sk_edge.errors import UsageError

    # No images and no --no-verify either: the name is what is wrong first, and what the error says.
    with pytest.raises(UsageError, match="unknown model 'sknet77'; choose one of: sknet26-digits, sknet26, sknet50, sknet101, or timm:NAME"):
        sk_edge.build(model="sknet77", workdir=tmp_path / "work")
    assert not (tmp_path / "work" / "export.json").exists()
