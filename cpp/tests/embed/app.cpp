// A camera app's use of the runtime: an NV12 frame from the camera, classified; compiled and linked
// by `make cpp-test`, run only where an engine and a GPU are.
#include <cstdio>
#include <vector>

#include "sk_edge/engine.hpp"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::puts("usage: embed_app model.int8.engine");
        return 2;
    }
    try {
        sk_edge::Engine engine(argv[1]);
        std::vector<uint8_t> frame(640 * 480 * 3 / 2, 128);  // a grey NV12 frame, 640x480
        const auto view = sk_edge::ImageView::nv12(frame.data(), frame.data() + 640 * 480, 640, 480);
        for (const auto& p : engine.classify(view, 3)) std::printf("%d %.3f %s\n", p.index, p.score, p.name.c_str());
    } catch (const sk_edge::Error& e) {
        std::fprintf(stderr, "embed_app: %s\n", e.what());
        return 1;
    }
    return 0;
}
