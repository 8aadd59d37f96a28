"""A stand-in ``tensorrt`` module built from the real bindings' API surface of one release.

``tests/data/trt-api/trt-<version>.json`` lists every class, method, property, enum member
and signature of a real TensorRT Python release (dumped from NVIDIA's published bindings
by ``../shared/tools/trt_api_surface.py``). :func:`standin_module` turns one of them into a
module that behaves like ``tensorrt`` to the extent sk-edge's code needs, and is strict
where it matters:

- reading or writing a name the release does not have raises AttributeError;
- calling a method with more positional arguments than its signature has, or fewer than
  its required ones, raises TypeError;
- a method returns a stand-in of the class its signature names, so chains of calls are
  checked all the way down; ``Scenario`` supplies the values that carry meaning (tensor
  names, shapes, the inspector's report).

Every name touched is recorded in ``module.touched`` as ``Class.attr``.
"""

from __future__ import annotations

import json
import re
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

SURFACES = Path(__file__).parent / "data" / "trt-api"
# Every release a user meets: JetPack 5.1 (8.5, names from NVIDIA's binding sources), 6.0 (8.6),
# 6.1/6.2 (10.3), the last 10.x with DLA (10.7), JetPack 7.0/7.1 (10.13), the newest 10.x and 11.x.
VERSIONS = ("8.5-from-source", "8.6.1", "10.3.0", "10.7.0", "10.13.3.9", "10.16.1.11", "11.4.0.106")
# TensorRT for RTX (--target rtx): its real builder runs here (tests/test_tensorrt_rtx.py); the stand-in
# of its surface drives the load-and-run path, which needs an RTX GPU.
RTX_VERSION = "rtx-1.7.1.116"
# A surface derived from source has names only; signatures (argument counts, return types) are
# borrowed from the nearest release dumped from its wheel, for the names both have.
_SIGNATURES_FROM = {"source": "8.6.1"}

_SIG = re.compile(r"^\w+\((?P<params>.*)\)(?:\s*->\s*(?P<ret>.+))?$")
_RETURN_ALIASES = {"nvonnxparser::IParserError": "ParserError", "nvinfer1::TensorIOMode": "TensorIOMode"}


def _split_params(text: str) -> list[str]:
    depth, cur, out = 0, "", []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_signature(sig: str) -> tuple[int, int, str] | None:
    """(required, total) positional parameters after self, and the return type; None if unknown."""
    m = _SIG.match(sig.strip())
    if not m or "*args" in m.group("params"):
        return None
    params = [p for p in _split_params(m.group("params")) if not p.startswith("self")]
    required = sum(1 for p in params if "=" not in p)
    return required, len(params), (m.group("ret") or "None").strip()


class EnumMember(int):
    def __new__(cls, enum: str, name: str, value: int):
        obj = int.__new__(cls, value)
        obj.enum, obj.name = enum, name
        return obj

    def __repr__(self):
        return f"{self.enum}.{self.name}"


@dataclass
class Scenario:
    """Meaningful return values: ``"Class.method" -> callable(self, *args)``."""

    returns: dict[str, Callable[..., Any]] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)  # "Class.prop" -> initial value


def standin_module(version: str, scenario: Scenario | None = None) -> types.ModuleType:
    surface = json.loads((SURFACES / f"trt-{version}.json").read_text())
    if surface.get("derived") in _SIGNATURES_FROM:
        donor = json.loads((SURFACES / f"trt-{_SIGNATURES_FROM[surface['derived']]}.json").read_text())["classes"]
        for cname, attrs in surface["classes"].items():
            for name, spec in attrs.items():
                if spec["kind"] == "method" and "sig" not in spec:
                    spec["sig"] = donor.get(cname, {}).get(name, {}).get("sig", "")
        # nptype is plain Python in tensorrt/__init__.py, not in the pybind11 sources the names came from.
        surface.setdefault("functions", ["nptype"])
        # pybind11's export_values() copies ILogger.Severity's members into ILogger (so Logger.WARNING,
        # used in every TensorRT sample since 5.x); the source derivation does not see that call's effect.
        for member in surface["enums"].get("Severity", []):
            surface["classes"]["Logger"].setdefault(member, {"kind": "value"})
    scenario = scenario or Scenario()
    # TensorRT-RTX's bindings are another module (sk_edge tells the flavour by the module's name).
    mod = types.ModuleType("tensorrt_rtx" if version.startswith("rtx-") else "tensorrt")
    mod.__version__ = surface["version"]
    mod.touched = set()
    classes: dict[str, type] = {}
    enums = {name: list(members) for name, members in surface["enums"].items()}

    def make_class(cname: str, attrs: dict) -> type:
        members = enums.get(cname, [])

        class Meta(type):
            def __getattr__(cls, name):
                if name in members:
                    mod.touched.add(f"{cname}.{name}")
                    return EnumMember(cname, name, members.index(name))
                spec = attrs.get(name)
                if spec is not None and spec["kind"] == "value":  # e.g. Logger.WARNING
                    mod.touched.add(f"{cname}.{name}")
                    return EnumMember(cname, name, sorted(attrs).index(name))
                raise AttributeError(f"TensorRT {version}: {cname} has no attribute '{name}'")

        def __init__(self, *args, **kwargs):
            object.__setattr__(self, "_values", dict(
                (k.split(".", 1)[1], v) for k, v in scenario.properties.items() if k.startswith(cname + ".")
            ))
            object.__setattr__(self, "_args", args)

        def __getattr__(self, name):
            spec = attrs.get(name)
            if spec is None:
                raise AttributeError(f"TensorRT {version}: {cname} has no attribute '{name}'")
            mod.touched.add(f"{cname}.{name}")
            if spec["kind"] == "method":
                return _method(self, cname, name, spec["sig"])
            if spec["kind"] == "value" and name in members:
                return EnumMember(cname, name, members.index(name))
            values = object.__getattribute__(self, "_values")
            if name in values:
                v = values[name]
                return v(self) if callable(v) and not isinstance(v, type) else v
            return 0

        def __setattr__(self, name, value):
            spec = attrs.get(name)
            if spec is None or spec["kind"] == "method":
                raise AttributeError(f"TensorRT {version}: {cname} has no settable attribute '{name}'")
            mod.touched.add(f"{cname}.{name}")
            object.__getattribute__(self, "_values")[name] = value

        ns = {"__init__": __init__, "__getattr__": __getattr__, "__setattr__": __setattr__}
        if cname == "IHostMemory":
            ns["__bytes__"] = lambda self: bytes(object.__getattribute__(self, "_args")[0] if self._args else b"")
            ns["__buffer__"] = lambda self, flags: memoryview(bytes(self))
        return Meta(cname, (), ns)

    def _method(obj, cname: str, name: str, sig: str):
        parsed = parse_signature(sig)

        def call(*args, **kwargs):
            if parsed is not None:
                required, total, _ = parsed
                if not required <= len(args) + len(kwargs) <= total:
                    raise TypeError(f"TensorRT {version}: {cname}.{name} takes {required}..{total} arguments, got {len(args) + len(kwargs)}: {sig}")
            override = scenario.returns.get(f"{cname}.{name}")
            if override is not None:
                return override(obj, *args, **kwargs)
            return _default_return(parsed[2] if parsed else "None")

        return call

    def _default_return(ret: str):
        ret = _RETURN_ALIASES.get(ret, ret)
        short = ret.rsplit(".", 1)[-1]
        if short in classes:
            return classes[short]()
        return {"bool": True, "int": 0, "str": "", "None": None, "float": 0.0}.get(short)

    for cname, attrs in surface["classes"].items():
        classes[cname] = make_class(cname, attrs)
        setattr(mod, cname, classes[cname])

    def nptype(dtype):
        mod.touched.add("functions.nptype")
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_}[dtype.name]

    if "nptype" in surface["functions"]:
        mod.nptype = nptype
    return mod


def host_memory(mod, data: bytes):
    return mod.IHostMemory(data)


# --- what the tests drive sk-edge's TensorRT code with ----------------------------------------

ORIN = {"name": "Orin", "compute_capability": "8.7"}


def inspector_report(float_node: str) -> str:
    # The shape of TensorRT's EngineInspector JSON (LayerInformationFormat.JSON).
    return json.dumps({"Layers": [
        {"Name": "/stem/stem.0/Conv + /stem/stem.2/Relu", "LayerType": "CaskConvolution",
         "Outputs": [{"Name": "a", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
        {"Name": float_node, "LayerType": "PointWiseV2",
         "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "/fc/Gemm", "LayerType": "CaskGemm", "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32 format"}]},
    ]})


def inspector_report_of(graph: Path, downgrade: str | None = None) -> str:
    """An inspector report shaped like TensorRT 10.x's with DETAILED verbosity for a strongly typed build of ``graph``:
    one layer per Conv/Gemm, in the precision the graph gives it, with its ONNX node in ``Metadata``.
    ``downgrade`` names one node the "engine" runs in FP16 instead (a plan that does not honour the graph)."""
    import onnx

    from sk_edge.quantize.macs import graph_facts

    spelled = {"int8": "Channel major INT8 format where channel % 32 == 0", "fp16": "Row major linear FP16 format",
               "fp32": "Row major linear FP32 format"}
    weights = {"int8": "Int8", "fp16": "Half", "fp32": "Float"}
    layers = []
    for node, precision in graph_facts(onnx.load(str(graph))).precisions.items():
        precision = "fp16" if node == downgrade else precision
        layers.append({"Name": node, "LayerType": "CaskGemm" if "Gemm" in node else "CaskConvolution",
                       "Inputs": [{"Name": "x", "Format/Datatype": spelled[precision]}],
                       "Outputs": [{"Name": "y", "Format/Datatype": spelled[precision]}],
                       "Weights": {"Type": weights[precision], "Count": 64}, "Metadata": f"[ONNX Layer: {node}]"})
    layers.append({"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
                   "Inputs": [{"Name": "x", "Format/Datatype": spelled["fp32"]}],
                   "Outputs": [{"Name": "y", "Format/Datatype": spelled["fp16"]}], "Metadata": ""})
    return json.dumps({"Layers": layers})


def scenario(mod_holder: dict, num_classes: int = 10, input_size: int = 64) -> Scenario:
    shapes = {"input": (1, 3, input_size, input_size), "logits": (1, num_classes)}
    names = ["input", "logits"]

    def trt():
        return mod_holder["trt"]

    return Scenario(
        returns={
            "Builder.build_serialized_network": lambda self, network, config: host_memory(trt(), b"serialized plan"),
            # Kept so that a test can read back what was set on it (the calibrator, flags).
            "Builder.create_builder_config": lambda self: mod_holder.setdefault("configs", []).append(trt().IBuilderConfig())
            or mod_holder["configs"][-1],
            "ITimingCache.serialize": lambda self: host_memory(trt(), b"timing cache"),
            # Overloaded in some releases (signature "(*args, **kwargs)"): the type is given here.
            "Runtime.deserialize_cuda_engine": lambda self, plan: trt().ICudaEngine(),
            "ICudaEngine.create_execution_context": lambda self, *a: trt().IExecutionContext(),
            "ICudaEngine.create_engine_inspector": lambda self, *a: trt().EngineInspector(),
            "IExecutionContext.set_input_shape": lambda self, name, shape: tuple(shape) in ((1, 3, 64, 64), (8, 3, 64, 64)),
            "EngineInspector.get_engine_information": lambda self, fmt: mod_holder.get("report")
            or inspector_report(mod_holder["float_node"]),
            "ICudaEngine.get_tensor_name": lambda self, i: names[i],
            "ICudaEngine.get_tensor_mode": lambda self, n: trt().TensorIOMode.INPUT if n == "input" else trt().TensorIOMode.OUTPUT,
            "ICudaEngine.get_tensor_dtype": lambda self, n: trt().DataType.FLOAT,
            "IExecutionContext.get_tensor_shape": lambda self, n: shapes[n],
        },
        properties={"ICudaEngine.num_io_tensors": 2, "INetworkDefinition.num_layers": 2, "ILayer.name": "/stem/stem.0/Conv"},
    )


class FakeCuda:
    """pycuda.driver's calls as sk_edge.runtime makes them, on host memory (no GPU here)."""

    class Device:
        def __init__(self, index):
            self.index = index

        def retain_primary_context(self):
            return FakeCuda.Context()

    class Context:
        def __init__(self):
            self.detached = False

        def push(self):
            return None

        def pop(self):
            return None

        def detach(self):
            self.detached = True

    class Stream:
        handle = 1234

        def synchronize(self):
            return None

    class Event:
        """pycuda's Event: the stand-in's copies run on the host as they are queued, so the host clock times them."""

        def record(self, stream=None):
            self.at = time.perf_counter()
            return self

        def time_since(self, earlier):
            return (self.at - earlier.at) * 1e3

        def synchronize(self):
            return None

        def query(self):
            return True

    def __init__(self):
        self.memory: dict[int, np.ndarray] = {}
        self.allocated = 0

    def pagelocked_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    class Allocation(int):
        """A device address that can be freed, as pycuda's DeviceAllocation."""

        def free(self):
            self.owner.memory.pop(int(self))

    def mem_alloc(self, nbytes):
        address = FakeCuda.Allocation(0x1000 * (len(self.memory) + 1 + self.allocated))
        address.owner = self
        self.allocated += 1
        self.memory[int(address)] = np.zeros(nbytes, np.uint8)
        return address

    def memcpy_htod_async(self, dst, src, stream):
        self.memory[dst][:] = np.frombuffer(src.tobytes(), np.uint8)

    def memcpy_dtoh_async(self, dst, src, stream):
        dst.reshape(-1).view(np.uint8)[:] = self.memory[src]


# An engine sidecar as the engine stage writes it (sk_edge.engine_stage), for the runtime's checks:
# tests/data/engine_compat_cases.json is made from variants of it.
ORIN_HERE = {"machine": "aarch64", "jetson": True}
ENGINE_SIDECAR = {
    "kind": "sk-edge/engine", "schema": 1, "key": "0" * 64,
    "outputs": {"model.int8.engine": {"sha256": "1" * 64, "bytes": 1}},
    "inputs": {"onnx": {"name": "model.int8.onnx", "sha256": "2" * 64}, "calib_cache_sha256": None},
    "tensorrt": {"version": "10.3.0"}, "gpu": ORIN,
    "platform": ORIN_HERE, "settings": {"precision": "int8", "hardware_compatible": False, "dla_core": None},
    "model": {"input": {"name": "input", "shape": [1, 3, 64, 64]}, "output": {"name": "logits", "shape": [1, 10]}},
    "preprocess": {"input_size": 64, "mean": [0.322, 0.307, 0.276], "std": [0.189, 0.179, 0.191], "resize": "resize",
                   "crop_pct": 1.0, "interpolation": "bilinear", "channel_order": "RGB", "layout": "NCHW"},
}


def engine_sidecar(**changes) -> dict:
    """ENGINE_SIDECAR with ``section=value`` (None drops it) and ``section__field=value`` changed."""
    import copy

    doc = copy.deepcopy(ENGINE_SIDECAR)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            doc[section][name] = value
        elif value is None:
            doc.pop(section)
        else:
            doc[section] = value
    return doc
