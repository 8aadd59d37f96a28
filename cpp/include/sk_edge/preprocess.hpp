// The preprocessing sk-edge records in export.json and every engine sidecar, applied to 8-bit images.
//
// preprocess_cpu is the reference: the arithmetic of sk-edge's Python loader (Pillow's resampling
// in 8-bit fixed point, then float32 normalisation), step for step. The CUDA kernels
// (preprocess_cuda) use the same precomputed integer coefficients, so both give the same bytes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "sk_edge/pixels.hpp"

namespace sk_edge {

enum class ChannelOrder { RGB, BGR };

// A frame the caller owns, in host or device memory, in one of the camera pixel formats
// (sk_edge/pixels.hpp); `stride` (and the chroma planes' strides) in bytes per row, so a pitched
// buffer (cudaMallocPitch, an NvBufSurface plane, a V4L2 buffer with padding) is read as it is.
struct ImageView {
    const uint8_t* data = nullptr;  // packed pixels, or the Y plane
    int width = 0, height = 0;
    size_t stride = 0;
    ChannelOrder order = ChannelOrder::RGB;  // RGB/BGR frames only (kept for the rgb()/bgr() callers)
    PixelFormat format = PixelFormat::RGB;
    const uint8_t* chroma = nullptr;   // NV12: the interleaved UV plane; I420: the U plane
    const uint8_t* chroma2 = nullptr;  // I420: the V plane
    size_t chroma_stride = 0, chroma2_stride = 0;
    YuvSpec yuv;                 // NV12, I420, YUYV, UYVY: the matrix and range the camera wrote
    bool on_device = false;      // the bytes are GPU (or mapped/unified) memory: no copy to the device

    static ImageView rgb(const uint8_t* d, int w, int h, size_t s = 0) { return packed(PixelFormat::RGB, d, w, h, s); }
    static ImageView bgr(const uint8_t* d, int w, int h, size_t s = 0) { return packed(PixelFormat::BGR, d, w, h, s); }
    // RGB, BGR, RGBA, BGRA, BGRX, GRAY8, YUYV, UYVY: one plane.
    static ImageView packed(PixelFormat f, const uint8_t* d, int w, int h, size_t s = 0, YuvSpec spec = {}) {
        ImageView v;
        v.data = d, v.width = w, v.height = h, v.format = f, v.yuv = spec;
        v.stride = s ? s : static_cast<size_t>(w) * bytes_per_pixel(f);
        v.order = f == PixelFormat::BGR ? ChannelOrder::BGR : ChannelOrder::RGB;
        return v;
    }
    static ImageView nv12(const uint8_t* y, const uint8_t* uv, int w, int h, size_t y_stride = 0, size_t uv_stride = 0,
                          YuvSpec spec = {}) {
        ImageView v = packed(PixelFormat::NV12, y, w, h, y_stride, spec);
        v.chroma = uv, v.chroma_stride = uv_stride ? uv_stride : static_cast<size_t>((w + 1) / 2) * 2;
        return v;
    }
    static ImageView i420(const uint8_t* y, const uint8_t* u, const uint8_t* v_plane, int w, int h, size_t y_stride = 0,
                          size_t u_stride = 0, size_t v_stride = 0, YuvSpec spec = {}) {
        ImageView v = packed(PixelFormat::I420, y, w, h, y_stride, spec);
        v.chroma = u, v.chroma2 = v_plane;
        v.chroma_stride = u_stride ? u_stride : static_cast<size_t>((w + 1) / 2);
        v.chroma2_stride = v_stride ? v_stride : static_cast<size_t>((w + 1) / 2);
        return v;
    }
    ImageView& device(bool yes = true) {
        on_device = yes;
        return *this;
    }
    // What the conversion code reads (sk_edge/pixels.hpp).
    PixelSource source() const {
        PixelSource s;
        s.plane0 = data, s.plane1 = chroma, s.plane2 = chroma2;
        s.pitch0 = stride, s.pitch1 = chroma_stride, s.pitch2 = chroma2_stride;
        s.format = format == PixelFormat::RGB && order == ChannelOrder::BGR ? PixelFormat::BGR : format;
        s.yuv = yuv_coefficients(yuv);
        return s;
    }
};

// Why `image` cannot be read (no pixels, a missing chroma plane, a stride shorter than a row, odd
// sizes of a subsampled format), or an empty string.
std::string image_problem(const ImageView& image);
// The frame as (height, width, 3) 8-bit RGB: the reference of every format's conversion.
std::vector<uint8_t> to_rgb_cpu(const ImageView& image);

struct Preprocess {
    int height = 224, width = 224;
    // "crop": resize (torchvision's rules), then the central window; "resize": stretch to the input size;
    // "letterbox": fit the whole image, aspect kept, and pad with `fill` (the mean colour).
    std::string resize = "crop";
    double crop_pct = 0.875;
    std::string interpolation = "bilinear";  // "bilinear", "bicubic", "nearest" (Pillow's filters)
    std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
    std::array<float, 3> std{0.229f, 0.224f, 0.225f};
    ChannelOrder channel_order = ChannelOrder::RGB;  // what the network expects
    std::array<uint8_t, 3> fill{124, 116, 104};      // letterbox padding: round(mean * 255), R, G, B
};

// One axis of a resampling: for each output pixel, the first input pixel and its integer weights.
struct AxisCoefficients {
    int out_size = 0, taps = 0;
    std::vector<int> first;     // out_size
    std::vector<int> count;     // out_size
    std::vector<int32_t> weights;  // out_size * taps, fixed point (kPrecisionBits)
};

// Pillow's coefficients for resizing `in_size` pixels to `out_size` with `filter`.
AxisCoefficients axis_coefficients(int in_size, int out_size, const std::string& filter);

// The resize plan of an image: its resized size, and where each output pixel reads it: output
// (x, y) is resized (x + offset_x, y + offset_y), or the fill colour outside it (letterbox).
struct ResizePlan {
    int resized_width = 0, resized_height = 0;
    int offset_x = 0, offset_y = 0;
    int out_width = 0, out_height = 0;
};
ResizePlan plan_resize(int width, int height, const Preprocess& pre);

// (out_height, out_width, 3) uint8 RGB pixels, as sk_edge.images.to_pixels gives them.
std::vector<uint8_t> resize_cpu(const ImageView& image, const Preprocess& pre);
// (3, out_height, out_width) float32 in the network's channel order, as sk_edge.images.to_tensor.
std::vector<float> preprocess_cpu(const ImageView& image, const Preprocess& pre);

// The same on the GPU: `image` in device (or mapped) memory, `out` a device buffer of
// 3 * out_height * out_width floats; `scratch` grows as needed and is reused between calls.
struct CudaScratch;
void preprocess_cuda(const ImageView& device_image, const Preprocess& pre, float* out, CudaScratch& scratch, void* stream);
struct CudaScratchDeleter { void operator()(CudaScratch*) const noexcept; };
CudaScratch* new_cuda_scratch();

}  // namespace sk_edge
