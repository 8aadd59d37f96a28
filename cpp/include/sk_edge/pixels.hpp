// Camera pixel formats, read as 8-bit RGB one pixel at a time: the same inline integer code on the
// CPU (the reference) and in the CUDA preprocessing kernel, which converts while it resamples (one
// pass: convert, resize, normalise, NCHW), so both give the same bytes.
//
// YUV to RGB is ITU-R BT.601 or BT.709, limited ("video", Y 16..235, chroma 16..240) or full range,
// chosen explicitly: a camera's driver says which (V4L2's colorspace and quantization fields, the
// GStreamer caps' colorimetry, Argus's frame's colour space). Chroma is subsampled as each format
// stores it (4:2:0 for NV12/I420, 4:2:2 for YUYV/UYVY) and read nearest (the sample covering the
// pixel), as OpenCV's cvtColor and nvvidconv read it. The coefficients are derived from the
// standards' Kr/Kb in 16-bit fixed point; sk_edge_pixels_test checks them against OpenCV's cvtColor
// (BT.601 limited) on real photographs and against the standards' formulas in double precision.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC (the Python runtime's compile of preprocess_kernels.cuh) has no standard headers.
using uint8_t = unsigned char;
using int32_t = int;
using size_t = decltype(sizeof(0));
#else
#include <cstddef>
#include <cstdint>
#endif

// Everything here compiles for the host and the GPU; NVRTC, which compiles no host code, needs the
// constexpr helpers marked too.
#if defined(__CUDACC__)
#define SK_EDGE_HD __host__ __device__ __forceinline__
#define SK_EDGE_HD_CONSTEXPR __host__ __device__ constexpr
#else
#define SK_EDGE_HD inline
#define SK_EDGE_HD_CONSTEXPR constexpr
#endif

namespace sk_edge {

enum class PixelFormat : int32_t {
    RGB,    // packed 8-bit R, G, B
    BGR,    // OpenCV's order
    RGBA,   // alpha dropped (as Pillow's convert("RGB") does)
    BGRA,   // GStreamer's BGRA / nvvidconv's BGRx: the fourth byte is ignored
    BGRX,
    GRAY8,  // Y replicated to R, G, B (as Pillow's "L" to "RGB")
    NV12,   // Y plane, then interleaved U,V at half resolution (Jetson's Argus camera, nvv4l2decoder)
    I420,   // Y plane, U plane, V plane, chroma at half resolution
    YUYV,   // packed 4:2:2: Y0 U Y1 V (V4L2 webcams' YUYV / YUY2)
    UYVY,   // packed 4:2:2: U Y0 V Y1
};

enum class YuvMatrix : int32_t { BT601, BT709 };
enum class YuvRange : int32_t { Limited, Full };

struct YuvSpec {
    YuvMatrix matrix = YuvMatrix::BT601;
    YuvRange range = YuvRange::Limited;
};

// The fixed-point (kYuvBits fractional bits) coefficients of one YUV spec.
constexpr int kYuvBits = 16;
struct YuvCoefficients {
    int32_t y_scale, y_offset;  // R, G, B = y_scale * (Y - y_offset) + chroma terms
    int32_t r_v, g_u, g_v, b_u;  // g_u and g_v are subtracted
};

SK_EDGE_HD_CONSTEXPR int32_t fixed_point(double x) { return static_cast<int32_t>(x * (1 << kYuvBits) + (x < 0 ? -0.5 : 0.5)); }

// R = Y + 2(1 - Kr) V, B = Y + 2(1 - Kb) U, G = Y - (2 Kb (1 - Kb) U + 2 Kr (1 - Kr) V) / Kg, with Y scaled
// by 255/219 and U, V by 255/224 in limited range (BT.601 Kr 0.299, Kb 0.114; BT.709 Kr 0.2126, Kb 0.0722).
SK_EDGE_HD_CONSTEXPR YuvCoefficients yuv_coefficients(YuvSpec spec) {
    const double kr = spec.matrix == YuvMatrix::BT709 ? 0.2126 : 0.299;
    const double kb = spec.matrix == YuvMatrix::BT709 ? 0.0722 : 0.114;
    const double kg = 1.0 - kr - kb;
    const bool limited = spec.range == YuvRange::Limited;
    const double ys = limited ? 255.0 / 219.0 : 1.0, cs = limited ? 255.0 / 224.0 : 1.0;
    return {fixed_point(ys), limited ? 16 : 0, fixed_point(2.0 * (1.0 - kr) * cs),
            fixed_point(2.0 * kb * (1.0 - kb) / kg * cs), fixed_point(2.0 * kr * (1.0 - kr) / kg * cs),
            fixed_point(2.0 * (1.0 - kb) * cs)};
}

// Where a frame's bytes are: up to three planes, each with its pitch (bytes per row).
struct PixelSource {
    const uint8_t* plane0 = nullptr;  // packed pixels, or Y
    const uint8_t* plane1 = nullptr;  // NV12: UV; I420: U
    const uint8_t* plane2 = nullptr;  // I420: V
    size_t pitch0 = 0, pitch1 = 0, pitch2 = 0;
    PixelFormat format = PixelFormat::RGB;
    YuvCoefficients yuv = yuv_coefficients(YuvSpec{});
};

SK_EDGE_HD uint8_t clamp_rgb(int32_t v) {
    const int32_t x = (v + (1 << (kYuvBits - 1))) >> kYuvBits;  // round half up, as OpenCV's fixed point
    return static_cast<uint8_t>(x < 0 ? 0 : (x > 255 ? 255 : x));
}

SK_EDGE_HD void yuv_to_rgb(int y, int u, int v, const YuvCoefficients& c, uint8_t rgb[3]) {
    const int32_t luma = c.y_scale * (y - c.y_offset);
    u -= 128;
    v -= 128;
    rgb[0] = clamp_rgb(luma + c.r_v * v);
    rgb[1] = clamp_rgb(luma - c.g_u * u - c.g_v * v);
    rgb[2] = clamp_rgb(luma + c.b_u * u);
}

// The RGB value of pixel (x, y).
SK_EDGE_HD void load_rgb(const PixelSource& s, int x, int y, uint8_t rgb[3]) {
    const uint8_t* row = s.plane0 + static_cast<size_t>(y) * s.pitch0;
    switch (s.format) {
        case PixelFormat::RGB: rgb[0] = row[3 * x]; rgb[1] = row[3 * x + 1]; rgb[2] = row[3 * x + 2]; return;
        case PixelFormat::BGR: rgb[0] = row[3 * x + 2]; rgb[1] = row[3 * x + 1]; rgb[2] = row[3 * x]; return;
        case PixelFormat::RGBA: rgb[0] = row[4 * x]; rgb[1] = row[4 * x + 1]; rgb[2] = row[4 * x + 2]; return;
        case PixelFormat::BGRA:
        case PixelFormat::BGRX: rgb[0] = row[4 * x + 2]; rgb[1] = row[4 * x + 1]; rgb[2] = row[4 * x]; return;
        case PixelFormat::GRAY8: rgb[0] = rgb[1] = rgb[2] = row[x]; return;
        case PixelFormat::NV12: {
            const uint8_t* uv = s.plane1 + static_cast<size_t>(y / 2) * s.pitch1 + 2 * (x / 2);
            yuv_to_rgb(row[x], uv[0], uv[1], s.yuv, rgb);
            return;
        }
        case PixelFormat::I420: {
            const size_t half = static_cast<size_t>(x / 2);
            yuv_to_rgb(row[x], s.plane1[static_cast<size_t>(y / 2) * s.pitch1 + half],
                       s.plane2[static_cast<size_t>(y / 2) * s.pitch2 + half], s.yuv, rgb);
            return;
        }
        case PixelFormat::YUYV: {
            const uint8_t* pair = row + 4 * (x / 2);
            yuv_to_rgb(pair[(x & 1) ? 2 : 0], pair[1], pair[3], s.yuv, rgb);
            return;
        }
        case PixelFormat::UYVY: {
            const uint8_t* pair = row + 4 * (x / 2);
            yuv_to_rgb(pair[(x & 1) ? 3 : 1], pair[0], pair[2], s.yuv, rgb);
            return;
        }
    }
    rgb[0] = rgb[1] = rgb[2] = 0;
}

// Pillow's 8-bit resampling precision: the fractional bits of the resize weights
// (sk_edge/preprocess.hpp's AxisCoefficients), here because the kernels use it too.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Bytes per pixel of plane 0 (YUV formats: of the luma plane; packed 4:2:2: 2).
SK_EDGE_HD_CONSTEXPR int bytes_per_pixel(PixelFormat f) {
    switch (f) {
        case PixelFormat::RGB: case PixelFormat::BGR: return 3;
        case PixelFormat::RGBA: case PixelFormat::BGRA: case PixelFormat::BGRX: return 4;
        case PixelFormat::YUYV: case PixelFormat::UYVY: return 2;
        default: return 1;
    }
}

#if !defined(__CUDACC_RTC__)
const char* format_name(PixelFormat f);
#endif

}  // namespace sk_edge
