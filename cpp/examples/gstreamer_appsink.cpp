// A GStreamer camera pipeline into sk-edge: frames pulled from an appsink, classified where they are.
//
//   gstreamer_appsink model.int8.engine                                   # a V4L2 webcam, NV12
//   gstreamer_appsink model.int8.engine "nvarguscamerasrc ! nvvidconv ! video/x-raw,format=NV12 ! appsink name=sink"
//   gstreamer_appsink model.int8.engine "filesrc location=clip.mp4 ! decodebin ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink"
//
// The pipeline must end in `appsink name=sink` with raw video caps in a format sk-edge converts
// (NV12, I420, YUY2, UYVY, RGB, BGR, RGBA, BGRA, BGRx, GRAY8). Each buffer is mapped (no copy), its
// planes and strides taken from GstVideoInfo, its colorimetry (BT.601 or BT.709, limited or full
// range) from the caps, and the frame handed to Engine::classify, which converts and preprocesses it
// in one CUDA pass. Built by the C++ runtime's CMake when pkg-config finds gstreamer-app-1.0 and
// gstreamer-video-1.0 (apt install libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev); compiled in
// CI; it has not run against a camera or a GPU in this project.
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <cstdio>
#include <optional>
#include <string>

#include "sk_edge/engine.hpp"

namespace {

constexpr const char* kDefaultPipeline = "v4l2src ! videoconvert ! video/x-raw,format=NV12 ! appsink name=sink";

std::optional<sk_edge::PixelFormat> packed_format(GstVideoFormat format) {
    switch (format) {
        case GST_VIDEO_FORMAT_RGB: return sk_edge::PixelFormat::RGB;
        case GST_VIDEO_FORMAT_BGR: return sk_edge::PixelFormat::BGR;
        case GST_VIDEO_FORMAT_RGBA: return sk_edge::PixelFormat::RGBA;
        case GST_VIDEO_FORMAT_BGRA: return sk_edge::PixelFormat::BGRA;
        case GST_VIDEO_FORMAT_BGRx: return sk_edge::PixelFormat::BGRX;
        case GST_VIDEO_FORMAT_GRAY8: return sk_edge::PixelFormat::GRAY8;
        case GST_VIDEO_FORMAT_YUY2: return sk_edge::PixelFormat::YUYV;
        case GST_VIDEO_FORMAT_UYVY: return sk_edge::PixelFormat::UYVY;
        default: return std::nullopt;
    }
}

sk_edge::YuvSpec yuv_spec(const GstVideoInfo& info) {
    sk_edge::YuvSpec spec;
    spec.matrix = info.colorimetry.matrix == GST_VIDEO_COLOR_MATRIX_BT709 ? sk_edge::YuvMatrix::BT709
                                                                          : sk_edge::YuvMatrix::BT601;
    spec.range = info.colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255 ? sk_edge::YuvRange::Full
                                                                       : sk_edge::YuvRange::Limited;
    return spec;
}

// The mapped frame as the runtime reads it: planes and strides exactly as GStreamer laid them out.
std::optional<sk_edge::ImageView> view_of(GstVideoFrame& frame) {
    const GstVideoInfo& info = frame.info;
    const int w = GST_VIDEO_INFO_WIDTH(&info), h = GST_VIDEO_INFO_HEIGHT(&info);
    auto plane = [&](int i) { return static_cast<const uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(&frame, i)); };
    auto stride = [&](int i) { return static_cast<size_t>(GST_VIDEO_FRAME_PLANE_STRIDE(&frame, i)); };
    const GstVideoFormat format = GST_VIDEO_INFO_FORMAT(&info);
    if (format == GST_VIDEO_FORMAT_NV12)
        return sk_edge::ImageView::nv12(plane(0), plane(1), w, h, stride(0), stride(1), yuv_spec(info));
    if (format == GST_VIDEO_FORMAT_I420)
        return sk_edge::ImageView::i420(plane(0), plane(1), plane(2), w, h, stride(0), stride(1), stride(2), yuv_spec(info));
    if (const auto packed = packed_format(format))
        return sk_edge::ImageView::packed(*packed, plane(0), w, h, stride(0), yuv_spec(info));
    return std::nullopt;
}

// One sample: mapped, classified, unmapped. False when the format cannot be read.
bool classify_sample(sk_edge::Engine& engine, GstSample* sample, long index) {
    GstVideoInfo info;
    if (!gst_video_info_from_caps(&info, gst_sample_get_caps(sample))) {
        std::fprintf(stderr, "gstreamer_appsink: the appsink's caps are not raw video\n");
        return false;
    }
    GstVideoFrame frame;
    if (!gst_video_frame_map(&frame, &info, gst_sample_get_buffer(sample), GST_MAP_READ)) {
        std::fprintf(stderr, "gstreamer_appsink: cannot map frame %ld\n", index);
        return false;
    }
    const auto view = view_of(frame);
    if (view) {
        const auto top = engine.classify(*view, 1);
        if (!top.empty()) std::printf("frame %ld: %d %.3f %s\n", index, top[0].index, top[0].score, top[0].name.c_str());
    } else {
        std::fprintf(stderr, "gstreamer_appsink: format %s is not one sk-edge converts; add videoconvert ! "
                     "video/x-raw,format=NV12 before the appsink\n", GST_VIDEO_INFO_NAME(&info));
    }
    gst_video_frame_unmap(&frame);
    return view.has_value();
}

}  // namespace

int main(int argc, char** argv) {
    gst_init(&argc, &argv);
    if (argc < 2) {
        std::fprintf(stderr, "usage: gstreamer_appsink model.int8.engine [PIPELINE ending in 'appsink name=sink']\n");
        return 2;
    }
    const std::string description = argc > 2 ? argv[2] : kDefaultPipeline;
    GError* error = nullptr;
    GstElement* pipeline = gst_parse_launch(description.c_str(), &error);
    if (pipeline == nullptr || error != nullptr) {
        std::fprintf(stderr, "gstreamer_appsink: bad pipeline: %s\n", error ? error->message : "unknown error");
        if (error) g_error_free(error);
        return 2;
    }
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    if (sink == nullptr) {
        std::fprintf(stderr, "gstreamer_appsink: the pipeline has no element named 'sink' (end it in 'appsink name=sink')\n");
        gst_object_unref(pipeline);
        return 2;
    }
    int status = 0;
    try {
        sk_edge::Engine engine(argv[1]);
        gst_element_set_state(pipeline, GST_STATE_PLAYING);
        long index = 0;
        // pull_sample blocks for the next frame and returns null at the end of the stream.
        while (GstSample* sample = gst_app_sink_pull_sample(GST_APP_SINK(sink))) {
            const bool ok = classify_sample(engine, sample, index++);
            gst_sample_unref(sample);
            if (!ok) {
                status = 1;
                break;
            }
        }
    } catch (const sk_edge::Error& e) {
        std::fprintf(stderr, "gstreamer_appsink: %s\n", e.what());
        status = 1;
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(sink);
    gst_object_unref(pipeline);
    return status;
}
