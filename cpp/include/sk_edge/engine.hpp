// sk_edge: run an sk-edge TensorRT engine from C++ (ROS 2 nodes, GStreamer elements, camera loops).
//
//   sk_edge::Engine engine("work/model.int8.engine");           // refuses an engine built elsewhere
//   auto top5 = engine.classify(sk_edge::ImageView::bgr(frame.data, frame.cols, frame.rows, frame.step), 5);
//
// The engine's JSON sidecar (written by `sk-edge build`) says which TensorRT, GPU and platform built
// it, the preprocessing the model was trained with and the class names; the same checks and the
// same messages as the Python runtime (sk_edge.runtime.Engine). Errors are sk_edge::Error, whose
// what() is one line.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sk_edge/preprocess.hpp"

namespace sk_edge {

// One-line errors: a missing file, an engine from another TensorRT/GPU/platform, a CUDA failure.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct GpuIdentity {
    std::string name;
    std::string compute_capability;  // "8.7"
};

struct Platform {
    std::string machine;  // "x86_64", "aarch64" (Python's platform.machine())
    bool jetson = false;
};

// The sidecar schema this runtime reads (sk_edge.artifacts.SIDECAR_SCHEMA); another is refused.
inline constexpr int kSidecarSchema = 1;

// What `sk-edge build` recorded beside an engine (model.<precision>.engine.json).
struct EngineSidecar {
    std::string tensorrt_version;  // as the building TensorRT reported it, e.g. "10.3.0" or "8.5.2.2"
    std::optional<GpuIdentity> gpu;
    std::optional<Platform> platform;  // absent in sidecars older than the platform check
    std::string precision;             // "int8", "fp16", "fp32"
    bool hardware_compatible = false;
    std::optional<int> dla_core;
    std::string input_name, output_name;
    std::vector<int64_t> input_shape, output_shape;
    Preprocess preprocess;
    std::vector<std::string> class_names;  // empty when the work directory has none
    std::string flavour = "tensorrt";      // "rtx": built by TensorRT for RTX (--target rtx)
    std::vector<std::string> compute_capabilities;  // TensorRT-RTX: the targets ("86", "120")
    bool default_targets = false;                    // TensorRT-RTX: NVIDIA's default set (and later GPUs)
};

// The TensorRT-RTX compute capabilities, as sk_edge.backends.tensorrt.RTX_SMS and RTX_DEFAULT_SMS.
inline const std::vector<std::string>& rtx_sms() {
    static const std::vector<std::string> sms{"75", "80", "86", "89", "120", "121"};
    return sms;
}
inline const std::vector<std::string>& rtx_default_sms() {
    static const std::vector<std::string> sms{"80", "86", "89", "120"};
    return sms;
}

// Reads `<engine>.json`; throws Error naming the file when it is missing or malformed, of another
// sidecar schema, or not an engine's sidecar.
EngineSidecar read_sidecar(const std::string& engine_path);
EngineSidecar parse_sidecar(const std::string& json_text, const std::string& source);

// Why an engine described by `sidecar` cannot run here, or an empty string when it can.
// The same rules, in the same order and words, as sk_edge.backends.tensorrt.engine_mismatch.
std::string engine_mismatch(const EngineSidecar& sidecar, const std::string& tensorrt_version,
                            const std::optional<GpuIdentity>& gpu, const Platform& here);

// An engine built by the other flavour (TensorRT-RTX vs TensorRT) than the library this runtime links:
// why it cannot run, or an empty string. (Python imports the flavour the sidecar names instead.)
std::string flavour_mismatch(const EngineSidecar& sidecar, const std::string& linked_flavour, const std::string& linked_version);

// TensorRT-RTX engine files: the release an engine's header names ("1.7.1.116"), or empty when the
// bytes are no TensorRT-RTX header; why the header cannot be loaded by `linked_version`, or empty
// (sk_edge.runtime.rtx_engine_invalid's first checks, in its words); the words for
// IRuntime::getEngineValidity's diagnostics; the runtime cache file kept beside an engine.
std::string rtx_header_version(const void* data, size_t size);
std::string rtx_header_mismatch(const void* data, size_t size, const std::string& linked_version);
std::string rtx_invalidity(uint64_t diagnostics);
std::string rtx_runtime_cache_path(const std::string& engine_path);

// The whole refusal, with the rebuild command: as sk_edge.runtime.Engine words it.
std::string refusal_message(const std::string& engine_path, const EngineSidecar& sidecar, const std::string& why);

// Whether two TensorRT version strings name the same release ("10.3.0" and "10.3.0.26" do: the
// components both give must agree, and there must be at least three).
bool same_tensorrt_version(const std::string& a, const std::string& b);

// This process: the linked TensorRT's version and flavour ("tensorrt", or "rtx" when built against
// TensorRT-RTX's headers and libtensorrt_rtx), CUDA device 0, the CPU architecture and Jetson-ness.
std::string linked_tensorrt_version();
std::string linked_tensorrt_flavour();
std::optional<GpuIdentity> current_gpu();
Platform current_platform();

struct Prediction {
    int index = 0;
    float score = 0.f;  // softmax probability
    std::string name;   // from the sidecar's class names, else empty
};

// The k highest-scoring classes of one row of logits (softmax in double, ties by lower index).
std::vector<Prediction> top_k(const float* logits, int num_classes, int k, const std::vector<std::string>& names = {});

struct EngineOptions {
    std::optional<int> dla_core;      // default: the sidecar's; set on the runtime before deserializing
    void* stream = nullptr;           // a cudaStream_t to run on; nullptr: the engine's own stream. It must
                                      // outlive the Engine, whose destructor waits for the work queued on it
    bool cuda_graph = false;          // capture the enqueue once, then replay it
    bool check_sidecar = true;        // refuse an engine built for another TensorRT, GPU or platform
    bool zero_copy = false;           // mapped pinned memory for the image on integrated GPUs (Jetson)
    int max_image_width = 4096, max_image_height = 4096;  // the staging buffer, allocated once: every frame of a
                                                          // batch is packed into it
    int max_batch = 1;  // frames per enqueue_batch; an engine with a dynamic batch whose profile allows it
    // A call's upload and GPU preprocessing run on a second stream into the other of two input buffers,
    // so they overlap the previous call's inference (not with cuda_graph, which captures one stream).
    bool overlap_preprocessing = true;
};

class Engine {
public:
    explicit Engine(const std::string& engine_path, EngineOptions options = {});
    ~Engine();
    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const EngineSidecar& sidecar() const;
    int num_classes() const;

    // Preprocess `image` on the GPU (the sidecar's size, resize mode, mean/std, channel order; the
    // frame's pixel format converted in the same pass) and run the engine; returns the logits of
    // batch element 0. Blocks until they are here.
    std::vector<float> infer(const ImageView& image);
    // The same, asynchronous: queued on the engine's stream (EngineOptions::stream) and returned at
    // once. The logits are copied into `logits` (num_classes() floats the caller owns; pinned memory
    // keeps the copy asynchronous), then `done` (a cudaEvent_t the caller owns) is recorded: wait on
    // it, or make another stream wait. A host frame is copied into the engine's staging buffer before
    // the call returns (waiting only for the previous frame's upload), so the caller may reuse it; a
    // device frame (ImageView::device()) must be written when handed over (or by work queued earlier on
    // EngineOptions::stream) and stay valid until `done`. With overlap_preprocessing (the default), the
    // upload and preprocessing run on the engine's second stream, so the next call's overlap this call's
    // inference; the inference and the copies stay on the engine's stream, where `done` is recorded.
    void enqueue(const ImageView& image, float* logits, void* done);
    // `count` frames (1 to EngineOptions::max_batch, any mix of sizes, formats, host and device) in one
    // call, as one batch through the engine: each preprocessed into its slot of the input, one
    // execution, `count * num_classes()` logits in frame order. Asynchronous as enqueue (host frames
    // are staged before it returns; device frames must stay valid until `done`).
    void enqueue_batch(const ImageView* images, int count, float* logits, void* done);
    // The blocking form: one row of logits per frame.
    std::vector<std::vector<float>> infer_batch(const std::vector<ImageView>& images);
    // Run the engine on an already preprocessed NCHW float32 host tensor of the engine's input shape.
    std::vector<float> infer_tensor(const float* nchw, size_t count);
    std::vector<Prediction> classify(const ImageView& image, int k = 5);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sk_edge
