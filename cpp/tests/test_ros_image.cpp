// sensor_msgs/Image fields to frames (sk_edge/ros_image.hpp), without ROS: what the ROS 2 node example
// relies on. The padded messages are checked against the same frame without padding, pixel for pixel.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sk_edge/ros_image.hpp"

namespace {

using sk_edge::ImageView;
using sk_edge::PixelFormat;

// A message's bytes: `rows` rows of `row` bytes of a deterministic pattern, each padded to `step`.
std::vector<uint8_t> message_bytes(size_t rows, size_t row, size_t step) {
    std::vector<uint8_t> data(rows * step, 0xEE);
    for (size_t y = 0; y < rows; ++y)
        for (size_t x = 0; x < row; ++x) data[y * step + x] = static_cast<uint8_t>((x * 7 + y * 13) % 251);
    return data;
}

std::vector<uint8_t> unpadded(const std::vector<uint8_t>& data, size_t rows, size_t row, size_t step) {
    std::vector<uint8_t> out;
    for (size_t y = 0; y < rows; ++y) out.insert(out.end(), data.begin() + y * step, data.begin() + y * step + row);
    return out;
}

}  // namespace

TEST(RosImage, EncodingsAreReadAsRosNamesThem) {
    EXPECT_EQ(sk_edge::ros_pixel_format("rgb8"), PixelFormat::RGB);
    EXPECT_EQ(sk_edge::ros_pixel_format("bgra8"), PixelFormat::BGRA);
    EXPECT_EQ(sk_edge::ros_pixel_format("mono8"), PixelFormat::GRAY8);
    EXPECT_EQ(sk_edge::ros_pixel_format("yuv422"), PixelFormat::UYVY);  // ROS's YUV422 is U Y0 V Y1
    EXPECT_EQ(sk_edge::ros_pixel_format("yuv422_yuy2"), PixelFormat::YUYV);
    EXPECT_EQ(sk_edge::ros_pixel_format("nv12"), PixelFormat::NV12);
    EXPECT_FALSE(sk_edge::ros_pixel_format("nv21"));  // V before U: not an sk-edge format
    EXPECT_FALSE(sk_edge::ros_pixel_format("mono16"));
}

TEST(RosImage, PaddedNv12AndPackedMessagesGiveTheFramesPixels) {
    const uint32_t w = 64, h = 48, step = 80;  // 16 bytes of padding a row
    const std::vector<uint8_t> nv12 = message_bytes(h + h / 2, w, step);
    std::string why;
    const auto view = sk_edge::ros_image_view("nv12", nv12.data(), nv12.size(), w, h, step, {}, &why);
    ASSERT_TRUE(view) << why;
    EXPECT_EQ(view->chroma, nv12.data() + static_cast<size_t>(h) * step);
    const std::vector<uint8_t> tight = unpadded(nv12, h + h / 2, w, step);
    EXPECT_EQ(sk_edge::to_rgb_cpu(*view), sk_edge::to_rgb_cpu(ImageView::nv12(tight.data(), tight.data() + w * h, w, h)));

    const std::vector<uint8_t> uyvy = message_bytes(h, 2 * w, step * 2);
    const auto packed = sk_edge::ros_image_view("yuv422", uyvy.data(), uyvy.size(), w, h, step * 2, {}, &why);
    ASSERT_TRUE(packed) << why;
    const std::vector<uint8_t> tight_uyvy = unpadded(uyvy, h, 2 * w, step * 2);
    EXPECT_EQ(sk_edge::to_rgb_cpu(*packed),
              sk_edge::to_rgb_cpu(ImageView::packed(PixelFormat::UYVY, tight_uyvy.data(), w, h)));
}

TEST(RosImage, MessagesSkEdgeCannotReadAreRefusedWithTheReason) {
    std::vector<uint8_t> data(64 * 48 * 3);
    std::string why;
    EXPECT_FALSE(sk_edge::ros_image_view("bayer_rggb8", data.data(), data.size(), 64, 48, 64, {}, &why));
    EXPECT_NE(why.find("encoding 'bayer_rggb8' is not one sk-edge reads"), std::string::npos) << why;
    EXPECT_FALSE(sk_edge::ros_image_view("rgb8", data.data(), data.size() - 1, 64, 48, 192, {}, &why));
    EXPECT_NE(why.find("fewer than its 48 rows of 192 bytes"), std::string::npos) << why;
    EXPECT_FALSE(sk_edge::ros_image_view("nv12", data.data(), 64 * 48, 64, 48, 64, {}, &why));  // no chroma rows
    EXPECT_NE(why.find("72 rows"), std::string::npos) << why;
    EXPECT_FALSE(sk_edge::ros_image_view("yuyv", data.data(), data.size(), 63, 48, 128, {}, &why));
    EXPECT_NE(why.find("even width"), std::string::npos) << why;
}
