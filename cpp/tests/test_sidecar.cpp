// The C++ runtime refuses the same engines as the Python runtime, in the same words.
//
// tests/data/engine_compat_cases.json holds sidecars, the environment each is opened in, and the
// message sk_edge.runtime gives; tests/test_cpp_runtime.py checks the file against the Python code,
// this test checks the C++ code against the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sk_edge/engine.hpp"

using nlohmann::json;

namespace {

json load_cases() {
    std::ifstream in(SK_EDGE_COMPAT_CASES);
    if (!in) throw std::runtime_error(std::string("cannot read ") + SK_EDGE_COMPAT_CASES);
    return json::parse(in);
}

}  // namespace

TEST(Sidecar, RefusesWhatThePythonRuntimeRefusesInTheSameWords) {
    const json doc = load_cases();
    ASSERT_GE(doc["cases"].size(), 8u);
    for (const auto& c : doc["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const auto sidecar = sk_edge::parse_sidecar(c["sidecar"].dump(), "case.json");
        std::optional<sk_edge::GpuIdentity> gpu;
        if (!c["gpu"].is_null()) gpu = sk_edge::GpuIdentity{c["gpu"]["name"], c["gpu"]["compute_capability"]};
        const sk_edge::Platform here{c["here"]["machine"], c["here"]["jetson"]};
        const std::string why = sk_edge::engine_mismatch(sidecar, c["tensorrt_version"], gpu, here);
        EXPECT_EQ(why, c["why"].is_null() ? "" : c["why"].get<std::string>());
        if (!why.empty()) EXPECT_EQ(sk_edge::refusal_message(c["engine_path"], sidecar, why), c["message"].get<std::string>());
    }
}

TEST(Sidecar, RefusesSidecarsOfAnotherSchemaOrKindInTheSameWords) {
    const json doc = load_cases();
    ASSERT_GE(doc["unreadable"].size(), 3u);
    for (const auto& c : doc["unreadable"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        try {
            sk_edge::parse_sidecar(c["sidecar"].dump(), c["source"]);
            ADD_FAILURE() << "read without an error";
        } catch (const sk_edge::Error& e) {
            EXPECT_EQ(std::string(e.what()), c["error"].get<std::string>());
        }
    }
}

TEST(Sidecar, ReadsPreprocessingShapesAndNames) {
    const auto s = sk_edge::parse_sidecar(R"({"kind": "sk-edge/engine", "schema": 1,
        "tensorrt": {"version": "10.3.0"}, "gpu": {"name": "Orin", "compute_capability": "8.7"},
        "platform": {"machine": "aarch64", "jetson": true},
        "settings": {"precision": "int8", "dla_core": 1, "hardware_compatible": false},
        "model": {"input": {"name": "input", "shape": [1, 3, 64, 64]}, "output": {"name": "logits", "shape": [1, 10]}},
        "preprocess": {"input_size": 64, "mean": [0.322, 0.307, 0.276], "std": [0.189, 0.179, 0.191],
                       "resize": "resize", "crop_pct": 1.0, "interpolation": "bicubic", "channel_order": "RGB"},
        "class_names": ["zero", "one"]})", "x.json");
    EXPECT_EQ(s.precision, "int8");
    EXPECT_EQ(s.dla_core.value(), 1);
    EXPECT_EQ(s.input_shape, (std::vector<int64_t>{1, 3, 64, 64}));
    EXPECT_EQ(s.preprocess.height, 64);
    EXPECT_EQ(s.preprocess.width, 64);
    EXPECT_EQ(s.preprocess.resize, "resize");
    EXPECT_EQ(s.preprocess.interpolation, "bicubic");
    EXPECT_FLOAT_EQ(s.preprocess.mean[1], 0.307f);
    EXPECT_FLOAT_EQ(s.preprocess.std[2], 0.191f);
    EXPECT_EQ(s.class_names.at(1), "one");
}

TEST(Sidecar, BadFilesAreOneLineErrorsNamingTheFile) {
    const auto dir = std::filesystem::temp_directory_path() / "sk_edge_sidecar_test";
    std::filesystem::create_directories(dir);
    const std::string engine = (dir / "model.int8.engine").string();
    std::filesystem::remove(engine + ".json");
    try {
        sk_edge::read_sidecar(engine);
        FAIL() << "a missing sidecar was accepted";
    } catch (const sk_edge::Error& e) {
        EXPECT_EQ(std::string(e.what()), "'" + engine + ".json' is missing or unreadable, so 'model.int8.engine' cannot be "
                                         "checked; rebuild with `sk-edge build`");
    }
    std::ofstream(engine + ".json") << "{not json";
    try {
        sk_edge::read_sidecar(engine);
        FAIL() << "a broken sidecar was accepted";
    } catch (const sk_edge::Error& e) {
        EXPECT_NE(std::string(e.what()).find("model.int8.engine.json' is not valid JSON"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
    std::ofstream(engine + ".json") << R"({"kind": "sk-edge/engine", "schema": 1, "preprocess": {"mean": [0.5, 0.5]}})";
    EXPECT_THROW(sk_edge::read_sidecar(engine), sk_edge::Error);
    std::filesystem::remove_all(dir);
}

TEST(Sidecar, TensorRTVersionsCompareByTheComponentsBothGive) {
    EXPECT_TRUE(sk_edge::same_tensorrt_version("10.3.0", "10.3.0.26"));
    EXPECT_TRUE(sk_edge::same_tensorrt_version("8.5.2.2", "8.5.2"));
    EXPECT_FALSE(sk_edge::same_tensorrt_version("10.3.0", "10.3.1"));
    EXPECT_FALSE(sk_edge::same_tensorrt_version("10.13.3.9", "10.13.3.8"));
    EXPECT_FALSE(sk_edge::same_tensorrt_version("10.3", "10.3.0.26"));  // two components name no release
    EXPECT_FALSE(sk_edge::same_tensorrt_version("None", "10.3.0"));
}

TEST(Engine, AnEngineFromAnotherTensorRTIsRefusedBeforeAnythingLoads) {
    // With the stand-in libnvinfer nothing could load anyway; the refusal must come first, from the sidecar.
    const auto dir = std::filesystem::temp_directory_path() / "sk_edge_engine_test";
    std::filesystem::create_directories(dir);
    const std::string engine = (dir / "model.int8.engine").string();
    std::ofstream(engine) << "not an engine";
    std::ofstream(engine + ".json") << R"({"kind": "sk-edge/engine", "schema": 1, "tensorrt": {"version": "7.0.0"},
                                         "settings": {"precision": "int8"}})";
    try {
        sk_edge::Engine e(engine);
        FAIL() << "an engine from TensorRT 7.0.0 was accepted";
    } catch (const sk_edge::Error& e) {
        // Linked to TensorRT-RTX, the flavour differs before the version does.
        const std::string linked = sk_edge::linked_tensorrt_flavour() == "rtx" ? "this runtime is linked to TensorRT-RTX "
                                                                               : "this is TensorRT ";
        EXPECT_EQ(std::string(e.what()), "'" + engine + "' cannot run here: it was built with TensorRT 7.0.0 and " + linked +
                                             sk_edge::linked_tensorrt_version() + "; rebuild it on this device with `sk-edge build "
                                             "--from " + dir.string() + " --precision int8`");
    }
    try {
        sk_edge::Engine e((dir / "absent.engine").string());
        FAIL() << "a missing engine was accepted";
    } catch (const sk_edge::Error& e) {
        EXPECT_NE(std::string(e.what()).find("absent.engine' does not exist; build it with `sk-edge build`"), std::string::npos);
    }
    std::filesystem::remove_all(dir);
}

TEST(Engine, TheLinkedTensorRTVersionIsTheLibrarys) {
    // The stand-in reports the headers' release, so the whole string is known; a real libnvinfer of
    // another release than its headers gives three components, which is still comparable.
    if (SK_EDGE_STANDIN) EXPECT_EQ(sk_edge::linked_tensorrt_version(), SK_EDGE_TRT_HEADERS_VERSION);
    EXPECT_TRUE(sk_edge::same_tensorrt_version(sk_edge::linked_tensorrt_version(), SK_EDGE_TRT_HEADERS_VERSION) ||
                !SK_EDGE_STANDIN);
}
