"""Loading user weights safely and checking they fit the architecture.

Checkpoints are read with ``torch.load(..., weights_only=True)``: only tensors and plain
containers are unpickled, never arbitrary objects. ``.safetensors`` files are read with
the safetensors package when it is installed.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError, WeightsError

# Keys under which training scripts commonly nest the model's state dict, in the order
# we look for them. EMA weights are taken only when nothing else is there: a user who
# wants them should save them on their own.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema", "model_ema")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

RESAVE_HINT = "save it with torch.save(model.state_dict(), PATH)"


def _read_file(path: Path) -> object:
    if not path.exists():
        raise WeightsError(f"weights file '{path}' does not exist")
    if not path.is_file():
        raise WeightsError(f"weights path '{path}' is not a file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                f"'{path}' is a safetensors file but safetensors is not installed: pip install safetensors"
            ) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"cannot read safetensors file '{path}': {exc}") from None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing a plain pickle; the
            # error below says all the user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a page long; keep the one fact the user needs.
        code = _code_in_pickle(path)
        if code:
            raise WeightsError(
                f"'{path}' was refused: it holds code to run when loaded ({code}), which sk-edge never unpickles "
                f"(torch.load weights_only=True); if you trust the file, {RESAVE_HINT} or save safetensors"
            ) from None
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise WeightsError(
                f"'{path}' contains a pickled Python object ({refused.group(1)}) that sk-edge will not "
                f"unpickle (torch.load weights_only=True); {RESAVE_HINT}"
            ) from None
        raise WeightsError(f"'{path}' is not a PyTorch checkpoint or state dict; {RESAVE_HINT}") from None
    except PermissionError:
        raise WeightsError(f"cannot read weights file '{path}': permission denied") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"'{path}' is not a readable PyTorch checkpoint ({first}); {RESAVE_HINT}") from None


def checkpoint_preprocess(path: str | Path):
    """The preprocessing fields a checkpoint dict carries (sk-edge's own, or timm's pretrained_cfg), or None."""
    from ..preprocess import PreprocessRequest

    path = Path(path)
    if path.suffix == ".safetensors":
        return None  # tensors only
    obj = _read_file(path)
    return PreprocessRequest.from_checkpoint(obj, path) if isinstance(obj, Mapping) else None


# Where training scripts record a checkpoint's accuracy: sk-edge's own, PyTorch's ImageNet example
# (best_acc1, percent), timm's CheckpointSaver (metric: its eval metric, top-1 percent by default).
ACCURACY_KEYS = ("accuracy", "top1", "best_acc1", "acc1", "metric")


def checkpoint_accuracy(path: str | Path) -> dict | None:
    """``{"value": fraction, "field": key}``: the top-1 accuracy a checkpoint dict records, or None."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return None
    obj = _read_file(path)
    if not isinstance(obj, Mapping):
        return None
    for key in ACCURACY_KEYS:
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 100:
            return {"value": float(value) / 100 if value > 1 else float(value), "field": key}
    return None


def _tensors_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, or of the state dict inside a checkpoint dict, under their module names."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"'{path}' holds a {type(obj).__name__}, not a state dict; {RESAVE_HINT}")
    tensors: Mapping = obj
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            raise WeightsError(
                f"'{path}' is a dict without tensors and without any of the keys {', '.join(CHECKPOINT_KEYS)}; {RESAVE_HINT}"
            )
        tensors = obj[nested]
    state = {}
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a stray step counter stored beside the tensors
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


# The classifier of every model family sk-edge builds (ours and timm's SK ResNets: fc) and of common heads.
CLASSIFIER_KEYS = ("fc.weight", "classifier.weight", "head.fc.weight", "head.weight")


def classifier_shape(path: str | Path) -> tuple[str, tuple[int, ...]] | None:
    """(key, shape) of the checkpoint's classifier weight, read without loading the tensors' data where the format
    allows it: safetensors' header, or a zip checkpoint memory-mapped. None when it has none of CLASSIFIER_KEYS
    or cannot be read so; the export's strict load compares every tensor in any case."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            shapes = {k: tuple(v.shape) for k, v in _tensors_of(torch.load(path, weights_only=True, mmap=True), path).items()}
    except Exception:  # a legacy or damaged file: the export's load says what is wrong with it
        return None
    key = next((k for k in CLASSIFIER_KEYS if k in shapes and len(shapes[k]) == 2), None)
    return (key, shapes[key]) if key else None


def check_num_classes(path: str | Path, num_classes: int) -> None:
    """A usage error, before any work, when ``num_classes`` contradicts the classifier the checkpoint holds."""
    found = classifier_shape(path)
    if found is not None and found[1][0] != num_classes:
        key, shape = found
        raise UsageError(
            f"--num-classes {num_classes} does not match '{path}', whose classifier '{key}' is {tuple(shape)}: "
            f"pass --num-classes {shape[0]} (or the weights of a {num_classes}-class model)"
        )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict, or the state dict inside a checkpoint dict, from ``path``."""
    path = Path(path)
    state = _tensors_of(_read_file(path), path)
    if not state:
        raise WeightsError(f"'{path}' contains no tensors; {RESAVE_HINT}")
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(
                f"'{path}' holds NaN or inf in '{key}' ({bad} of {value.numel()} values): the weights are damaged "
                "or training diverged; export a checkpoint saved before that"
            )
    return state


# Modules whose functions run commands, open files or import code: a pickle that names one of
# them is an attack, not a checkpoint with an extra object in it.
_CODE_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "socket",
    "io",
    "runpy",
    "importlib",
    "pty",
    "code",
    "webbrowser",
    "ctypes",
    "multiprocessing",
    "pickle",
    "marshal",
    "types",
}
_CODE_BUILTINS = {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "globals", "breakpoint"}


def _code_in_pickle(path: Path) -> str | None:
    """The first function a pickle would call that runs code (``posix.system``, ``builtins.eval``...), or None.

    Read with pickletools, which lists the opcodes without executing any of them.
    """
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                data = archive.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST"):
                module, name = str(arg).split(" ", 1) if opcode.name != "STACK_GLOBAL" else (strings[-2:] + ["", ""])[:2]
                root = module.split(".")[0]
                if root in _CODE_MODULES or (root in ("builtins", "__builtin__") and name in _CODE_BUILTINS):
                    return f"{module}.{name}"
    except Exception:  # a damaged or foreign file: say nothing more than torch did
        return None
    return None


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, model_name: str) -> None:
    """Load ``state`` into ``model`` strictly; name the first problem in the error.

    ``num_batches_tracked`` buffers may be missing (several exporters drop them): they do
    not affect inference.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state and tensor.is_floating_point() and not state[key].is_floating_point():
            # load_state_dict would cast it silently, and quantize would then fail far from the cause.
            raise WeightsError(
                f"weights '{source}' hold '{key}' as {str(state[key].dtype).removeprefix('torch.')}, and {model_name} "
                f"needs floating-point weights ({str(tensor.dtype).removeprefix('torch.')}): save the trained float "
                "weights, not a quantized or integer copy"
            )
        if key in state and state[key].shape != tensor.shape:
            hint = ""
            if key.endswith(("fc.weight", "fc.bias", "classifier.weight", "head.weight")):
                hint = f"; pass --num-classes {state[key].shape[0]} if the file is a fine-tuned model"
            raise WeightsError(
                f"weights '{source}' do not match {model_name}: '{key}' is {_shape(state[key])} "
                f"in the file but {_shape(tensor)} in the model{hint}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(
            f"weights '{source}' do not match {model_name}: {len(missing)} tensors missing, "
            f"first '{missing[0]}' {_shape(expected[missing[0]])}; check --model and the model arguments"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsError(
            f"weights '{source}' do not match {model_name}: {len(unexpected)} unexpected tensors, "
            f"first '{unexpected[0]}' {_shape(state[unexpected[0]])}; check --model and the model arguments"
        )
    model.load_state_dict(state, strict=False)
