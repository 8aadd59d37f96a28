// sk-edge's preprocessing on the GPU: the kernels of sk_edge/preprocess_kernels.cuh (which the Python
// runtime compiles with NVRTC), launched with the coefficients computed on the host by the very
// function the CPU reference uses. So both give the same bytes, and the CPU reference checks the
// kernels wherever a GPU is available.
#include <cuda_runtime_api.h>

#include <string>

#include "sk_edge/engine.hpp"
#include "sk_edge/preprocess.hpp"
#include "sk_edge/preprocess_kernels.cuh"

namespace sk_edge {

namespace {

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw Error(std::string("CUDA failed in ") + what + ": " + cudaGetErrorString(err));
}

// A device array that grows as needed, never shrinks, and is freed with its owner.
template <typename T>
struct DeviceArray {
    T* ptr = nullptr;
    size_t capacity = 0;
    void reserve(size_t n) {
        if (n <= capacity) return;
        if (ptr) cudaFree(ptr);
        ptr = nullptr;
        check(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)), "cudaMalloc");
        capacity = n;
    }
    void upload(const std::vector<T>& host, cudaStream_t stream) {
        reserve(host.size());
        check(cudaMemcpyAsync(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    }
    ~DeviceArray() {
        if (ptr) cudaFree(ptr);
    }
};

}  // namespace

struct CudaScratch {
    int in_width = -1, in_height = -1;
    Preprocess pre;
    ResizePlan plan;
    int htaps = 0, vtaps = 0;
    DeviceArray<int> hfirst, hcount, vfirst, vcount;
    DeviceArray<int32_t> hweights, vweights;
    DeviceArray<uint8_t> mid;
};

CudaScratch* new_cuda_scratch() { return new CudaScratch(); }
void CudaScratchDeleter::operator()(CudaScratch* s) const noexcept { delete s; }

static bool same_preprocess(const Preprocess& a, const Preprocess& b) {
    return a.height == b.height && a.width == b.width && a.resize == b.resize && a.crop_pct == b.crop_pct &&
           a.interpolation == b.interpolation && a.fill == b.fill;
}

void preprocess_cuda(const ImageView& image, const Preprocess& pre, float* out, CudaScratch& sc, void* stream_handle) {
    cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
    if (const std::string why = image_problem(image); !why.empty()) throw Error(why);
    // The coefficients depend only on the image size and the preprocessing: computed and uploaded
    // once per size, so a camera loop (and a captured CUDA graph) uploads nothing per frame.
    if (image.width != sc.in_width || image.height != sc.in_height || !same_preprocess(pre, sc.pre)) {
        sc.plan = plan_resize(image.width, image.height, pre);
        const AxisCoefficients h = axis_coefficients(image.width, sc.plan.resized_width, pre.interpolation);
        const AxisCoefficients v = axis_coefficients(image.height, sc.plan.resized_height, pre.interpolation);
        sc.hfirst.upload(h.first, stream);
        sc.hcount.upload(h.count, stream);
        sc.hweights.upload(h.weights, stream);
        sc.vfirst.upload(v.first, stream);
        sc.vcount.upload(v.count, stream);
        sc.vweights.upload(v.weights, stream);
        sc.mid.reserve(static_cast<size_t>(image.height) * sc.plan.resized_width * 3);
        sc.htaps = h.taps;
        sc.vtaps = v.taps;
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");  // the host vectors go out of scope
        sc.in_width = image.width;
        sc.in_height = image.height;
        sc.pre = pre;
    }
    Normalisation norm{};
    for (int c = 0; c < 3; ++c) {
        norm.mean[c] = pre.mean[c];
        norm.std[c] = pre.std[c];
        norm.source[c] = pre.channel_order == ChannelOrder::BGR ? 2 - c : c;
        norm.fill[c] = pre.fill[c];
    }
    const dim3 block(32, 8);
    const dim3 hgrid((sc.plan.resized_width + block.x - 1) / block.x, (image.height + block.y - 1) / block.y);
    sk_edge_horizontal_pass<<<hgrid, block, 0, stream>>>(image.source(), image.height, sc.plan.resized_width, sc.hfirst.ptr,
                                                 sc.hcount.ptr, sc.hweights.ptr, sc.htaps, sc.mid.ptr);
    check(cudaGetLastError(), "the horizontal resampling kernel");
    const dim3 vgrid((sc.plan.out_width + block.x - 1) / block.x, (sc.plan.out_height + block.y - 1) / block.y);
    sk_edge_vertical_pass_normalise<<<vgrid, block, 0, stream>>>(sc.mid.ptr, sc.plan.resized_width, sc.plan.resized_height,
                                                         sc.plan.out_width, sc.plan.out_height, sc.plan.offset_x,
                                                         sc.plan.offset_y, sc.vfirst.ptr,
                                                         sc.vcount.ptr, sc.vweights.ptr, sc.vtaps, norm, out);
    check(cudaGetLastError(), "the vertical resampling kernel");
}

}  // namespace sk_edge
