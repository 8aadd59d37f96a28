// The CUDA preprocessing kernels against the CPU reference, on the same fixtures: byte for byte.
// Needs a CUDA GPU; where there is none (CI, this project's machines) it says so and skips.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sk_edge/engine.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

TEST(PreprocessCuda, TheKernelsGiveTheCpuReferenceBytes) {
    if (!sk_edge::current_gpu()) GTEST_SKIP() << "no CUDA GPU here: the kernels run against the CPU reference where there is one";
    const char* env = std::getenv("SK_EDGE_FIXTURES");
    const fs::path dir(env && *env ? env : SK_EDGE_FIXTURES);
    if (dir.empty()) GTEST_SKIP() << "no fixtures: configure with -DSK_EDGE_FIXTURES=DIR";
    std::ifstream in(dir / "manifest.json");
    ASSERT_TRUE(in);
    const json manifest = json::parse(in);
    std::unique_ptr<sk_edge::CudaScratch, sk_edge::CudaScratchDeleter> scratch(sk_edge::new_cuda_scratch());
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    for (const auto& c : manifest["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        std::ifstream img(dir / c["image"].get<std::string>(), std::ios::binary);
        const std::vector<uint8_t> rgb((std::istreambuf_iterator<char>(img)), std::istreambuf_iterator<char>());
        const int w = c["width"], h = c["height"];
        json sidecar = {{"kind", "sk-edge/engine"}, {"schema", 1}, {"preprocess", c["preprocess"]}, {"tensorrt", {{"version", "10.3.0"}}}};
        const auto pre = sk_edge::parse_sidecar(sidecar.dump(), "fixture").preprocess;
        const auto expected = sk_edge::preprocess_cpu(sk_edge::ImageView::rgb(rgb.data(), w, h), pre);
        uint8_t* d_image = nullptr;
        float* d_out = nullptr;
        ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_image), rgb.size()), cudaSuccess);
        ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d_out), expected.size() * sizeof(float)), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_image, rgb.data(), rgb.size(), cudaMemcpyHostToDevice), cudaSuccess);
        sk_edge::preprocess_cuda(sk_edge::ImageView::rgb(d_image, w, h), pre, d_out, *scratch, stream);
        std::vector<float> got(expected.size());
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(got.data(), d_out, got.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
        EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
        cudaFree(d_image);
        cudaFree(d_out);
    }
    cudaStreamDestroy(stream);
}
