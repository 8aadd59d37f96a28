// sk-edge's preprocessing kernels: the same integer arithmetic as preprocess_cpu.cpp in two passes
// (the horizontal pass into an 8-bit intermediate, reading the frame in its own pixel format, then
// the vertical pass fused with the crop or padding, the normalisation and the HWC -> CHW layout).
//
// One source for both runtimes: the C++ library compiles it with nvcc (preprocess_cuda.cu, its only
// includer: the kernels have C linkage), the Python runtime with NVRTC at first use
// (sk_edge/frame_kernels.py, which ships this file and pixels.hpp as package data), so it includes
// nothing but pixels.hpp, which NVRTC can compile. The parameter structs are passed by value: their
// layout is the C ABI's, which sk_edge/frame_kernels.py mirrors with ctypes (checked by a test
// against g++'s offsetof, which is why a host compiler can include this file).
#pragma once

#include "sk_edge/pixels.hpp"

namespace sk_edge {

// Per network channel: its mean and std, the RGB channel it reads, and the letterbox fill colour.
struct Normalisation {
    float mean[3], std[3];
    int32_t source[3];  // network channel c reads RGB channel source[c]
    uint8_t fill[3];    // letterbox padding, RGB
};

}  // namespace sk_edge

// The device code: compiled by nvcc and NVRTC (a host compiler sees only the parameter struct above).
#if defined(__CUDACC__)
namespace sk_edge {

__device__ __forceinline__ uint8_t clip_resampled(int32_t sum) {
    const int32_t v = sum >> kPrecisionBits;
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

}  // namespace sk_edge

// Reads the frame in its own pixel format (load_rgb: the CPU reference's code), so the colour
// conversion costs no pass and no buffer of its own. One thread per (output column, input row).
extern "C" __global__ void sk_edge_horizontal_pass(sk_edge::PixelSource image, int height, int out_width,
                                                   const int* first, const int* count, const int32_t* weights,
                                                   int taps, uint8_t* mid) {
    using namespace sk_edge;
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
    out[0] = clip_resampled(s0);
    out[1] = clip_resampled(s1);
    out[2] = clip_resampled(s2);
}

// One thread per output pixel: the vertical resampling of the rows it needs, or the fill colour
// outside the resized image, then (x / 255 - mean) / std per channel into the CHW float output.
extern "C" __global__ void sk_edge_vertical_pass_normalise(const uint8_t* mid, int mid_width, int mid_height,
                                                           int out_width, int out_height, int offset_x, int offset_y,
                                                           const int* first, const int* count, const int32_t* weights,
                                                           int taps, sk_edge::Normalisation norm, float* out) {
    using namespace sk_edge;
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
        rgb[0] = clip_resampled(s[0]);
        rgb[1] = clip_resampled(s[1]);
        rgb[2] = clip_resampled(s[2]);
    }
    const size_t plane = static_cast<size_t>(out_width) * out_height;
    for (int c = 0; c < 3; ++c) {
        const int src = norm.source[c];
        // IEEE division and subtraction in float32 (nvcc and NVRTC contract only multiply-adds), as numpy.
        const float v = __fdiv_rn(static_cast<float>(rgb[src]), 255.0f);
        out[c * plane + static_cast<size_t>(oy) * out_width + ox] = __fdiv_rn(__fsub_rn(v, norm.mean[src]), norm.std[src]);
    }
}
#endif  // __CUDACC__
