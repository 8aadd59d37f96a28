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

namespace sk_edge {

enum class ChannelOrder { RGB, BGR };

// An 8-bit, 3-channel, interleaved (HWC) image that the caller owns; `stride` in bytes per row.
struct ImageView {
    const uint8_t* data = nullptr;
    int width = 0, height = 0;
    size_t stride = 0;
    ChannelOrder order = ChannelOrder::RGB;

    static ImageView rgb(const uint8_t* d, int w, int h, size_t s = 0) { return {d, w, h, s ? s : size_t(w) * 3, ChannelOrder::RGB}; }
    static ImageView bgr(const uint8_t* d, int w, int h, size_t s = 0) { return {d, w, h, s ? s : size_t(w) * 3, ChannelOrder::BGR}; }
};

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
constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's 8-bit resampling precision

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
