// sk-edge's preprocessing on the GPU: the same integer arithmetic as preprocess_cpu.cpp, in two
// kernels (the horizontal pass into an 8-bit intermediate, then the vertical pass fused with the
// crop, the normalisation and the HWC -> CHW layout), with the coefficients computed on the host by
// the very function the CPU reference uses. So both give the same bytes, and the CPU reference
// checks the kernels wherever a GPU is available.
#include <cuda_runtime_api.h>

#include <string>

#include "sk_edge/engine.hpp"
#include "sk_edge/preprocess.hpp"

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

__device__ inline uint8_t clip8(int32_t sum) {
    const int32_t v = sum >> kPrecisionBits;
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Reads the frame in its own pixel format (load_rgb: the CPU reference's code), so the colour
// conversion costs no pass and no buffer of its own.
__global__ void horizontal_pass(PixelSource image, int height, int out_width,
                                const int* first, const int* count, const int32_t* weights, int taps, uint8_t* mid) {
    const int xx = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (xx >= out_width || y >= height) return;
    const int32_t* w = weights + static_cast<size_t>(xx) * taps;
    int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
    for (int t = 0; t < count[xx]; ++t) {
        uint8_t px[3];
        load_rgb(image, first[xx] + t, y, px);
        s0 += px[0] * w[t];
        s1 += px[1] * w[t];
        s2 += px[2] * w[t];
    }
    uint8_t* out = mid + (static_cast<size_t>(y) * out_width + xx) * 3;
    out[0] = clip8(s0);
    out[1] = clip8(s1);
    out[2] = clip8(s2);
}

struct Normalisation {
    float mean[3], std[3];
    int source[3];  // network channel c reads RGB channel source[c]
    uint8_t fill[3];  // letterbox padding, RGB
};

__global__ void vertical_pass_normalise(const uint8_t* mid, int mid_width, int mid_height, int out_width, int out_height,
                                        int offset_x, int offset_y,
                                        const int* first, const int* count, const int32_t* weights, int taps,
                                        Normalisation norm, float* out) {
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_width || oy >= out_height) return;
    const int yy = oy + offset_y, xx = ox + offset_x;
    uint8_t rgb[3];
    if (yy < 0 || yy >= mid_height || xx < 0 || xx >= mid_width) {
        rgb[0] = norm.fill[0];
        rgb[1] = norm.fill[1];
        rgb[2] = norm.fill[2];
    } else {
        const int32_t* w = weights + static_cast<size_t>(yy) * taps;
        int32_t s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
        for (int t = 0; t < count[yy]; ++t) {
            const uint8_t* px = mid + (static_cast<size_t>(first[yy] + t) * mid_width + xx) * 3;
            s[0] += px[0] * w[t];
            s[1] += px[1] * w[t];
            s[2] += px[2] * w[t];
        }
        rgb[0] = clip8(s[0]);
        rgb[1] = clip8(s[1]);
        rgb[2] = clip8(s[2]);
    }
    const size_t plane = static_cast<size_t>(out_width) * out_height;
    for (int c = 0; c < 3; ++c) {
        const int src = norm.source[c];
        // IEEE division and subtraction in float32 (nvcc contracts only multiply-adds), as numpy.
        const float v = __fdiv_rn(static_cast<float>(rgb[src]), 255.0f);
        out[c * plane + static_cast<size_t>(oy) * out_width + ox] = __fdiv_rn(__fsub_rn(v, norm.mean[src]), norm.std[src]);
    }
}

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
    horizontal_pass<<<hgrid, block, 0, stream>>>(image.source(), image.height, sc.plan.resized_width, sc.hfirst.ptr,
                                                 sc.hcount.ptr, sc.hweights.ptr, sc.htaps, sc.mid.ptr);
    check(cudaGetLastError(), "the horizontal resampling kernel");
    const dim3 vgrid((sc.plan.out_width + block.x - 1) / block.x, (sc.plan.out_height + block.y - 1) / block.y);
    vertical_pass_normalise<<<vgrid, block, 0, stream>>>(sc.mid.ptr, sc.plan.resized_width, sc.plan.resized_height,
                                                         sc.plan.out_width, sc.plan.out_height, sc.plan.offset_x,
                                                         sc.plan.offset_y, sc.vfirst.ptr,
                                                         sc.vcount.ptr, sc.vweights.ptr, sc.vtaps, norm, out);
    check(cudaGetLastError(), "the vertical resampling kernel");
}

}  // namespace sk_edge
