"""sk-edge's TensorRT code against the real API surface of every supported TensorRT release.

No TensorRT library can be installed here, so the build, load and run paths run against a
stand-in ``tensorrt`` module generated from the bindings' surface of each release
(``tests/trt_standin.py``): a name the release lacks, or a call with the wrong number of
arguments, fails the test unless the code gates on the version. What this does not prove:
that TensorRT builds a good engine from our graphs (that needs a GPU and TensorRT).
"""

import itertools
import json

import numpy as np
import pytest

from sk_edge import cli
from sk_edge import engine_stage as pipeline
from sk_edge.backends.tensorrt import (DEVICE_TARGETS, BuildOptions, TrtFeatures, build_engine, engine_mismatch,
                                      engine_sidecar_path, retarget_calib_cache, trtexec_command)
from sk_edge.backends.layer_plan import parse_inspector_layers, summarize
from sk_edge.errors import SkEdgeError
from sk_edge.export import ExportOptions, export_model
from sk_edge.models import build_model
from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model
from sk_edge.runtime import Engine

from conftest import CALIB, calibration_subset
from trt_standin import (ORIN, RTX_VERSION, VERSIONS, FakeCuda, Scenario, inspector_report, inspector_report_of, parse_signature,
                         scenario, standin_module)



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The reference model exported (dynamic batch up to 8), calibrated on 16 real images,
    quantized to INT8 and FP16."""
    wd = tmp_path_factory.mktemp("trt")
    export_model(build_model("sknet26-digits"), wd, ExportOptions(dynamic_batch=8))
    images = calibration_subset(wd / "images", 16)
    calibrate(wd, images, CalibrationOptions(num_images=16, batch=8))
    quantize_model(wd, "int8")
    quantize_model(wd, "fp16")
    return wd


@pytest.fixture(scope="module")
def static_workdir(tmp_path_factory):
    """The same with a static batch of 1, as the DLA needs."""
    wd = tmp_path_factory.mktemp("trt_static")
    export_model(build_model("sknet26-digits"), wd)
    calibrate(wd, CALIB, CalibrationOptions(num_images=16, batch=8))
    quantize_model(wd, "int8")  # the strongly typed DLA path (11.4.1+) builds the precision graph
    return wd


@pytest.mark.parametrize("version", VERSIONS)
def test_build_load_and_run_use_only_names_the_release_has(workdir, static_workdir, tmp_path, version):
    holder: dict = {}
    trt = holder["trt"] = standin_module(version, scenario(holder))
    plan = json.loads((workdir / "model.int8.json").read_text())["plan"]
    holder["float_node"] = next(iter(plan["float_nodes"]))
    # No dynamic_batch here: the profile (1 / 8 / 8) comes from the dynamic export.
    options = BuildOptions(workspace_mib=512, opt_level=4, timing_cache=tmp_path / "timing.cache", hardware_compatible=True)
    features = TrtFeatures.of(trt)

    if not features.strongly_typed:  # 8.5 / 8.6 (JetPack 5.1 / 6.0): a weakly typed GPU build from the FP32 graph
        if not features.hardware_compatibility:
            with pytest.raises(SkEdgeError, match=r"no hardware-compatible engines \(8\.6 or later\)"):
                pipeline.build_engine_stage(workdir, "int8", options, trt=trt, gpu=ORIN, force=True)
            options = BuildOptions(workspace_mib=512, opt_level=4, timing_cache=tmp_path / "timing.cache")
        holder["configs"] = []
        result = pipeline.build_engine_stage(workdir, "int8", options, trt=trt, gpu=ORIN, force=True)
        sidecar = json.loads(engine_sidecar_path(result.engine).read_text())
        assert result.engine.name == "model.int8.engine" and sidecar["settings"]["legacy_weakly_typed"]
        assert sidecar["inputs"]["onnx"]["name"] == "model.fp32.onnx"
        assert {"BuilderFlag.INT8", "BuilderFlag.FP16", "IBuilderConfig.int8_calibrator", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"} <= trt.touched
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" not in trt.touched and "DeviceType.DLA" not in trt.touched
        cache = holder["configs"][-1].int8_calibrator.read_calibration_cache()
        assert cache.splitlines()[0] == features.calib_cache_header.encode()
        with Engine(result.engine, trt=trt, cuda=FakeCuda(), gpu=ORIN) as engine:
            assert engine(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 10)
    else:
        # An inspector report that does not honour the graph's INT8 for one layer fails the build, naming it.
        holder["report"] = inspector_report_of(workdir / "model.int8.onnx", downgrade="/stem/stem.0/Conv")
        (workdir / "model.int8.engine").unlink(missing_ok=True)
        with pytest.raises(SkEdgeError, match=r"computes 1 of the 54 Conv/Gemm layers .*/stem/stem.0/Conv \(int8 in the graph; "
                                              r"engine layer '/stem/stem.0/Conv': fp16 input, fp16 weights\).*no engine written"):
            pipeline.build_engine_stage(workdir, "int8", options, trt=trt, gpu=ORIN, force=True)
        assert not (workdir / "model.int8.engine").exists()
        holder["report"] = inspector_report_of(workdir / "model.int8.onnx")
        result = pipeline.build_engine_stage(workdir, "int8", options, trt=trt, gpu=ORIN, force=True)
        assert result.engine.read_bytes() == b"serialized plan"
        assert (tmp_path / "timing.cache").read_bytes() == b"timing cache"
        sidecar = json.loads(engine_sidecar_path(result.engine).read_text())
        assert sidecar["tensorrt"] == {"version": trt.__version__, "flavour": "tensorrt"} and sidecar["gpu"] == ORIN
        assert sidecar["inputs"]["onnx"]["name"] == "model.int8.onnx"
        assert sidecar["settings"]["dynamic_batch"] == 8
        plan_summary = sidecar["layers_summary"]
        assert plan_summary["by_precision"] == {"int8": 38, "fp16": 17} and plan_summary["convert_only_layers"] == 1
        graph_mix = json.loads((workdir / "model.int8.json").read_text())["precision_mix"]
        assert plan_summary["precision_checked"] and plan_summary["int8_mac_share"] == pytest.approx(graph_mix["int8_mac_share"])
        assert len(plan_summary["float_sk_units"]) == 8  # every SK unit of the SKNet-26
        layers = json.loads((workdir / "model.int8.layers.json").read_text())
        assert layers["source"] == "engine inspector" and len(layers["layers"]) == 55
        assert {"IBuilderConfig.builder_optimization_level", "IOptimizationProfile.set_shape",
                "EngineInspector.execution_context", "IBuilderConfig.hardware_compatibility_level"} <= trt.touched
        assert ("NetworkDefinitionCreationFlag.STRONGLY_TYPED" in trt.touched) == (features.version < (11,))
        assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" not in trt.touched
        assert "BuilderFlag.INT8" not in trt.touched and "BuilderFlag.FP16" not in trt.touched

        # load and run through sk_edge.runtime, numpy in and out
        engine = Engine(result.engine, trt=trt, cuda=FakeCuda(), gpu={"name": "RTX 4090", "compute_capability": "8.9"})
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        out = engine(x)
        assert out.shape == (1, 10) and out.dtype == np.float32
        assert {"IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address",
                "IExecutionContext.set_input_shape", "ICudaEngine.num_io_tensors"} <= trt.touched
        with pytest.raises(SkEdgeError, match="must be float32"):
            engine(x.astype(np.float16))
        # Polygraphy's lifecycle: close() frees the device buffers and gives back the CUDA context.
        cuda = engine.cuda
        assert cuda.memory
        engine.close()
        engine.close()  # twice is harmless
        assert not cuda.memory and engine._context.detached
        with pytest.raises(SkEdgeError, match="was closed"):
            engine(x)

    # The legacy DLA path: weakly typed, INT8/FP16 flags, calib.cache replayed; static shapes only.
    dla = BuildOptions(dla_core=0, timing_cache=tmp_path / "dla.cache")
    with pytest.raises(SkEdgeError, match="the DLA needs static shapes"):
        pipeline.build_engine_stage(workdir, "int8", dla, legacy=True, trt=trt, gpu=ORIN)
    workdir = static_workdir
    if features.dla_legacy:
        holder["configs"] = []
        result = pipeline.build_engine_stage(workdir, "int8", dla, legacy=True, trt=trt, gpu=ORIN, force=True)
        assert result.engine.name == "model.int8.dla.engine"
        assert "IBuilderConfig.can_run_on_DLA" in trt.touched
        # TensorRT 8.5 has no optimisation levels (its trtexec rejects the flag too): not touched there.
        assert ("IBuilderConfig.builder_optimization_level" in trt.touched) == features.optimization_level
        dla = json.loads((workdir / "dla.json").read_text())
        assert dla["summary"]["layers"] == 2 and dla["summary"]["pooling"]["rewritten"]
        sidecar = json.loads(engine_sidecar_path(result.engine).read_text())
        assert sidecar["inputs"]["onnx"]["name"] == "model.fp32.dla.onnx" and sidecar["inputs"]["calib_cache_sha256"]
        assert {"BuilderFlag.INT8", "BuilderFlag.GPU_FALLBACK", "IBuilderConfig.int8_calibrator", "IBuilderConfig.DLA_core"} <= trt.touched
        # The cache reaches the builder under the header of the TensorRT that reads it.
        cache = holder["configs"][-1].int8_calibrator.read_calibration_cache()
        assert cache.splitlines()[0] == features.calib_cache_header.encode()
        assert cache.splitlines()[1:] == (workdir / "calib.cache").read_bytes().splitlines()[1:]
        # The runtime runs it on the core it was built for: DLA_core is set before deserializing.
        with Engine(result.engine, trt=trt, cuda=FakeCuda(), gpu=ORIN):
            assert "Runtime.DLA_core" in trt.touched
        assert ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH" in trt.touched) == (features.version < (10,))
    else:  # 10.8 to 11.4.0: no DLA on Jetson, whichever path is asked for
        with pytest.raises(SkEdgeError, match=r"has no DLA support on Jetson \(10\.7 was the last 10\.x with DLA; 11\.4\.1"):
            pipeline.build_engine_stage(workdir, "int8", dla, legacy=True, trt=trt, gpu=ORIN, force=True)


def test_dla_on_tensorrt_11_4_1_is_strongly_typed(static_workdir, tmp_path):
    """JetPack 7.2.2's TensorRT 11.4.1: the DLA takes the Q/DQ graph itself, with no flags and no calibrator.

    11.4.1's bindings are not among the dumped surfaces; 11.4.0.106's (the same API) stands in,
    presented as 11.4.1.
    """
    holder: dict = {}
    trt = holder["trt"] = standin_module("11.4.0.106", scenario(holder))
    trt.__version__ = "11.4.1"
    holder["float_node"] = "x"
    dla = BuildOptions(dla_core=1, timing_cache=tmp_path / "dla.cache")
    result = pipeline.build_engine_stage(static_workdir, "int8", dla, legacy=True, trt=trt, gpu=ORIN, force=True)
    sidecar = json.loads(engine_sidecar_path(result.engine).read_text())
    assert result.engine.name == "model.int8.dla.engine"
    assert sidecar["inputs"]["onnx"]["name"] == "model.int8.onnx" and not sidecar["settings"]["legacy_weakly_typed"]
    assert {"DeviceType.DLA", "IBuilderConfig.DLA_core", "BuilderFlag.GPU_FALLBACK", "IBuilderConfig.can_run_on_DLA"} <= trt.touched
    assert not {"BuilderFlag.INT8", "BuilderFlag.FP16", "IBuilderConfig.int8_calibrator"} & trt.touched


def test_calib_cache_header_follows_the_reader():
    cache = b"TRT-100300-EntropyCalibration2\ninput: 3c010204\n"
    assert retarget_calib_cache(cache, TrtFeatures((8, 5, 2))) == b"TRT-8502-EntropyCalibration2\ninput: 3c010204\n"
    assert retarget_calib_cache(cache, TrtFeatures((10, 7, 0))).startswith(b"TRT-100700-EntropyCalibration2\n")


@pytest.mark.parametrize("label, version", DEVICE_TARGETS)
@pytest.mark.parametrize("precision", ["int8", "fp16"])
@pytest.mark.parametrize("dla_core", [None, 0])
def test_every_trtexec_line_is_valid_for_its_release(static_workdir, label, version, precision, dla_core):
    """One line per TensorRT family in on_device.sh, with only the flags that release's trtexec has."""
    lines = pipeline.trtexec_lines(static_workdir, precision, BuildOptions(dla_core=dla_core))
    mine = [line for line in lines if line.startswith(f"# {label}")]
    assert len(mine) == 1
    at = lines.index(mine[0])
    block = list(itertools.takewhile(lambda line: line.startswith("#   "), lines[at + 1 :]))  # up to the next family
    command = next((line for line in block if line.startswith("#   trtexec")), None)
    features = TrtFeatures(version)
    if dla_core is not None and not features.dla:
        assert "no DLA on Jetson" in mine[0] and command is None
        return
    flags = set(command.split())
    legacy = features.dla_legacy if dla_core is not None else not features.strongly_typed
    assert ("--stronglyTyped" in flags) == (not legacy and features.version < (11,))
    assert any(f.startswith("--builderOptimizationLevel") for f in flags) == features.optimization_level
    assert ("--int8" in flags) == ("--calib=calib.cache" in flags) == (legacy and precision == "int8")
    assert ("--fp16" in flags) == legacy
    if features.version >= (11,):
        assert not {"--int8", "--fp16", "--stronglyTyped"} & flags and not any(f.startswith("--calib") for f in flags)
    graph = ("model.fp32.dla.onnx" if dla_core is not None else "model.fp32.onnx") if legacy else f"model.{precision}.onnx"
    assert f"--onnx={graph}" in flags
    if dla_core is not None:
        assert {"--useDLACore=0", "--allowGPUFallback"} <= flags
    if legacy and precision == "int8":
        assert f"sed -i '1s/.*/{features.calib_cache_header}/' calib.cache" in lines[at + 1]


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_parser_errors_name_the_node_and_op(workdir, version):
    holder: dict = {}
    sc = scenario(holder)

    for name, value in (("node_name", "/stages/stages.0/sk/Mul"), ("node_operator", "Mul"), ("desc", "unsupported broadcast")):
        sc.returns[f"ParserError.{name}"] = (lambda v: lambda self: v)(value)
    sc.returns["OnnxParser.parse"] = lambda self, data, path=None: False
    sc.returns["OnnxParser.get_error"] = lambda self, i: holder["trt"].ParserError()
    sc.properties["OnnxParser.num_errors"] = 1
    trt = holder["trt"] = standin_module(version, sc)
    with pytest.raises(SkEdgeError, match=r"cannot parse 'model.int8.onnx': node '/stages/stages.0/sk/Mul' \(Mul\): unsupported broadcast"):
        build_engine(workdir / "model.int8.onnx", "input", (1, 3, 64, 64), BuildOptions(), trt=trt)


def test_stale_engines_are_refused_with_what_to_rebuild():
    from trt_standin import engine_sidecar

    from sk_edge.sidecars import EngineInfo

    def sidecar_of(**changes):
        return EngineInfo.from_doc(engine_sidecar(**changes), "model.int8.engine.json")

    sidecar = sidecar_of(platform=None)
    assert engine_mismatch(sidecar, "10.3.0", ORIN) is None
    assert "built with TensorRT 10.3.0 and this is TensorRT 10.13.3.9" in engine_mismatch(sidecar, "10.13.3.9", ORIN)
    assert "built on a Orin" in engine_mismatch(sidecar, "10.3.0", {"name": "RTX 4090", "compute_capability": "8.9"})
    compatible = sidecar_of(platform=None, settings={"precision": "int8", "hardware_compatible": True})
    assert engine_mismatch(compatible, "10.3.0", {"name": "RTX 4090", "compute_capability": "8.9"}) is None
    assert "Ampere and newer" in engine_mismatch(compatible, "10.3.0", {"name": "T4", "compute_capability": "7.5"})
    # An Ampere+ engine from an x86-64 desktop is still not an Orin engine: the platform is recorded and checked.
    desktop = sidecar_of(platform={"machine": "x86_64", "jetson": False}, settings={"precision": "int8", "hardware_compatible": True})
    orin = {"machine": "aarch64", "jetson": True}
    assert engine_mismatch(desktop, "10.3.0", ORIN, here={"machine": "x86_64", "jetson": False}) is None
    assert "it was built on x86_64 and this is aarch64 Jetson" in engine_mismatch(desktop, "10.3.0", ORIN, here=orin)


def test_engine_refuses_a_sidecar_from_another_version(workdir, tmp_path):
    holder: dict = {}
    trt = holder["trt"] = standin_module("10.13.3.9", scenario(holder))
    holder["float_node"] = "x"
    result = pipeline.build_engine_stage(workdir, "fp16", BuildOptions(timing_cache=tmp_path / "t.cache"), trt=trt, gpu=ORIN)
    newer = standin_module("10.16.1.11", scenario(holder))
    with pytest.raises(SkEdgeError, match=r"built with TensorRT 10\.13\.3\.9 and this is TensorRT 10\.16\.1\.11; rebuild it on this device with `sk-edge build --from"):
        Engine(result.engine, trt=newer, cuda=FakeCuda(), gpu=ORIN)
    # A build with the newer TensorRT does not keep the foreign engine: it rebuilds it and says why.
    holder["trt"] = newer
    logs: list[str] = []
    pipeline.build_engine_stage(workdir, "fp16", BuildOptions(timing_cache=tmp_path / "t.cache"), trt=newer, gpu=ORIN,
                                log=logs.append)
    assert "rebuilding model.fp16.engine: it was built by TensorRT 10.13.3.9, this is 10.16.1.11" in logs


def test_standin_is_strict():
    """The stand-in itself must reject what the release lacks, or the test above proves nothing."""
    trt11 = standin_module("11.4.0.106")
    with pytest.raises(AttributeError):
        getattr(trt11.BuilderFlag, "INT8")  # noqa: B009 - the attribute's absence is the point
    config = trt11.IBuilderConfig()
    with pytest.raises(AttributeError):
        config.int8_calibrator = object()
    with pytest.raises(TypeError):
        trt11.IBuilderConfig().set_timing_cache(trt11.ITimingCache())  # needs ignore_mismatch too
    trt86 = standin_module("8.6.1")
    with pytest.raises(AttributeError):
        getattr(trt86.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")  # noqa: B009
    assert parse_signature("parse(self: X, model: buffer, path: str = None) -> bool") == (1, 2, "bool")


def test_trtexec_line_matches_the_build():
    line = trtexec_command("model.int8.onnx", "model.int8.engine", "input", (1, 3, 64, 64),
                           BuildOptions(workspace_mib=2048, opt_level=5, dynamic_batch=8))
    assert line.startswith("trtexec --onnx=model.int8.onnx --saveEngine=model.int8.engine --stronglyTyped")
    for part in ("--memPoolSize=workspace:2048M", "--builderOptimizationLevel=5",
                 "--minShapes=input:1x3x64x64", "--optShapes=input:8x3x64x64", "--maxShapes=input:8x3x64x64"):
        assert part in line
    legacy = trtexec_command("model.fp32.onnx", "e", "input", (1, 3, 64, 64), BuildOptions(dla_core=1), legacy=True)
    assert "--int8 --fp16 --calib=calib.cache" in legacy and "--useDLACore=1 --allowGPUFallback" in legacy
    # An FP16 DLA build asks for no INT8 and no calibration cache (which it never has).
    fp16 = trtexec_command("model.fp32.dla.onnx", "e", "input", (1, 3, 64, 64), BuildOptions(dla_core=1), legacy=True,
                           precision="fp16")
    assert "--fp16" in fp16 and "--int8" not in fp16 and "--calib" not in fp16


def test_layer_summary_counts_precisions():
    report = json.loads(inspector_report("/stages/stages.1/stages.1.0/sk/Sigmoid"))
    summary = summarize(parse_inspector_layers(report), None, {"/stages/stages.1/stages.1.0/sk/Sigmoid": "SK attention path"})
    assert summary["by_precision"] == {"int8": 1, "fp16": 1, "fp32": 1}
    assert summary["float_sk_units"] == ["stages/stages.1/stages.1.0"]
    assert not summary["mapped_to_onnx"]  # no Metadata (TensorRT before 10.x): the plan cannot be held to the graph


def test_cli_build_precisions_match_the_library():
    assert cli.BUILD_PRECISIONS == pipeline.PRECISIONS


def test_dla_engines_are_visible_to_verify_bench_and_the_serving_exports(static_workdir, tmp_path):
    import shutil

    from sk_edge.bench import BenchOptions, plan_configs
    from sk_edge.serving import export_deepstream
    from sk_edge.verify import candidate_runner
    from sk_edge.workdir import built_engines

    wd = tmp_path / "wd"
    shutil.copytree(static_workdir, wd, ignore=shutil.ignore_patterns("*.engine", "*.engine.json"))
    holder: dict = {}
    trt = holder["trt"] = standin_module("10.3.0", scenario(holder))
    holder["float_node"] = "x"
    pipeline.build_engine_stage(wd, "int8", BuildOptions(dla_core=1, timing_cache=tmp_path / "t.cache"), legacy=True,
                                trt=trt, gpu=ORIN, force=True)
    assert built_engines(wd) == [("int8", "model.int8.dla.engine")]
    # Named by the user (required): planned even here, where no TensorRT can run it (a default run says so and skips it).
    configs = plan_configs(wd, BenchOptions(backends=("tensorrt",)), log=lambda m: None)
    assert [(c.backend, c.precision, c.device, c.path) for c in configs] == [("tensorrt", "int8", "dla", str(wd / "model.int8.dla.engine"))]
    text = export_deepstream(wd, unverified=True).read_text()  # the engine was never judged: said in the config
    assert "model-engine-file=model.int8.dla.engine" in text and "enable-dla=1" in text and "use-dla-core=1" in text
    # verify.json's chain names the graph the engine was really built from (the DLA-pooled FP32 graph).
    from sk_edge.artifacts import sha256_file
    from sk_edge.verify import _chain, candidate_precision_mix
    from sk_edge.workdir import load_engine

    engine = load_engine(wd, "int8", name="model.int8.dla.engine")
    chain = _chain(wd, "int8", engine)
    assert chain["graph"] == {"model.fp32.dla.onnx": sha256_file(wd / "model.fp32.dla.onnx")}
    assert chain["engine"] == {"model.int8.dla.engine": sha256_file(wd / "model.int8.dla.engine")} and "calibration" in chain
    # The Q/DQ plan's INT8 share is the INT8 graph's, never claimed for an engine built from the FP32 graph.
    assert candidate_precision_mix(wd, "int8", "model.int8.onnx")["int8_mac_share"] > 0.9
    assert engine.onnx_name == "model.fp32.dla.onnx" and candidate_precision_mix(wd, "int8", engine.onnx_name) is None
    # verify finds it too: here it stops only because no real TensorRT is installed to run it.
    with pytest.raises(SkEdgeError, match="TensorRT is not installed here"):
        candidate_runner(wd, "engine", log=lambda m: None)


def test_weakly_typed_int8_gets_a_range_for_every_activation(tmp_path):
    """--legacy-ranges: calib.cache covers every activation (plus the DLA pool chain's), not just the Q/DQ plan's."""
    from sk_edge.quantize.cache import read_cache

    wd = tmp_path / "wd"
    export_model(build_model("sknet26-digits"), wd)
    images = calibration_subset(tmp_path / "images", 16)
    calibrate(wd, images, CalibrationOptions(num_images=16, batch=8))
    holder: dict = {}
    trt = holder["trt"] = standin_module("10.3.0", scenario(holder))
    holder["float_node"] = "x"
    logs: list[str] = []
    options = BuildOptions(dla_core=0, timing_cache=tmp_path / "t.cache")
    pipeline.build_engine_stage(wd, "int8", options, legacy=True, trt=trt, gpu=ORIN, force=True, log=logs.append)
    assert any("has ranges for the 30 tensors the Q/DQ plan quantizes only" in line for line in logs)

    doc = calibrate(wd, images, CalibrationOptions(num_images=16, batch=8, legacy_ranges=True))
    header, scales = read_cache(wd / "calib.cache")
    assert len(doc["tensors"]) == 30 and len(scales) == 163  # every float activation of the SKNet-26 graph
    holder["configs"], logs = [], []
    pipeline.build_engine_stage(wd, "int8", options, legacy=True, trt=trt, gpu=ORIN, force=True, log=logs.append)
    assert not any("Q/DQ plan quantizes only" in line for line in logs)
    cache = holder["configs"][-1].int8_calibrator.read_calibration_cache().decode()
    chain = [line for line in cache.splitlines() if "_dla_pool" in line]
    pooling = json.loads((wd / "dla.json").read_text())["summary"]["pooling"]["rewritten"]
    assert len(chain) == sum(len(w) - 1 for w in pooling.values()) > 0


def test_a_shared_timing_cache_is_merged_not_overwritten(workdir, tmp_path):
    """Two builds on one machine: the second to finish combines the first's timings, under a lock."""
    cache = tmp_path / "shared.cache"
    cache.write_bytes(b"timings of an earlier build")
    holder: dict = {"float_node": "x"}
    quiet = scenario(holder)
    trt = holder["trt"] = standin_module("10.13.3.9", quiet)
    pipeline.build_engine_stage(workdir, "fp16", BuildOptions(timing_cache=cache), trt=trt, gpu=ORIN, force=True)
    assert "ITimingCache.combine" not in trt.touched  # nobody wrote meanwhile: nothing to merge
    assert cache.read_bytes() == b"timing cache"

    busy = scenario(holder)
    build = busy.returns["Builder.build_serialized_network"]

    def build_while_another_finishes(self, network, config):
        cache.write_bytes(b"timings another build wrote meanwhile")
        return build(self, network, config)

    busy.returns["Builder.build_serialized_network"] = build_while_another_finishes
    trt = holder["trt"] = standin_module("10.13.3.9", busy)
    pipeline.build_engine_stage(workdir, "fp16", BuildOptions(timing_cache=cache), trt=trt, gpu=ORIN, force=True)
    assert {"ITimingCache.combine", "IBuilderConfig.create_timing_cache"} <= trt.touched
    assert (tmp_path / "shared.cache.lock").exists() and not list(tmp_path.glob(".shared.cache.*.tmp"))


def test_dla_layer_verdicts_are_asked_after_the_precision_flags(static_workdir, tmp_path):
    """can_run_on_DLA answers for the precisions set: asked before them, INT8 layers read as unsupported."""
    import shutil

    wd = tmp_path / "wd"
    shutil.copytree(static_workdir, wd, ignore=shutil.ignore_patterns("*.engine", "*.engine.json"))
    holder: dict = {"float_node": "x"}
    events: list[str] = []
    steps = scenario(holder)
    steps.returns["IBuilderConfig.set_flag"] = lambda self, flag: events.append(flag.name)
    steps.returns["IBuilderConfig.can_run_on_DLA"] = lambda self, layer: events.append("can_run_on_DLA") or True
    trt = holder["trt"] = standin_module("10.3.0", steps)
    pipeline.build_engine_stage(wd, "int8", BuildOptions(dla_core=0, timing_cache=tmp_path / "t.cache"), legacy=True,
                                trt=trt, gpu=ORIN, force=True)
    assert {"FP16", "INT8"} <= set(events[: events.index("can_run_on_DLA")])


def test_tensorrt_rtx_engines_load_and_run_with_only_names_tensorrt_rtx_has(tmp_path):
    """The load-and-run path of a TensorRT-RTX engine (it needs an RTX GPU) against the real 1.7.1.116 surface:
    the header's validity checked before any CUDA work, the runtime cache read into the execution context's
    runtime config and written back beside the engine on close."""
    from sk_edge.workdir import runtime_cache_name

    holder: dict = {}
    validity: dict = {}
    base = scenario(holder)
    rtx = Scenario(returns={
        **base.returns,
        "Runtime.get_engine_validity": lambda self, header: validity["answer"],
        "ICudaEngine.create_runtime_config": lambda self: holder.setdefault("config", holder["trt"].IRuntimeConfig()),
        "IRuntimeConfig.create_runtime_cache": lambda self: holder["trt"].IRuntimeCache(),
        "IRuntimeCache.serialize": lambda self: holder["trt"].IHostMemory(b"kernels for this GPU"),
        "IRuntimeCache.deserialize": lambda self, blob: holder.setdefault("read", bytes(blob)) is not None,
    }, properties={**base.properties, "Runtime.engine_header_size": 64})
    trt = holder["trt"] = standin_module(RTX_VERSION, rtx)
    assert TrtFeatures.of(trt).rtx and trt.__version__ == "1.7.1.116"
    # An engine whose header names TensorRT-RTX 1.7.1.116 (the layout of the engines its builder writes here) and its sidecar.
    engine = tmp_path / "model.int8.rtx.engine"
    engine.write_bytes(b"vtrt" + bytes(20) + bytes([1, 7, 1, 116]) + bytes(200))
    sidecar = {"kind": "sk-edge/engine", "schema": 1, "key": "0" * 64,
               "outputs": {engine.name: {"sha256": "0" * 64, "bytes": 1}},
               "inputs": {"onnx": {"name": "model.int8.onnx", "sha256": "0" * 64}}, "settings": {"precision": "int8"},
               "tensorrt": {"version": "1.7.1.116", "flavour": "rtx"}, "gpu": None,
               "rtx": {"compute_capabilities": ["80", "86", "89", "120"], "default_targets": True}}
    engine_sidecar_path(engine).write_text(json.dumps(sidecar))
    validity["answer"] = (trt.EngineValidity.VALID, 0)
    ada = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    cache = tmp_path / runtime_cache_name(engine.name)
    cache.write_bytes(b"an earlier run's kernels")
    with Engine(engine, trt=trt, cuda=FakeCuda(), gpu=ada) as loaded:
        assert loaded(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 10)
    assert holder["read"] == b"an earlier run's kernels" and cache.read_bytes() == b"kernels for this GPU"
    assert {"Runtime.get_engine_validity", "Runtime.engine_header_size", "ICudaEngine.create_runtime_config",
            "IRuntimeConfig.create_runtime_cache", "IRuntimeConfig.set_runtime_cache", "IRuntimeCache.serialize",
            "IExecutionContext.execute_async_v3"} <= trt.touched
    # A GPU the engine does not target, and an engine the runtime calls invalid: one line each, before any CUDA work.
    with pytest.raises(SkEdgeError, match=r"built for compute capabilities 80, 86, 89, 120 and this T4 is 7.5; rebuild "
                                          r"with --rtx-sm 75; rebuild it on this device with `sk-edge build .* --target rtx`"):
        Engine(engine, trt=trt, cuda=FakeCuda(), gpu={"name": "T4", "compute_capability": "7.5"})
    validity["answer"] = (trt.EngineValidity.INVALID, 0)
    with pytest.raises(SkEdgeError, match="TensorRT-RTX says the engine is invalid on this machine"):
        Engine(engine, trt=trt, cuda=None, gpu=ada)
