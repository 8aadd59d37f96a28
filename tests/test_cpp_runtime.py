"""The Python side of the C++ runtime's checks (cpp/, issue 13).

tests/data/engine_compat_cases.json holds engine sidecars, the environment each is opened in, and
what sk_edge.runtime says of it. This test proves the file is what the Python code says today; the
C++ tests (`ctest`, cpp/tests/test_sidecar.cpp) prove the C++ runtime says the same. Regenerate the
file after a deliberate change with SK_EDGE_WRITE_CASES=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trt_standin import ORIN, ORIN_HERE
from trt_standin import engine_sidecar as variant

from sk_edge.backends.tensorrt import engine_mismatch, same_tensorrt_version
from sk_edge.errors import SkEdgeError
from sk_edge.runtime import refusal_message
from sk_edge.sidecars import EngineInfo

CASES = Path(__file__).parent / "data" / "engine_compat_cases.json"


def cases() -> list[dict]:
    rtx = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    desktop = {"machine": "x86_64", "jetson": False}
    table = [
        ("runs", variant(), "10.3.0", ORIN, ORIN_HERE, "work/model.int8.engine"),
        ("runs, build number only on one side", variant(), "10.3.0.26", ORIN, ORIN_HERE, "work/model.int8.engine"),
        ("runs, JetPack's four-part version", variant(tensorrt={"version": "8.5.2.2"}), "8.5.2", ORIN, ORIN_HERE, "model.int8.engine"),
        ("another TensorRT", variant(), "10.13.3.9", ORIN, ORIN_HERE, "work/model.int8.engine"),
        ("another patch release", variant(), "10.3.1", ORIN, ORIN_HERE, "/abs/work dir/model.int8.engine"),
        ("no GPU here", variant(), "10.3.0", None, ORIN_HERE, "work/model.int8.engine"),
        ("built on a desktop, opened on a Jetson", variant(platform=desktop, gpu=rtx), "10.3.0", ORIN, ORIN_HERE, "w/model.fp16.engine"),
        ("built on a Jetson, opened on a desktop", variant(), "10.3.0", rtx, desktop, "model.int8.engine"),
        ("another GPU", variant(gpu=rtx, platform=desktop), "10.3.0",
         {"name": "NVIDIA RTX A2000", "compute_capability": "8.6"}, desktop, "work/model.int8.engine"),
        ("hardware compatible on Ampere", variant(gpu=rtx, platform=desktop, settings__hardware_compatible=True), "10.3.0",
         {"name": "NVIDIA RTX A2000", "compute_capability": "8.6"}, desktop, "work/model.int8.engine"),
        ("hardware compatible on Turing", variant(gpu=rtx, platform=desktop, settings__hardware_compatible=True), "10.3.0",
         {"name": "Tesla T4", "compute_capability": "7.5"}, desktop, "work/model.int8.engine"),
        ("an older sidecar without platform", variant(platform=None), "10.3.0", ORIN, ORIN_HERE, "work/model.int8.engine"),
        ("fp16 engine, another GPU", variant(settings__precision="fp16"), "10.3.0", {"name": "Xavier", "compute_capability": "7.2"},
         ORIN_HERE, "work/model.fp16.engine"),
        # TensorRT-RTX engines: tied to their release and to the compute capabilities they target, not to a GPU.
        ("TensorRT-RTX, default targets, on Ada", rtx_variant(), "1.7.1.116", rtx, desktop, "work/model.int8.rtx.engine"),
        ("TensorRT-RTX, default targets, on a later Blackwell", rtx_variant(), "1.7.1",
         {"name": "NVIDIA RTX PRO 6000", "compute_capability": "12.1"}, desktop, "work/model.int8.rtx.engine"),
        ("TensorRT-RTX, another release", rtx_variant(), "1.6.1.120", rtx, desktop, "work/model.int8.rtx.engine"),
        ("TensorRT-RTX, no GPU here", rtx_variant(), "1.7.1.116", None, desktop, "work/model.int8.rtx.engine"),
        ("TensorRT-RTX, Turing not targeted", rtx_variant(), "1.7.1.116", {"name": "NVIDIA GeForce RTX 2080", "compute_capability": "7.5"},
         desktop, "work/model.int8.rtx.engine"),
        ("TensorRT-RTX on Hopper", rtx_variant(), "1.7.1.116", {"name": "NVIDIA H200", "compute_capability": "9.0"}, desktop,
         "work/model.int8.rtx.engine"),
        ("TensorRT-RTX, targets named, another generation", rtx_variant(["86", "120"]), "1.7.1.116", rtx, desktop,
         "work/model.fp16.rtx.engine"),
        ("TensorRT-RTX, targets named, on one of them", rtx_variant(["86", "120"]), "1.7.1.116",
         {"name": "NVIDIA RTX A2000", "compute_capability": "8.6"}, desktop, "work/model.fp16.rtx.engine"),
    ]
    out = []
    for name, sidecar, version, gpu, here, path in table:
        info = EngineInfo.from_doc(sidecar, path + ".json")
        why = engine_mismatch(info, version, gpu, here)
        out.append({"name": name, "sidecar": sidecar, "tensorrt_version": version, "gpu": gpu, "here": here,
                    "engine_path": path, "why": why, "message": refusal_message(Path(path), info, why) if why else None})
    return out


def rtx_variant(targets: list[str] | None = None) -> dict:
    """An engine sidecar as `sk-edge build --target rtx` writes it: no GPU recorded, the targets instead."""
    return variant(tensorrt={"version": "1.7.1.116", "flavour": "rtx"}, gpu=None, platform={"machine": "x86_64", "jetson": False},
                   rtx={"compute_capabilities": targets or ["80", "86", "89", "120"], "default_targets": targets is None})


def unreadable() -> list[dict]:
    """Sidecars neither runtime may read: the one-line error each gives (the C++ runtime words them the same)."""
    table = [
        ("a newer sidecar schema", variant(schema=2)),
        ("no schema", variant(schema=None)),
        ("not an engine sidecar", variant(kind="sk-edge/quantize-int8")),
    ]
    out = []
    for name, sidecar in table:
        try:
            EngineInfo.from_doc(sidecar, "work/model.int8.engine.json")
        except SkEdgeError as exc:
            out.append({"name": name, "sidecar": sidecar, "source": "work/model.int8.engine.json", "error": str(exc)})
        else:
            raise AssertionError(f"{name}: read without an error")
    return out


def test_the_cases_file_is_what_the_python_runtime_says():
    computed = {"note": "generated by tests/test_cpp_runtime.py from sk_edge.runtime; checked by pytest and ctest",
                "cases": cases(), "unreadable": unreadable()}
    if os.environ.get("SK_EDGE_WRITE_CASES"):
        CASES.write_text(json.dumps(computed, indent=1) + "\n")
    assert json.loads(CASES.read_text()) == computed, "regenerate with SK_EDGE_WRITE_CASES=1 after a deliberate change"
    whys = [c["why"] for c in computed["cases"]]
    assert whys.count(None) == 8 and len(set(w for w in whys if w)) == len([w for w in whys if w])  # every refusal differs


def test_tensorrt_versions_compare_by_the_components_both_give():
    assert same_tensorrt_version("10.3.0", "10.3.0.26") and same_tensorrt_version("8.5.2.2", "8.5.2")
    assert not same_tensorrt_version("10.3.0", "10.3.1") and not same_tensorrt_version("10.3", "10.3.0.26")
    assert not same_tensorrt_version("None", "10.3.0")
