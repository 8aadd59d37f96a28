// The C++ runtime against NVIDIA's real TensorRT-RTX library (libtensorrt_rtx, libtensorrt_onnxparser_rtx):
// an engine built through the C++ builder and ONNX parser from sk-edge's FP16 graph, on a machine with
// or without a GPU (TensorRT-RTX compiles ahead of time on the CPU), and the refusals sk_edge::Engine
// gives where it cannot run. Only built when the headers are TensorRT-RTX's.
//
// FP16, not INT8: the newest public headers are 1.6.1's, linked to the 1.6.1 library (minor releases are
// not ABI-compatible), and the 1.6.1 builder stops on sk-edge's INT8 Q/DQ convolutions ("MyelinCheckException:
// cudnn_impl.cpp:89: CHECK(dtype == myelinTypeFloat || ...)", the same through its Python bindings); 1.7.1
// builds them, which tests/test_tensorrt_rtx.py checks through the Python bindings.
#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "sk_edge/engine.hpp"

namespace {

namespace fs = std::filesystem;

class KeepingLogger : public nvinfer1::ILogger {
public:
    std::string layers;  // the builder's "Layers:" message (VERBOSE, with profiling verbosity DETAILED)
    std::vector<std::string> errors;
    void log(Severity severity, const char* msg) noexcept override {
        const std::string text(msg);
        if (text.rfind("Layers:", 0) == 0) layers = text;
        if (severity <= Severity::kERROR) errors.push_back(text);
    }
};

const fs::path kGraph = fs::path(SK_EDGE_FIXTURES) / "model.fp16.onnx";

std::vector<char> build_engine(KeepingLogger& logger) {
    std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
    EXPECT_TRUE(builder);
    std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(0));  // strongly typed: TensorRT-RTX's only kind
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
    EXPECT_TRUE(parser->parseFromFile(kGraph.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING)))
        << (logger.errors.empty() ? "" : logger.errors.back());
    std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    config->setProfilingVerbosity(nvinfer1::ProfilingVerbosity::kDETAILED);
    std::unique_ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan) return {};
    const auto* bytes = static_cast<const char*>(plan->data());
    return std::vector<char>(bytes, bytes + plan->size());
}

// An engine and its sidecar in a fresh folder, as `sk-edge build --target rtx` leaves them.
fs::path write_engine(const std::vector<char>& plan, const std::string& version) {
    const fs::path dir = fs::temp_directory_path() / ("sk_edge_rtx_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const fs::path engine = dir / "model.fp16.rtx.engine";
    std::ofstream(engine, std::ios::binary).write(plan.data(), static_cast<std::streamsize>(plan.size()));
    std::ofstream(engine.string() + ".json") << R"({"kind": "sk-edge/engine", "schema": 1,
        "tensorrt": {"version": ")" << version << R"(", "flavour": "rtx"}, "gpu": null,
        "platform": {"machine": "x86_64", "jetson": false}, "settings": {"precision": "fp16"},
        "rtx": {"compute_capabilities": ["80", "86", "89", "120"], "default_targets": true},
        "model": {"input": {"name": "input", "shape": [1, 3, 64, 64]}, "output": {"name": "logits", "shape": [1, 10]}}})";
    return engine;
}

std::string refusal(const fs::path& engine, bool check_sidecar) {
    sk_edge::EngineOptions options;
    options.check_sidecar = check_sidecar;
    try {
        sk_edge::Engine e(engine.string(), options);
    } catch (const sk_edge::Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Rtx, TheLinkedLibraryIsTensorRTRtx) {
    EXPECT_EQ(sk_edge::linked_tensorrt_flavour(), "rtx");
    EXPECT_EQ(sk_edge::linked_tensorrt_version().rfind(std::to_string(NV_TENSORRT_MAJOR) + ".", 0), 0u);
}

TEST(Rtx, NvidiasBuilderBuildsSkEdgesFp16GraphThroughTheCppApiAndPlansItInFp16) {
    ASSERT_TRUE(fs::is_regular_file(kGraph)) << kGraph << " is missing: run cpp/tests/make_fixtures.py";
    KeepingLogger logger;
    const std::vector<char> plan = build_engine(logger);
    ASSERT_GT(plan.size(), 100000u) << (logger.errors.empty() ? "no engine" : logger.errors.back());
    EXPECT_EQ(sk_edge::rtx_header_version(plan.data(), plan.size()).rfind(std::to_string(NV_TENSORRT_MAJOR) + "." +
                                                                          std::to_string(NV_TENSORRT_MINOR) + ".", 0), 0u);
    EXPECT_EQ(sk_edge::rtx_header_mismatch(plan.data(), plan.size(), sk_edge::linked_tensorrt_version()), "");
    // The fused plan the Python side maps back to ONNX nodes: FP16 convolutions, named by their ONNX nodes.
    ASSERT_FALSE(logger.layers.empty());
    EXPECT_NE(logger.layers.find("Datatype: Half"), std::string::npos);
    EXPECT_EQ(logger.layers.find("Datatype: Int8"), std::string::npos);
    EXPECT_NE(logger.layers.find("[ONNX Layer: /stem/stem.0/Conv]"), std::string::npos);
}

TEST(Rtx, AnEngineThatCannotRunHereIsRefusedInOneLine) {
    KeepingLogger logger;
    std::vector<char> plan = build_engine(logger);
    ASSERT_FALSE(plan.empty());
    const std::string version = sk_edge::linked_tensorrt_version();
    const fs::path engine = write_engine(plan, version);
    const std::string parent = engine.parent_path().string();
    if (!sk_edge::current_gpu()) {
        EXPECT_EQ(refusal(engine, true), "'" + engine.string() + "' cannot run here: there is no CUDA GPU here (it runs on an RTX "
                                         "GPU); rebuild it on this device with `sk-edge build --from " + parent +
                                         " --precision fp16 --target rtx`");
        // Without the sidecar's check, TensorRT-RTX's own validity check of the header says it.
        EXPECT_EQ(refusal(engine, false), "'" + engine.string() + "' cannot run here: TensorRT-RTX says the engine is invalid "
                                          "on this machine (no usable CUDA driver or GPU)");
    }
    // An engine of another TensorRT-RTX release, and a file that is no TensorRT-RTX engine, whatever the GPU.
    plan[0x19] = static_cast<char>(plan[0x19] - 1);
    std::ofstream(engine, std::ios::binary).write(plan.data(), static_cast<std::streamsize>(plan.size()));
    const std::string older = sk_edge::rtx_header_version(plan.data(), plan.size());
    EXPECT_EQ(refusal(engine, false), "'" + engine.string() + "' cannot run here: it was built by TensorRT-RTX " + older +
                                      " and this is TensorRT-RTX " + version + "; rebuild it with this release");
    std::ofstream(engine, std::ios::binary) << std::string(128, '\0');
    EXPECT_NE(refusal(engine, false).find("it is not a TensorRT-RTX engine (its header is not one)"), std::string::npos);
    // A TensorRT engine's sidecar: this runtime links TensorRT-RTX.
    std::ofstream(engine.string() + ".json") << R"({"kind": "sk-edge/engine", "schema": 1, "tensorrt": {"version": "10.3.0"},
                                                  "settings": {"precision": "fp16"}})";
    EXPECT_EQ(refusal(engine, true), "'" + engine.string() + "' cannot run here: it was built with TensorRT 10.3.0 and this "
                                     "runtime is linked to TensorRT-RTX " + version + "; rebuild it on this device with "
                                     "`sk-edge build --from " + parent + " --precision fp16`");
    fs::remove_all(engine.parent_path());
}

TEST(Rtx, TheRuntimeCacheLivesBesideTheEngine) {
    EXPECT_EQ(sk_edge::rtx_runtime_cache_path("w/model.int8.rtx.engine"), "w/model.int8.rtx.runtime.cache");
    EXPECT_EQ(sk_edge::rtx_invalidity((1ULL << 1) | (1ULL << 5)),
              "TensorRT-RTX says the engine is invalid on this machine (unsupported cc, malformed engine)");
}
