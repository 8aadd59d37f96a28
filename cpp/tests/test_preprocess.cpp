// The CPU preprocessing reference against sk-edge's Python loader (Pillow + numpy) on real images.
//
// cpp/tests/make_fixtures.py decodes real photographs and SK-Digits renders with Pillow, and writes
// their RGB bytes with what sk_edge.images.to_pixels / to_tensor make of them under several
// preprocessing settings (crop and stretch, bilinear, bicubic and nearest, square and odd sizes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sk_edge/engine.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path fixtures() {
    const char* env = std::getenv("SK_EDGE_FIXTURES");
    return fs::path(env && *env ? env : SK_EDGE_FIXTURES);
}

template <typename T>
std::vector<T> read_raw(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
}

sk_edge::Preprocess preprocess_of(const json& pre) {
    // The sidecar parser is what the Engine uses: read the fixture's settings through it too.
    json sidecar = {{"kind", "sk-edge/engine"}, {"schema", 1}, {"preprocess", pre}, {"tensorrt", {{"version", "10.3.0"}}}};
    return sk_edge::parse_sidecar(sidecar.dump(), "fixture").preprocess;
}

}  // namespace

TEST(Preprocess, TheCpuReferenceMatchesThePythonLoaderOnRealImages) {
    if (fixtures().empty()) GTEST_SKIP() << "no fixtures: configure with -DSK_EDGE_FIXTURES=DIR (cpp/tests/make_fixtures.py DIR)";
    std::ifstream in(fixtures() / "manifest.json");
    ASSERT_TRUE(in) << "no manifest.json in " << fixtures();
    const json manifest = json::parse(in);
    ASSERT_GE(manifest["cases"].size(), 10u);
    double worst = 0.0;
    size_t pixel_mismatches = 0, values = 0;
    for (const auto& c : manifest["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const auto rgb = read_raw<uint8_t>(fixtures() / c["image"].get<std::string>());
        const int w = c["width"], h = c["height"];
        ASSERT_EQ(rgb.size(), static_cast<size_t>(w) * h * 3);
        const auto pre = preprocess_of(c["preprocess"]);
        const auto expected_pixels = read_raw<uint8_t>(fixtures() / c["pixels"].get<std::string>());
        const auto expected = read_raw<float>(fixtures() / c["tensor"].get<std::string>());

        const auto pixels = sk_edge::resize_cpu(sk_edge::ImageView::rgb(rgb.data(), w, h), pre);
        ASSERT_EQ(pixels.size(), expected_pixels.size());
        size_t differ = 0;
        for (size_t i = 0; i < pixels.size(); ++i) differ += pixels[i] != expected_pixels[i];
        EXPECT_EQ(differ, 0u) << "resized bytes differ from Pillow's";
        pixel_mismatches += differ;

        const auto tensor = sk_edge::preprocess_cpu(sk_edge::ImageView::rgb(rgb.data(), w, h), pre);
        ASSERT_EQ(tensor.size(), expected.size());
        for (size_t i = 0; i < tensor.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(tensor[i] - expected[i])));
        values += tensor.size();

        // The same image handed over as BGR (OpenCV's order) gives the same tensor.
        std::vector<uint8_t> bgr(rgb);
        for (size_t i = 0; i < bgr.size(); i += 3) std::swap(bgr[i], bgr[i + 2]);
        EXPECT_EQ(sk_edge::preprocess_cpu(sk_edge::ImageView::bgr(bgr.data(), w, h), pre), tensor);
        // A padded row stride is honoured.
        std::vector<uint8_t> padded(static_cast<size_t>(h) * (w * 3 + 7));
        for (int y = 0; y < h; ++y) std::memcpy(&padded[y * (w * 3 + 7)], &rgb[static_cast<size_t>(y) * w * 3], w * 3);
        EXPECT_EQ(sk_edge::preprocess_cpu(sk_edge::ImageView::rgb(padded.data(), w, h, w * 3 + 7), pre), tensor);
    }
    std::cout << "[ measured ] " << manifest["cases"].size() << " cases, " << values << " values: max |C++ - Python| = "
              << worst << ", resized bytes that differ from Pillow's: " << pixel_mismatches << "\n";
    EXPECT_EQ(pixel_mismatches, 0u);
    EXPECT_EQ(worst, 0.0);
}

TEST(Preprocess, SizesAndErrors) {
    sk_edge::Preprocess pre;
    pre.height = pre.width = 224;
    pre.crop_pct = 0.875;
    const auto plan = sk_edge::plan_resize(640, 480, pre);  // short side 480 -> int(224 / 0.875) = 256
    EXPECT_EQ(plan.resized_height, 256);
    EXPECT_EQ(plan.resized_width, 341);  // int(256 * 640 / 480) = int(341.33), torchvision's truncation
    EXPECT_EQ(plan.offset_x, 58);        // round(58.5) = 58, half to even as Python's round
    EXPECT_EQ(plan.offset_y, 16);
    pre.resize = "letterbox";
    const auto box = sk_edge::plan_resize(640, 480, pre);
    EXPECT_EQ(box.resized_width, 224);
    EXPECT_EQ(box.resized_height, 168);
    EXPECT_EQ(box.offset_y, -28);
    pre.resize = "crop";
    EXPECT_THROW(sk_edge::plan_resize(0, 10, pre), sk_edge::Error);
    pre.interpolation = "lanczos";
    const uint8_t px[3] = {1, 2, 3};
    EXPECT_THROW(sk_edge::preprocess_cpu(sk_edge::ImageView::rgb(px, 1, 1), pre), sk_edge::Error);
    pre.interpolation = "bilinear";
    const auto one = sk_edge::preprocess_cpu(sk_edge::ImageView::rgb(px, 1, 1), pre);  // a 1x1 image upscales
    EXPECT_EQ(one.size(), 3u * 224 * 224);
    EXPECT_FLOAT_EQ(one[0], (1.0f / 255.0f - pre.mean[0]) / pre.std[0]);
}
