// The CPU reference of sk-edge's preprocessing: what sk_edge/images.py does with Pillow, step for step.
//
// Pillow resizes an 8-bit image with a separable filter: the horizontal pass, rounded to 8 bits,
// then the vertical pass. Each output pixel is a weighted sum of the input pixels under the filter
// (widened by the scale when shrinking, which is what anti-aliases), with the weights normalised to
// sum to one and turned into fixed point with kPrecisionBits fractional bits. The algorithm is
// Pillow's (src/libImaging/Resample.c, HPND licence), written again here from its description.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "sk_edge/engine.hpp"
#include "sk_edge/preprocess.hpp"

namespace sk_edge {
namespace {

double bilinear(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic(double x) {
    constexpr double a = -0.5;  // Pillow's (and Keys') choice
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

struct Filter {
    double (*weight)(double);
    double support;
};

Filter filter_named(const std::string& name) {
    if (name == "bilinear") return {bilinear, 1.0};
    if (name == "bicubic") return {bicubic, 2.0};
    throw Error("interpolation '" + name + "' is not supported by the C++ runtime (bilinear, bicubic, nearest)");
}

uint8_t clip8(int32_t sum) {
    // Arithmetic shift: a negative sum (possible with bicubic's negative lobes) floors, then clamps to 0.
    const int32_t v = sum >> kPrecisionBits;
    return static_cast<uint8_t>(std::clamp<int32_t>(v, 0, 255));
}

// Python's round(): ties to even, as sk_edge.images._resize computes the resized size.
int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

AxisCoefficients axis_coefficients(int in_size, int out_size, const std::string& filter_name) {
    if (in_size <= 0 || out_size <= 0) throw Error("cannot resize an empty image");
    AxisCoefficients c;
    c.out_size = out_size;
    c.first.resize(out_size);
    c.count.resize(out_size);
    if (filter_name == "nearest") {
        // Pillow resizes with NEAREST through its scaling affine transform: the input pixel under
        // each output pixel's centre, the centre advanced by repeated addition of the scale in double
        // (ImagingScaleAffine). (x + 0.5) * scale, computed directly, lands on the other side of an
        // integer where the sum rounds below it (256 -> 224: 25 of 224 columns move by a pixel).
        c.taps = 1;
        c.weights.assign(out_size, 1 << kPrecisionBits);
        const double scale = static_cast<double>(in_size) / out_size;
        double centre = scale * 0.5;
        for (int x = 0; x < out_size; ++x, centre += scale) {
            c.first[x] = std::min(in_size - 1, static_cast<int>(centre));
            c.count[x] = 1;
        }
        return c;
    }
    const Filter f = filter_named(filter_name);
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = std::max(scale, 1.0);
    const double support = f.support * filterscale;
    c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.weights.assign(static_cast<size_t>(out_size) * c.taps, 0);
    std::vector<double> k(c.taps);
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        const int xmin = std::max(0, static_cast<int>(center - support + 0.5));
        const int xmax = std::min(in_size, static_cast<int>(center + support + 0.5)) - xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            k[x] = f.weight((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (int x = 0; x < xmax; ++x) {
            const double w = ww != 0.0 ? k[x] / ww : k[x];
            // Round half away from zero into fixed point, as Pillow does.
            c.weights[static_cast<size_t>(xx) * c.taps + x] =
                static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
        }
        c.first[xx] = xmin;
        c.count[xx] = xmax;
    }
    return c;
}

ResizePlan plan_resize(int width, int height, const Preprocess& pre) {
    if (width <= 0 || height <= 0) throw Error("the image is empty (" + std::to_string(width) + "x" + std::to_string(height) + ")");
    // sk_edge.images.resized_size and _resize, rule for rule (torchvision's Resize and CenterCrop).
    ResizePlan p;
    p.out_width = pre.width;
    p.out_height = pre.height;
    if (pre.resize == "resize" || pre.resize == "stretch") {
        p.resized_width = pre.width;
        p.resized_height = pre.height;
        return p;
    }
    if (pre.resize == "letterbox") {
        const double scale = std::min(static_cast<double>(pre.width) / width, static_cast<double>(pre.height) / height);
        p.resized_width = std::clamp(round_half_even(width * scale), 1, pre.width);
        p.resized_height = std::clamp(round_half_even(height * scale), 1, pre.height);
        p.offset_x = -((pre.width - p.resized_width) / 2);
        p.offset_y = -((pre.height - p.resized_height) / 2);
        return p;
    }
    if (pre.resize != "crop") throw Error("resize mode '" + pre.resize + "' is not supported (crop, resize, letterbox)");
    if (pre.width != pre.height) {  // timm's ResizeKeepRatio: cover the window, aspect kept, rounded
        const double target_h = std::floor(pre.height / pre.crop_pct), target_w = std::floor(pre.width / pre.crop_pct);
        const double ratio = std::min(height / target_h, width / target_w);
        p.resized_width = round_half_even(width / ratio);
        p.resized_height = round_half_even(height / ratio);
    } else {
        const int target = static_cast<int>(std::floor(pre.width / pre.crop_pct));
        if (width <= height) {
            p.resized_width = target;
            p.resized_height = static_cast<int>(static_cast<double>(static_cast<int64_t>(target) * height) / width);
        } else {
            p.resized_width = static_cast<int>(static_cast<double>(static_cast<int64_t>(target) * width) / height);
            p.resized_height = target;
        }
    }
    p.offset_x = round_half_even((p.resized_width - pre.width) / 2.0);
    p.offset_y = round_half_even((p.resized_height - pre.height) / 2.0);
    return p;
}

const char* format_name(PixelFormat f) {
    switch (f) {
        case PixelFormat::RGB: return "RGB";
        case PixelFormat::BGR: return "BGR";
        case PixelFormat::RGBA: return "RGBA";
        case PixelFormat::BGRA: return "BGRA";
        case PixelFormat::BGRX: return "BGRx";
        case PixelFormat::GRAY8: return "GRAY8";
        case PixelFormat::NV12: return "NV12";
        case PixelFormat::I420: return "I420";
        case PixelFormat::YUYV: return "YUYV";
        case PixelFormat::UYVY: return "UYVY";
    }
    return "unknown";
}

std::string image_problem(const ImageView& image) {
    const std::string name = format_name(image.format);
    if (image.data == nullptr) return "the image has no pixels (data is null)";
    if (image.width <= 0 || image.height <= 0)
        return "the image is empty (" + std::to_string(image.width) + "x" + std::to_string(image.height) + ")";
    if (image.stride < static_cast<size_t>(image.width) * bytes_per_pixel(image.format))
        return "the " + name + " stride " + std::to_string(image.stride) + " is shorter than a row of " +
               std::to_string(image.width) + " pixels";
    const bool planar = image.format == PixelFormat::NV12 || image.format == PixelFormat::I420;
    if (planar && (image.chroma == nullptr || (image.format == PixelFormat::I420 && image.chroma2 == nullptr)))
        return "an " + name + " frame needs its chroma plane" + std::string(image.format == PixelFormat::I420 ? "s (U and V)" : " (UV)");
    const size_t half = static_cast<size_t>((image.width + 1) / 2);
    if (image.format == PixelFormat::NV12 && image.chroma_stride < 2 * half)
        return "the NV12 UV stride " + std::to_string(image.chroma_stride) + " is shorter than a row of chroma";
    if (image.format == PixelFormat::I420 && (image.chroma_stride < half || image.chroma2_stride < half))
        return "the I420 U or V stride is shorter than a row of chroma";
    if ((image.format == PixelFormat::YUYV || image.format == PixelFormat::UYVY) && image.width % 2)
        return "a " + name + " frame has an even width (two pixels share their chroma), got " + std::to_string(image.width);
    return "";
}

std::vector<uint8_t> to_rgb_cpu(const ImageView& image) {
    if (const std::string why = image_problem(image); !why.empty()) throw Error(why);
    const PixelSource src = image.source();
    std::vector<uint8_t> rgb(static_cast<size_t>(image.width) * image.height * 3);
    for (int y = 0; y < image.height; ++y)
        for (int x = 0; x < image.width; ++x) load_rgb(src, x, y, &rgb[(static_cast<size_t>(y) * image.width + x) * 3]);
    return rgb;
}

std::vector<uint8_t> resize_cpu(const ImageView& image, const Preprocess& pre) {
    if (const std::string why = image_problem(image); !why.empty()) throw Error(why);
    const ResizePlan plan = plan_resize(image.width, image.height, pre);
    const AxisCoefficients hx = axis_coefficients(image.width, plan.resized_width, pre.interpolation);
    const AxisCoefficients vy = axis_coefficients(image.height, plan.resized_height, pre.interpolation);
    // The resampling works in RGB, as Pillow's image does: each pixel is converted as it is read.
    const PixelSource src = image.source();
    // Horizontal pass over every input row, kept at 8 bits (only the rows the crop needs matter,
    // but every row gives the same bytes for those).
    std::vector<uint8_t> mid(static_cast<size_t>(image.height) * plan.resized_width * 3);
    for (int y = 0; y < image.height; ++y) {
        for (int xx = 0; xx < plan.resized_width; ++xx) {
            int32_t s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
            const int32_t* w = &hx.weights[static_cast<size_t>(xx) * hx.taps];
            for (int t = 0; t < hx.count[xx]; ++t) {
                uint8_t px[3];
                load_rgb(src, hx.first[xx] + t, y, px);
                for (int ch = 0; ch < 3; ++ch) s[ch] += px[ch] * w[t];
            }
            uint8_t* out = &mid[(static_cast<size_t>(y) * plan.resized_width + xx) * 3];
            for (int ch = 0; ch < 3; ++ch) out[ch] = clip8(s[ch]);
        }
    }
    // Vertical pass, only over the rows and columns the output reads; the fill colour elsewhere.
    std::vector<uint8_t> out(static_cast<size_t>(plan.out_height) * plan.out_width * 3);
    for (int oy = 0; oy < plan.out_height; ++oy) {
        const int yy = oy + plan.offset_y;
        for (int ox = 0; ox < plan.out_width; ++ox) {
            const int xx = ox + plan.offset_x;
            uint8_t* dst = &out[(static_cast<size_t>(oy) * plan.out_width + ox) * 3];
            if (yy < 0 || yy >= plan.resized_height || xx < 0 || xx >= plan.resized_width) {
                for (int ch = 0; ch < 3; ++ch) dst[ch] = pre.fill[ch];
                continue;
            }
            const int32_t* w = &vy.weights[static_cast<size_t>(yy) * vy.taps];
            int32_t s[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
            for (int t = 0; t < vy.count[yy]; ++t) {
                const uint8_t* px = &mid[(static_cast<size_t>(vy.first[yy] + t) * plan.resized_width + xx) * 3];
                for (int ch = 0; ch < 3; ++ch) s[ch] += px[ch] * w[t];
            }
            for (int ch = 0; ch < 3; ++ch) dst[ch] = clip8(s[ch]);
        }
    }
    return out;
}

std::vector<float> preprocess_cpu(const ImageView& image, const Preprocess& pre) {
    const std::vector<uint8_t> rgb = resize_cpu(image, pre);
    const size_t plane = static_cast<size_t>(pre.height) * pre.width;
    std::vector<float> out(3 * plane);
    for (int c = 0; c < 3; ++c) {
        // The network's channel c is RGB channel c, or 2 - c for a model trained on BGR.
        const int src = pre.channel_order == ChannelOrder::BGR ? 2 - c : c;
        for (size_t i = 0; i < plane; ++i) {
            // float32 throughout, in numpy's order: x / 255, then (x - mean) / std.
            const float v = static_cast<float>(rgb[i * 3 + src]) / 255.0f;
            out[c * plane + i] = (v - pre.mean[src]) / pre.std[src];
        }
    }
    return out;
}

}  // namespace sk_edge
