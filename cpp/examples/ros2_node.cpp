// A ROS 2 node around sk-edge: sensor_msgs/Image in, the top-k classes out.
//
//   ros2 run <your_package> sk_edge_classifier --ros-args -p engine:=/path/model.int8.engine \
//       -p image_topic:=/camera/image_raw -p top_k:=5 -p yuv_matrix:=bt601 -p yuv_full_range:=false
//
// Each message is read where it lies (sk_edge/ros_image.hpp: rgb8, bgr8, rgba8, bgra8, mono8,
// yuv422/uyvy, yuv422_yuy2/yuyv, nv12, rows of `step` bytes) and classified by Engine::classify,
// which converts, resizes and normalises it in one CUDA pass as the host judged the model. The result
// is published on `~/classes` as a std_msgs/String, one "name score" pair per line, best first, with
// the image's header stamp in the log at debug level. A message of another encoding is dropped with a
// throttled warning naming it.
//
// Built by the C++ runtime's CMake when ROS 2's rclcpp, sensor_msgs and std_msgs are found (a sourced
// ROS 2 environment). Not compiled in this project's CI: ROS 2 is not packaged for the Debian release
// CI runs on. Its message-to-frame mapping, the part that can go wrong silently, is compiled and tested
// there without ROS (cpp/tests/test_ros_image.cpp).
#include <rclcpp/rclcpp.hpp>
#include <sensor_msgs/msg/image.hpp>
#include <std_msgs/msg/string.hpp>

#include <memory>
#include <sstream>
#include <string>

#include "sk_edge/engine.hpp"
#include "sk_edge/ros_image.hpp"

namespace {

class Classifier : public rclcpp::Node {
public:
    Classifier() : rclcpp::Node("sk_edge_classifier") {
        const std::string engine_path = declare_parameter<std::string>("engine", "model.int8.engine");
        const std::string topic = declare_parameter<std::string>("image_topic", "image_raw");
        top_k_ = static_cast<int>(declare_parameter<int64_t>("top_k", 5));
        spec_.matrix = declare_parameter<std::string>("yuv_matrix", "bt601") == "bt709" ? sk_edge::YuvMatrix::BT709
                                                                                      : sk_edge::YuvMatrix::BT601;
        spec_.range = declare_parameter<bool>("yuv_full_range", false) ? sk_edge::YuvRange::Full : sk_edge::YuvRange::Limited;
        engine_ = std::make_unique<sk_edge::Engine>(engine_path);  // refuses an engine built elsewhere, in one line
        publisher_ = create_publisher<std_msgs::msg::String>("~/classes", 10);
        subscription_ = create_subscription<sensor_msgs::msg::Image>(
            topic, rclcpp::SensorDataQoS(), [this](const sensor_msgs::msg::Image::ConstSharedPtr& image) { on_image(*image); });
    }

private:
    void on_image(const sensor_msgs::msg::Image& image) {
        std::string why;
        const auto frame = sk_edge::ros_image_view(image.encoding, image.data.data(), image.data.size(), image.width,
                                                   image.height, image.step, spec_, &why);
        if (!frame) {
            RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "dropped an image: %s", why.c_str());
            return;
        }
        std::ostringstream lines;
        for (const sk_edge::Prediction& p : engine_->classify(*frame, top_k_))
            lines << (p.name.empty() ? std::to_string(p.index) : p.name) << ' ' << p.score << '\n';
        std_msgs::msg::String message;
        message.data = lines.str();
        publisher_->publish(message);
        RCLCPP_DEBUG(get_logger(), "classified the image stamped %d.%09u", image.header.stamp.sec, image.header.stamp.nanosec);
    }

    std::unique_ptr<sk_edge::Engine> engine_;
    int top_k_ = 5;
    sk_edge::YuvSpec spec_;
    rclcpp::Publisher<std_msgs::msg::String>::SharedPtr publisher_;
    rclcpp::Subscription<sensor_msgs::msg::Image>::SharedPtr subscription_;
};

}  // namespace

int main(int argc, char** argv) {
    rclcpp::init(argc, argv);
    try {
        rclcpp::spin(std::make_shared<Classifier>());
    } catch (const sk_edge::Error& e) {
        RCLCPP_FATAL(rclcpp::get_logger("sk_edge_classifier"), "%s", e.what());
        rclcpp::shutdown();
        return 1;
    }
    rclcpp::shutdown();
    return 0;
}
