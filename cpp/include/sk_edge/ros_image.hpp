// sensor_msgs/Image as an sk-edge frame, with no ROS dependency: the ROS 2 node example
// (cpp/examples/ros2_node.cpp) hands a message's fields to ros_image_view, and the mapping is tested
// where ROS is not installed (cpp/tests/test_ros_image.cpp).
//
// Encodings as ROS names them (sensor_msgs/image_encodings.hpp): rgb8, bgr8, rgba8, bgra8, mono8;
// "yuv422" is UYVY in ROS (and "uyvy" its newer spelling), "yuv422_yuy2" and "yuyv" are YUYV; "nv12"
// is a Y plane of `height` rows of `step` bytes followed by the interleaved UV rows at the same step.
// A message says nothing of its YUV matrix or range: the node takes them as parameters. Other
// encodings (16-bit, Bayer, NV21) are refused by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "sk_edge/preprocess.hpp"

namespace sk_edge {

inline std::optional<PixelFormat> ros_pixel_format(const std::string& encoding) {
    if (encoding == "rgb8") return PixelFormat::RGB;
    if (encoding == "bgr8") return PixelFormat::BGR;
    if (encoding == "rgba8") return PixelFormat::RGBA;
    if (encoding == "bgra8") return PixelFormat::BGRA;
    if (encoding == "mono8" || encoding == "8UC1") return PixelFormat::GRAY8;
    if (encoding == "yuv422" || encoding == "uyvy") return PixelFormat::UYVY;
    if (encoding == "yuv422_yuy2" || encoding == "yuyv") return PixelFormat::YUYV;
    if (encoding == "nv12") return PixelFormat::NV12;
    return std::nullopt;
}

// The frame a sensor_msgs/Image holds (its encoding, data, width, height and step), or nullopt with the
// reason in `why`: an encoding sk-edge does not read, or data shorter than its rows.
inline std::optional<ImageView> ros_image_view(const std::string& encoding, const uint8_t* data, size_t size,
                                               uint32_t width, uint32_t height, uint32_t step, YuvSpec spec,
                                               std::string* why) {
    const std::optional<PixelFormat> format = ros_pixel_format(encoding);
    if (!format) {
        *why = "encoding '" + encoding + "' is not one sk-edge reads (rgb8, bgr8, rgba8, bgra8, mono8, yuv422/uyvy, " +
               "yuv422_yuy2/yuyv, nv12)";
        return std::nullopt;
    }
    const size_t rows = *format == PixelFormat::NV12 ? static_cast<size_t>(height) + (height + 1) / 2 : height;
    if (size < rows * step) {
        *why = "the " + encoding + " image holds " + std::to_string(size) + " bytes, fewer than its " + std::to_string(rows) +
               " rows of " + std::to_string(step) + " bytes";
        return std::nullopt;
    }
    const int w = static_cast<int>(width), h = static_cast<int>(height);
    const ImageView view = *format == PixelFormat::NV12
                               ? ImageView::nv12(data, data + static_cast<size_t>(height) * step, w, h, step, step, spec)
                               : ImageView::packed(*format, data, w, h, step, spec);
    if (const std::string problem = image_problem(view); !problem.empty()) {
        *why = problem;
        return std::nullopt;
    }
    return view;
}

}  // namespace sk_edge
