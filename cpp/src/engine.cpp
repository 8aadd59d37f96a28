// sk_edge::Engine: a deserialized TensorRT engine, its buffers, stream and preprocessing, RAII.
//
// The lifecycle is the Python runtime's: the sidecar is checked before anything is loaded; the DLA
// core is set on the runtime before deserializing (an engine runs on the core its runtime names);
// buffers are allocated once, outside the per-frame path; each frame is one host-to-device copy of
// the 8-bit image (none with zero-copy mapped memory on an integrated GPU), two preprocessing
// kernels, enqueueV3, one device-to-host copy of the logits, one synchronisation. With
// cuda_graph=true the whole sequence is captured once per image size and replayed.
//
// Built against TensorRT-RTX's headers (TRT_MAJOR_RTX) and linked to libtensorrt_rtx, the same class
// runs TensorRT-RTX engines: the engine file's header is checked against this machine before it is
// deserialized (IRuntime::getEngineValidity), and the kernels TensorRT-RTX compiles for this GPU are
// kept in a runtime cache file beside the engine (model.int8.rtx.runtime.cache), read when the engine
// loads and written back when it is destroyed.
#include <cuda_runtime_api.h>

#include <NvInfer.h>
#include <NvInferVersion.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/utsname.h>

#include "sk_edge/engine.hpp"

namespace sk_edge {
namespace {

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw Error(std::string("CUDA failed in ") + what + ": " + cudaGetErrorString(err));
}

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "TensorRT: " << msg << "\n";
    }
};

struct CudaFree {
    void operator()(void* p) const noexcept { cudaFree(p); }
};
struct CudaFreeHost {
    void operator()(void* p) const noexcept { cudaFreeHost(p); }
};
struct StreamDestroy {
    void operator()(CUstream_st* s) const noexcept { cudaStreamDestroy(s); }
};
struct GraphExecDestroy {
    void operator()(CUgraphExec_st* g) const noexcept { cudaGraphExecDestroy(g); }
};
struct EventDestroy {
    void operator()(CUevent_st* e) const noexcept { cudaEventDestroy(e); }
};

template <typename T, typename D>
using Owned = std::unique_ptr<T, D>;

size_t volume(const nvinfer1::Dims& d) {
    size_t n = 1;
    for (int i = 0; i < d.nbDims; ++i) n *= static_cast<size_t>(d.d[i] < 0 ? 1 : d.d[i]);
    return n;
}

}  // namespace

std::string linked_tensorrt_version() {
    // The library's own version, with the build number of the headers when the release matches:
    // same_tensorrt_version compares only the components both sides give.
    const int32_t v = getInferLibVersion();
    const int major = v >= 10000 ? v / 10000 : v / 1000;  // 10.x encodes major * 10000, 8.x major * 1000
    const int minor = v >= 10000 ? (v / 100) % 100 : (v / 100) % 10;
    const int patch = v % 100;
    std::string text = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
    if (major == NV_TENSORRT_MAJOR && minor == NV_TENSORRT_MINOR && patch == NV_TENSORRT_PATCH)
        text += "." + std::to_string(NV_TENSORRT_BUILD);
    return text;
}

std::string linked_tensorrt_flavour() {
#if defined(TRT_MAJOR_RTX)
    return "rtx";
#else
    return "tensorrt";
#endif
}

std::optional<GpuIdentity> current_gpu() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cudaGetLastError();  // clear the sticky "no device" error
        return std::nullopt;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return std::nullopt;
    return GpuIdentity{prop.name, std::to_string(prop.major) + "." + std::to_string(prop.minor)};
}

Platform current_platform() {
    utsname u{};
    uname(&u);
    // A Jetson: L4T's release file (what sk_edge.environment.jetson_info reads first).
    return Platform{u.machine, std::filesystem::exists("/etc/nv_tegra_release")};
}

struct Engine::Impl {
    std::string path;
    EngineOptions options;
    EngineSidecar sidecar;
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    Owned<CUstream_st, StreamDestroy> own_stream;
    cudaStream_t stream = nullptr;
    std::string input_name, output_name;
    size_t input_count = 0, output_count = 0;
    Owned<void, CudaFree> d_input, d_output, d_image;
    Owned<void, CudaFreeHost> h_output, h_image;  // pinned
    uint8_t* image_device_view = nullptr;  // d_image, or the mapped view of h_image (zero-copy)
    std::unique_ptr<CudaScratch, CudaScratchDeleter> scratch{new_cuda_scratch()};
    Owned<CUgraphExec_st, GraphExecDestroy> graph;
    int graph_width = -1, graph_height = -1;
    PixelFormat graph_format = PixelFormat::RGB;
    size_t image_capacity = 0, staged_bytes = 0;
    Owned<CUevent_st, EventDestroy> staging_free;  // recorded after each upload of the staging buffer
    int batch = 1;  // the input shape's batch the context is set to
    size_t slots = 1;  // frames per input buffer: EngineOptions::max_batch
    // Overlap (EngineOptions::overlap_preprocessing): a call's upload and preprocessing run on their own
    // stream into one of two input buffers, so they proceed while the previous call's inference runs on
    // `stream`. input_ready[b]: buffer b is preprocessed; input_free[b]: the inference reading it is done;
    // call_start: recorded on the caller's stream at entry, for device frames its earlier work produced.
    Owned<CUstream_st, StreamDestroy> prep_stream;
    Owned<CUevent_st, EventDestroy> input_ready[2], input_free[2], call_start;
    int next_buffer = 0;

    std::vector<ImageView> stage(const ImageView* images, int count);
    void run_frames(const ImageView* images, const std::vector<ImageView>& device_images);
    void run_overlapped(const ImageView* images, const std::vector<ImageView>& device_images);
    void set_batch(int count);
    void make_overlap_streams();
    float* input_buffer(int b) { return static_cast<float*>(d_input.get()) + static_cast<size_t>(b) * slots * input_count; }
    bool overlapped() const { return options.overlap_preprocessing && !options.cuda_graph; }
    // enqueue returns before its work runs: that work (on `stream`, and on prep_stream when overlapped) must end
    // before the buffers it reads and writes, the context and the streams go, or the GPU would touch freed memory
    // (an Engine destroyed, or assigned over, right after an enqueue). Errors are not reported: a destructor
    // cannot throw, and the caller's next CUDA call sees a sticky one.
    ~Impl() {
        if (stream) cudaStreamSynchronize(stream);
        if (prep_stream) cudaStreamSynchronize(prep_stream.get());
#if defined(TRT_MAJOR_RTX)
        save_runtime_cache();
#endif
    }
#if defined(TRT_MAJOR_RTX)
    std::unique_ptr<nvinfer1::IRuntimeConfig> runtime_config;
    std::unique_ptr<nvinfer1::IRuntimeCache> runtime_cache;
    std::string runtime_cache_path;

    // The kernels compiled for this GPU, kept for the next start; a folder that cannot be written
    // costs only that start's compile time.
    void save_runtime_cache() {
        if (!runtime_cache) return;
        std::unique_ptr<nvinfer1::IHostMemory> data(runtime_cache->serialize());
        if (!data) return;
        const std::string tmp = runtime_cache_path + ".tmp";
        std::ofstream out(tmp, std::ios::binary);
        out.write(static_cast<const char*>(data->data()), static_cast<std::streamsize>(data->size()));
        out.close();
        std::error_code ec;
        if (out) std::filesystem::rename(tmp, runtime_cache_path, ec);
        if (!out || ec) {
            std::filesystem::remove(tmp, ec);
            std::cerr << "sk-edge: warning: the TensorRT-RTX runtime cache was not saved to '" << runtime_cache_path << "'\n";
        }
    }
#endif

    // Each frame preprocessed into its slot of input buffer `b` on `prep` (stream order keeps the shared
    // scratch safe).
    void preprocess_frames(const ImageView* device_images, int count, int b, cudaStream_t prep) {
        for (int i = 0; i < count; ++i)
            preprocess_cuda(device_images[i], sidecar.preprocess, input_buffer(b) + i * input_count, *scratch, prep);
    }

    // One execution on input buffer `b`, the logits of all `count` frames copied back.
    void infer_buffer(int b, int count) {
        if (!context->setTensorAddress(input_name.c_str(), input_buffer(b)))
            throw Error("TensorRT refused the input buffer's address");
        if (!context->enqueueV3(stream)) throw Error("TensorRT failed to enqueue the engine (see its messages above)");
        check(cudaMemcpyAsync(h_output.get(), d_output.get(), count * output_count * sizeof(float), cudaMemcpyDeviceToHost,
                              stream),
              "cudaMemcpyAsync (logits)");
    }

    // The single-stream path (and what a CUDA graph captures): buffer 0, preprocessing then inference.
    void enqueue_frames(const ImageView* device_images, int count) {
        preprocess_frames(device_images, count, 0, stream);
        infer_buffer(0, count);
    }
};

Engine::Engine(const std::string& engine_path, EngineOptions options) : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    m.path = engine_path;
    m.options = options;
    if (!std::filesystem::is_regular_file(engine_path))
        throw Error("engine file '" + engine_path + "' does not exist; build it with `sk-edge build`");
    m.sidecar = read_sidecar(engine_path);
    if (options.check_sidecar) {
        std::string why = flavour_mismatch(m.sidecar, linked_tensorrt_flavour(), linked_tensorrt_version());
        if (why.empty()) why = engine_mismatch(m.sidecar, linked_tensorrt_version(), current_gpu(), current_platform());
        if (!why.empty()) throw Error(refusal_message(engine_path, m.sidecar, why));
    }
    std::ifstream in(engine_path, std::ios::binary);
    const std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    m.runtime.reset(nvinfer1::createInferRuntime(m.logger));
    if (!m.runtime) throw Error("TensorRT could not create a runtime (" + linked_tensorrt_version() + ")");
#if defined(TRT_MAJOR_RTX)
    // Before any CUDA work: a foreign or damaged engine, or a machine it cannot run on, is one line.
    std::string invalid = rtx_header_mismatch(blob.data(), blob.size(), linked_tensorrt_version());
    if (invalid.empty() && static_cast<int64_t>(blob.size()) >= m.runtime->getEngineHeaderSize()) {
        uint64_t diagnostics = 0;
        if (m.runtime->getEngineValidity(blob.data(), m.runtime->getEngineHeaderSize(), &diagnostics) ==
            nvinfer1::EngineValidity::kINVALID)
            invalid = rtx_invalidity(diagnostics);
    }
    if (!invalid.empty()) throw Error("'" + engine_path + "' cannot run here: " + invalid);
#endif
    const std::optional<int> dla = options.dla_core ? options.dla_core : m.sidecar.dla_core;
    if (dla) m.runtime->setDLACore(*dla);  // before deserializing, or the engine runs on core 0
    m.engine.reset(m.runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!m.engine) throw Error("TensorRT could not load '" + engine_path + "' (see its messages above); rebuild it");
#if defined(TRT_MAJOR_RTX)
    m.runtime_config.reset(m.engine->createRuntimeConfig());
    if (!m.runtime_config) throw Error("TensorRT-RTX could not create a runtime configuration for '" + engine_path + "'");
    m.runtime_cache.reset(m.runtime_config->createRuntimeCache());
    m.runtime_cache_path = rtx_runtime_cache_path(engine_path);
    std::ifstream cached(m.runtime_cache_path, std::ios::binary);
    const std::vector<char> cache_blob((std::istreambuf_iterator<char>(cached)), std::istreambuf_iterator<char>());
    // A cache from another GPU or release is not used by TensorRT-RTX and is replaced on save.
    if (m.runtime_cache && !cache_blob.empty()) m.runtime_cache->deserialize(cache_blob.data(), cache_blob.size());
    if (m.runtime_cache) m.runtime_config->setRuntimeCache(*m.runtime_cache);
    m.context.reset(m.engine->createExecutionContext(m.runtime_config.get()));
#else
    m.context.reset(m.engine->createExecutionContext());
#endif
    if (!m.context) throw Error("TensorRT could not create an execution context for '" + engine_path + "'");
    for (int32_t i = 0; i < m.engine->getNbIOTensors(); ++i) {
        const char* name = m.engine->getIOTensorName(i);
        if (m.engine->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
            throw Error(std::string("tensor '") + name + "' of '" + engine_path + "' is not float32; sk-edge engines keep FP32 I/O");
        (m.engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? m.input_name : m.output_name) = name;
    }
    if (m.input_name.empty() || m.output_name.empty()) throw Error("'" + engine_path + "' has no input or no output tensor");
    nvinfer1::Dims shape = m.engine->getTensorShape(m.input_name.c_str());
    if (shape.nbDims != 4) throw Error("'" + engine_path + "' input is not NCHW");
    shape.d[0] = 1;  // one image per call; a dynamic-batch engine's profile includes 1
    if (!m.context->setInputShape(m.input_name.c_str(), shape)) throw Error("batch 1 is outside the engine's profile");
    m.input_count = volume(shape);
    m.output_count = volume(m.context->getTensorShape(m.output_name.c_str()));
    if (m.input_count != static_cast<size_t>(3) * m.sidecar.preprocess.height * m.sidecar.preprocess.width)
        throw Error("the engine's input does not match its sidecar's preprocessing size; rebuild it with `sk-edge build`");
    if (options.max_batch < 1) throw Error("EngineOptions::max_batch must be at least 1");
    const int profile_max = m.engine->getProfileShape(m.input_name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX).d[0];
    if (options.max_batch > 1 && profile_max < options.max_batch)
        throw Error("EngineOptions::max_batch " + std::to_string(options.max_batch) + " is more than '" + engine_path +
                    "' takes (its profile's batch goes up to " + std::to_string(std::max(profile_max, 1)) +
                    "); build it with `sk-edge build --dynamic-batch " + std::to_string(options.max_batch) + "`");
    m.slots = static_cast<size_t>(options.max_batch);
    const size_t buffers = m.overlapped() ? 2 : 1;

    if (options.stream) {
        m.stream = static_cast<cudaStream_t>(options.stream);
    } else {
        cudaStream_t s = nullptr;
        check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
        m.own_stream.reset(s);
        m.stream = s;
    }
    void* p = nullptr;
    check(cudaMalloc(&p, buffers * m.slots * m.input_count * sizeof(float)), "cudaMalloc (input)");
    m.d_input.reset(p);
    check(cudaMalloc(&p, m.slots * m.output_count * sizeof(float)), "cudaMalloc (output)");
    m.d_output.reset(p);
    check(cudaMallocHost(&p, m.slots * m.output_count * sizeof(float)), "cudaMallocHost (output)");
    m.h_output.reset(p);
    // 4 bytes a pixel: the largest format (RGBA, BGRx); NV12 and I420 take 1.5, YUYV 2.
    m.image_capacity = static_cast<size_t>(options.max_image_width) * options.max_image_height * 4;
    cudaEvent_t staged = nullptr;
    check(cudaEventCreateWithFlags(&staged, cudaEventDisableTiming), "cudaEventCreate");
    m.staging_free.reset(staged);
    check(cudaEventRecord(staged, m.stream), "cudaEventRecord (staging)");
    if (m.overlapped()) m.make_overlap_streams();
    if (options.zero_copy) {
        // Integrated GPUs (Jetson) share DRAM with the CPU: the kernels read the pinned page directly.
        check(cudaHostAlloc(&p, m.image_capacity, cudaHostAllocMapped), "cudaHostAlloc (mapped image)");
        m.h_image.reset(p);
        void* device_view = nullptr;
        check(cudaHostGetDevicePointer(&device_view, p, 0), "cudaHostGetDevicePointer");
        m.image_device_view = static_cast<uint8_t*>(device_view);
    } else {
        check(cudaMallocHost(&p, m.image_capacity), "cudaMallocHost (image)");
        m.h_image.reset(p);
        check(cudaMalloc(&p, m.image_capacity), "cudaMalloc (image)");
        m.d_image.reset(p);
        m.image_device_view = static_cast<uint8_t*>(p);
    }
    if (!m.context->setTensorAddress(m.input_name.c_str(), m.d_input.get()) ||
        !m.context->setTensorAddress(m.output_name.c_str(), m.d_output.get()))
        throw Error("TensorRT refused the tensor addresses of '" + engine_path + "'");
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const EngineSidecar& Engine::sidecar() const { return impl_->sidecar; }
int Engine::num_classes() const { return static_cast<int>(impl_->output_count); }

// A host frame's planes packed into the pinned staging buffer, one after the other, each row
// without the caller's padding; the view of that copy on the device. Bytes needed: `staged_size`.
static size_t plane_rows_bytes(const ImageView& f, int plane, size_t* rows) {
    const int half_w = (f.width + 1) / 2, half_h = (f.height + 1) / 2;
    if (plane == 0) return *rows = f.height, static_cast<size_t>(f.width) * bytes_per_pixel(f.format);
    if (f.format == PixelFormat::NV12) return *rows = plane == 1 ? half_h : 0, static_cast<size_t>(2 * half_w);
    if (f.format == PixelFormat::I420) return *rows = half_h, static_cast<size_t>(half_w);
    return *rows = 0, 0;
}

static size_t staged_size(const ImageView& f) {
    size_t total = 0;
    for (int plane = 0; plane < 3; ++plane) {
        size_t rows = 0;
        const size_t row = plane_rows_bytes(f, plane, &rows);
        total += row * rows;
    }
    return total;
}

std::vector<ImageView> Engine::Impl::stage(const ImageView* images, int count) {
    size_t total = 0;
    bool any_host = false;
    for (int i = 0; i < count; ++i)
        if (!images[i].on_device) total += staged_size(images[i]), any_host = true;
    if (total > image_capacity)
        throw Error(count == 1 ? "a " + std::to_string(images[0].width) + "x" + std::to_string(images[0].height) + " " +
                                     format_name(images[0].format) + " frame is larger than EngineOptions::max_image_width/height"
                               : "these " + std::to_string(count) + " frames together are larger than the staging buffer "
                                 "(EngineOptions::max_image_width x max_image_height x 4 bytes)");
    // The previous call's upload must be done before its staging bytes are overwritten.
    if (any_host) check(cudaEventSynchronize(staging_free.get()), "cudaEventSynchronize (staging)");
    auto* staging = static_cast<uint8_t*>(h_image.get());
    std::vector<ImageView> views(images, images + count);
    size_t offset = 0;
    for (ImageView& view : views) {
        if (view.on_device) continue;  // already where the kernels read it: no copy
        const uint8_t* planes[3] = {view.data, view.chroma, view.chroma2};
        const size_t strides[3] = {view.stride, view.chroma_stride, view.chroma2_stride};
        uint8_t* device_planes[3] = {nullptr, nullptr, nullptr};
        size_t packed[3] = {0, 0, 0};
        for (int plane = 0; plane < 3; ++plane) {
            size_t rows = 0;
            const size_t row = plane_rows_bytes(view, plane, &rows);
            if (rows == 0) continue;
            for (size_t y = 0; y < rows; ++y) std::memcpy(staging + offset + y * row, planes[plane] + y * strides[plane], row);
            device_planes[plane] = image_device_view + offset;
            packed[plane] = row;
            offset += row * rows;
        }
        view.data = device_planes[0], view.chroma = device_planes[1], view.chroma2 = device_planes[2];
        view.stride = packed[0], view.chroma_stride = packed[1], view.chroma2_stride = packed[2];
        view.on_device = true;
    }
    staged_bytes = offset;
    return views;
}

void Engine::Impl::set_batch(int count) {
    if (count == batch) return;
    nvinfer1::Dims shape = engine->getTensorShape(input_name.c_str());
    shape.d[0] = count;
    if (!context->setInputShape(input_name.c_str(), shape))
        throw Error("a batch of " + std::to_string(count) + " is outside the engine's profile");
    batch = count;
    graph.reset();  // captured for the other shape
}

void Engine::Impl::make_overlap_streams() {
    cudaStream_t s = nullptr;
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate (preprocessing)");
    prep_stream.reset(s);
    auto make_event = [](Owned<CUevent_st, EventDestroy>& owned) {
        cudaEvent_t e = nullptr;
        check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
        owned.reset(e);
    };
    for (int b = 0; b < 2; ++b) {
        make_event(input_ready[b]);
        make_event(input_free[b]);
        check(cudaEventRecord(input_free[b].get(), stream), "cudaEventRecord (input buffer)");  // free at the start
    }
    make_event(call_start);
}

// Frame N+1's upload and preprocessing, on prep_stream into the buffer frame N does not use, run while
// frame N's inference runs on `stream`; the inference of N+1 waits for its buffer to be ready, and the
// preprocessing of N+2 for the inference of N to have read that buffer.
void Engine::Impl::run_overlapped(const ImageView* images, const std::vector<ImageView>& device_images) {
    const int count = static_cast<int>(device_images.size());
    bool any_host = false, any_device = false;
    for (int i = 0; i < count; ++i) (images[i].on_device ? any_device : any_host) = true;
    const int b = next_buffer;
    next_buffer ^= 1;
    cudaStream_t prep = prep_stream.get();
    // Device frames on a caller's stream (EngineOptions::stream): what that stream queued before this call,
    // their producer among it, comes first. (On the engine's own stream a device frame is ready when handed
    // over, as before; waiting there would only queue the preprocessing behind the previous inference.)
    if (any_device && options.stream) {
        check(cudaEventRecord(call_start.get(), stream), "cudaEventRecord (call start)");
        check(cudaStreamWaitEvent(prep, call_start.get(), 0), "cudaStreamWaitEvent (call start)");
    }
    check(cudaStreamWaitEvent(prep, input_free[b].get(), 0), "cudaStreamWaitEvent (input buffer)");
    if (any_host && d_image) {
        check(cudaMemcpyAsync(d_image.get(), h_image.get(), staged_bytes, cudaMemcpyHostToDevice, prep),
              "cudaMemcpyAsync (image)");
        check(cudaEventRecord(staging_free.get(), prep), "cudaEventRecord (staging)");  // uploaded: free again
    }
    preprocess_frames(device_images.data(), count, b, prep);
    if (any_host && !d_image) check(cudaEventRecord(staging_free.get(), prep), "cudaEventRecord (staging)");
    check(cudaEventRecord(input_ready[b].get(), prep), "cudaEventRecord (input ready)");
    check(cudaStreamWaitEvent(stream, input_ready[b].get(), 0), "cudaStreamWaitEvent (input ready)");
    infer_buffer(b, count);
    check(cudaEventRecord(input_free[b].get(), stream), "cudaEventRecord (input buffer)");
}

void Engine::Impl::run_frames(const ImageView* images, const std::vector<ImageView>& device_images) {
    if (overlapped()) {
        run_overlapped(images, device_images);
        return;
    }
    const int count = static_cast<int>(device_images.size());
    bool any_host = false;
    for (int i = 0; i < count; ++i) any_host = any_host || !images[i].on_device;
    auto run_once = [&] {
        if (any_host && d_image) {
            check(cudaMemcpyAsync(d_image.get(), h_image.get(), staged_bytes, cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync (image)");
            check(cudaEventRecord(staging_free.get(), stream), "cudaEventRecord (staging)");  // uploaded: free again
        }
        enqueue_frames(device_images.data(), count);
        if (any_host && !d_image)  // zero-copy: the kernels read the staging pages themselves
            check(cudaEventRecord(staging_free.get(), stream), "cudaEventRecord (staging)");
    };
    // A CUDA graph replays the pointers it captured: only for one host frame, whose staging buffer is fixed.
    const ImageView& image = images[0];
    if (!options.cuda_graph || count != 1 || image.on_device) {
        run_once();
        return;
    }
    if (!graph || image.width != graph_width || image.height != graph_height || image.format != graph_format) {
        // TensorRT asks for one plain enqueue after a shape change before capturing; it also
        // uploads the resampling coefficients for this size outside the capture.
        run_once();
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        cudaGraph_t g = nullptr;
        check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        run_once();
        check(cudaStreamEndCapture(stream, &g), "cudaStreamEndCapture");
        cudaGraphExec_t exec = nullptr;
        const cudaError_t made = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        check(made, "cudaGraphInstantiate");
        graph.reset(exec);
        graph_width = image.width, graph_height = image.height, graph_format = image.format;
    }
    check(cudaGraphLaunch(graph.get(), stream), "cudaGraphLaunch");
}

void Engine::enqueue(const ImageView& image, float* logits, void* done) { enqueue_batch(&image, 1, logits, done); }

void Engine::enqueue_batch(const ImageView* images, int count, float* logits, void* done) {
    Impl& m = *impl_;
    if (images == nullptr || count < 1 || count > m.options.max_batch)
        throw Error("enqueue_batch takes 1 to EngineOptions::max_batch (" + std::to_string(m.options.max_batch) +
                    ") frames, got " + std::to_string(count));
    for (int i = 0; i < count; ++i)
        if (const std::string why = image_problem(images[i]); !why.empty())
            throw Error(count == 1 ? why : "frame " + std::to_string(i) + ": " + why);
    m.set_batch(count);
    m.run_frames(images, m.stage(images, count));
    if (logits != nullptr)
        check(cudaMemcpyAsync(logits, m.h_output.get(), count * m.output_count * sizeof(float), cudaMemcpyHostToHost,
                              m.stream),
              "cudaMemcpyAsync (logits to the caller)");
    if (done != nullptr) check(cudaEventRecord(static_cast<cudaEvent_t>(done), m.stream), "cudaEventRecord (done)");
}

std::vector<float> Engine::infer(const ImageView& image) { return infer_batch({image})[0]; }

std::vector<std::vector<float>> Engine::infer_batch(const std::vector<ImageView>& images) {
    Impl& m = *impl_;
    enqueue_batch(images.data(), static_cast<int>(images.size()), nullptr, nullptr);
    check(cudaStreamSynchronize(m.stream), "cudaStreamSynchronize");
    const float* out = static_cast<const float*>(m.h_output.get());
    std::vector<std::vector<float>> rows;
    for (size_t i = 0; i < images.size(); ++i)
        rows.emplace_back(out + i * m.output_count, out + (i + 1) * m.output_count);
    return rows;
}

std::vector<float> Engine::infer_tensor(const float* nchw, size_t count) {
    Impl& m = *impl_;
    if (count != m.input_count)
        throw Error("the tensor has " + std::to_string(count) + " values, the engine's input " + std::to_string(m.input_count));
    m.set_batch(1);
    if (m.overlapped())  // buffer 0 may still be being preprocessed for a call in flight
        check(cudaStreamSynchronize(m.prep_stream.get()), "cudaStreamSynchronize (preprocessing)");
    check(cudaMemcpyAsync(m.d_input.get(), nchw, count * sizeof(float), cudaMemcpyHostToDevice, m.stream), "cudaMemcpyAsync");
    m.infer_buffer(0, 1);
    check(cudaStreamSynchronize(m.stream), "cudaStreamSynchronize");
    const float* out = static_cast<const float*>(m.h_output.get());
    return std::vector<float>(out, out + m.output_count);
}

std::vector<Prediction> Engine::classify(const ImageView& image, int k) {
    const std::vector<float> logits = infer(image);
    return top_k(logits.data(), static_cast<int>(logits.size()), k, impl_->sidecar.class_names);
}

}  // namespace sk_edge
