// A stand-in libnvinfer for building and linking sk-edge's C++ runtime where TensorRT cannot be
// installed (CI, this project's machines). It exports only the entry points NVIDIA's public headers
// call from the code sk-edge uses; it runs nothing: createInferRuntime returns null, which
// sk_edge::Engine reports as "TensorRT could not create a runtime". Its version is the headers'.
#include <NvInfer.h>
#include <NvInferVersion.h>

extern "C" {

TENSORRTAPI void* createInferRuntime_INTERNAL(void* /*logger*/, int32_t /*version*/) noexcept { return nullptr; }

TENSORRTAPI int32_t getInferLibVersion() noexcept { return NV_TENSORRT_VERSION; }

}  // extern "C"
