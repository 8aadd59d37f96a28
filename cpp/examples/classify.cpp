// classify: an image, a video file or a camera -> an sk-edge engine -> top-5, with FPS.
// The C++ twin of examples/camera_classify.py.
//
//   classify work/model.int8.engine photo.jpg          # one image
//   classify work/model.int8.engine clip.mp4           # a video file
//   classify work/model.int8.engine 0 --graph          # camera 0, CUDA graph replay
//   classify work/model.int8.engine "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink"
//
// One JSON line per frame (or per image): the top-5 classes with their names when the sidecar has
// them, the frame time and the running FPS. Exits 2 on bad arguments, 1 on a failure, with one line.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "sk_edge/engine.hpp"

namespace {

int usage() {
    std::cerr << "usage: classify ENGINE (IMAGE | VIDEO | CAMERA_INDEX | GSTREAMER_PIPELINE) [--graph] [--zero-copy] "
                 "[--frames N] [--dla-core N]\n";
    return 2;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

void print(const std::vector<sk_edge::Prediction>& top, double ms, double fps, long frame) {
    std::printf("{\"frame\": %ld, \"ms\": %.2f, \"fps\": %.1f, \"top5\": [", frame, ms, fps);
    for (size_t i = 0; i < top.size(); ++i)
        std::printf("%s{\"class\": %d, \"score\": %.4f%s%s%s}", i ? ", " : "", top[i].index, top[i].score,
                    top[i].name.empty() ? "" : ", \"name\": \"", json_escape(top[i].name).c_str(), top[i].name.empty() ? "" : "\"");
    std::printf("]}\n");
    std::fflush(stdout);
}

bool is_image(const std::string& path) {
    const auto dot = path.rfind('.');
    if (dot == std::string::npos) return false;
    std::string ext = path.substr(dot);
    for (auto& c : ext) c = static_cast<char>(std::tolower(c));
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp" || ext == ".webp";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return usage();
    sk_edge::EngineOptions options;
    long max_frames = -1;
    for (int i = 3; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--graph") options.cuda_graph = true;
        else if (arg == "--zero-copy") options.zero_copy = true;
        else if (arg == "--frames" && i + 1 < argc) max_frames = std::stol(argv[++i]);
        else if (arg == "--dla-core" && i + 1 < argc) options.dla_core = std::stoi(argv[++i]);
        else return usage();
    }
    try {
        sk_edge::Engine engine(argv[1], options);
        const std::string source = argv[2];
        if (is_image(source)) {
            const cv::Mat image = cv::imread(source, cv::IMREAD_COLOR);  // BGR, EXIF orientation applied
            if (image.empty()) throw sk_edge::Error("cannot read image '" + source + "'");
            const auto t0 = std::chrono::steady_clock::now();
            const auto top = engine.classify(sk_edge::ImageView::bgr(image.data, image.cols, image.rows, image.step), 5);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            print(top, ms, 1000.0 / ms, 0);
            return 0;
        }
        cv::VideoCapture capture;
        const bool index = !source.empty() && source.find_first_not_of("0123456789") == std::string::npos;
        if (index) capture.open(std::stoi(source));
        else capture.open(source, source.find('!') != std::string::npos ? cv::CAP_GSTREAMER : cv::CAP_ANY);
        if (!capture.isOpened()) throw sk_edge::Error("cannot open '" + source + "' (a camera index, video file or GStreamer pipeline)");
        cv::Mat frame;
        long n = 0;
        const auto start = std::chrono::steady_clock::now();
        while ((max_frames < 0 || n < max_frames) && capture.read(frame)) {
            if (frame.type() != CV_8UC3) throw sk_edge::Error("the source gives frames that are not 8-bit, 3-channel");
            const auto t0 = std::chrono::steady_clock::now();
            const auto top = engine.classify(sk_edge::ImageView::bgr(frame.data, frame.cols, frame.rows, frame.step), 5);
            const auto t1 = std::chrono::steady_clock::now();
            ++n;
            const double elapsed = std::chrono::duration<double>(t1 - start).count();
            print(top, std::chrono::duration<double, std::milli>(t1 - t0).count(), n / elapsed, n);
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "classify: error: " << e.what() << "\n";
        return 1;
    }
}
