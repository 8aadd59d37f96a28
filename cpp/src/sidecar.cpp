// Reading an engine's sidecar and deciding whether the engine can run here.
//
// The rules and the words are sk_edge.backends.tensorrt.engine_mismatch's and
// sk_edge.runtime.Engine's: tests/data/engine_compat_cases.json holds sidecars, environments and the
// message each must give, and both the Python tests and the C++ tests check them against it.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sk_edge/engine.hpp"

namespace sk_edge {
namespace {

using nlohmann::json;

std::string str_or(const json& j, const char* key, const std::string& fallback = "None") {
    if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
    if (j[key].is_string()) return j[key].get<std::string>();
    return j[key].dump();
}

std::vector<int64_t> shape_of(const json& tensor) {
    std::vector<int64_t> shape;
    if (tensor.is_object() && tensor.contains("shape"))
        for (const auto& d : tensor["shape"]) shape.push_back(d.is_number_integer() ? d.get<int64_t>() : -1);
    return shape;
}

std::array<float, 3> triple(const json& j, const char* key, std::array<float, 3> fallback) {
    if (!j.contains(key)) return fallback;
    const auto& v = j[key];
    if (!v.is_array() || v.size() != 3) throw Error(std::string("preprocess.") + key + " must be a list of 3 numbers");
    // float32, as numpy turns the sidecar's numbers into float32 before normalising.
    return {v[0].get<float>(), v[1].get<float>(), v[2].get<float>()};
}

std::vector<int> version_parts(const std::string& v) {
    std::vector<int> parts;
    std::stringstream ss(v);
    std::string item;
    while (std::getline(ss, item, '.')) {
        try {
            parts.push_back(std::stoi(item));
        } catch (const std::exception&) {
            return {};
        }
    }
    return parts;
}

std::string where(const Platform& p) { return p.machine + (p.jetson ? " Jetson" : ""); }

}  // namespace

bool same_tensorrt_version(const std::string& a, const std::string& b) {
    if (a == b) return true;
    const auto pa = version_parts(a), pb = version_parts(b);
    const size_t n = std::min(pa.size(), pb.size());
    if (n < 3) return false;
    return std::equal(pa.begin(), pa.begin() + n, pb.begin());
}

EngineSidecar parse_sidecar(const std::string& text, const std::string& source) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::exception&) {
        throw Error("'" + source + "' is not valid JSON; rebuild the engine with `sk-edge build`");
    }
    const std::string fix = "rebuild the engine with `sk-edge build`";
    if (!doc.is_object()) throw Error("'" + source + "' is not an sk-edge sidecar; " + fix);
    // The header checks of sk_edge.sidecars.check_header, in its words: a sidecar of another schema
    // or of another artifact is refused before any field is read.
    const std::string schema = str_or(doc, "schema");
    if (schema != std::to_string(kSidecarSchema))
        throw Error("'" + source + "' has sidecar schema " + schema + ", and this sk-edge reads schema " +
                    std::to_string(kSidecarSchema) + "; " + fix);
    const std::string kind = str_or(doc, "kind", "");
    if (kind != "sk-edge/engine")
        throw Error("'" + source + "' is a sidecar of kind " + (kind.empty() ? std::string("none") : kind) + ", not sk-edge/engine; " + fix);
    try {
        EngineSidecar s;
        s.tensorrt_version = str_or(doc.value("tensorrt", json::object()), "version");
        if (doc.contains("gpu") && doc["gpu"].is_object())
            s.gpu = GpuIdentity{str_or(doc["gpu"], "name"), str_or(doc["gpu"], "compute_capability")};
        if (doc.contains("platform") && doc["platform"].is_object() && !doc["platform"].empty())
            s.platform = Platform{str_or(doc["platform"], "machine"), doc["platform"].value("jetson", false)};
        const json settings = doc.value("settings", json::object());
        s.precision = settings.value("precision", std::string("int8"));
        s.hardware_compatible = settings.value("hardware_compatible", false);
        if (settings.contains("dla_core") && settings["dla_core"].is_number_integer()) s.dla_core = settings["dla_core"].get<int>();
        const json model = doc.value("model", json::object());
        const json input = model.value("input", json::object()), output = model.value("output", json::object());
        s.input_name = input.value("name", std::string("input"));
        s.output_name = output.value("name", std::string("logits"));
        s.input_shape = shape_of(input);
        s.output_shape = shape_of(output);
        const json pre = doc.value("preprocess", json::object());
        Preprocess& p = s.preprocess;
        if (pre.contains("input_size")) {
            const auto& size = pre["input_size"];
            if (size.is_array() && size.size() == 2) {
                p.height = size[0].get<int>();
                p.width = size[1].get<int>();
            } else {
                p.height = p.width = size.get<int>();
            }
        } else if (s.input_shape.size() == 4) {
            p.height = static_cast<int>(s.input_shape[2]);
            p.width = static_cast<int>(s.input_shape[3]);
        }
        p.resize = pre.value("resize", p.resize);
        p.crop_pct = pre.value("crop_pct", p.crop_pct);
        p.interpolation = pre.value("interpolation", p.interpolation);
        p.mean = triple(pre, "mean", p.mean);
        if (pre.contains("mean"))  // from the JSON doubles, as Python computes round(mean * 255)
            for (int c = 0; c < 3; ++c)
                p.fill[c] = static_cast<uint8_t>(std::clamp(std::nearbyint(pre["mean"][c].get<double>() * 255.0), 0.0, 255.0));
        p.std = triple(pre, "std", p.std);
        const std::string order = pre.value("channel_order", std::string("RGB"));
        if (order != "RGB" && order != "BGR") throw Error("preprocess.channel_order must be RGB or BGR, got " + order);
        p.channel_order = order == "BGR" ? ChannelOrder::BGR : ChannelOrder::RGB;
        if (doc.contains("class_names") && doc["class_names"].is_array())
            for (const auto& n : doc["class_names"]) s.class_names.push_back(n.get<std::string>());
        return s;
    } catch (const json::exception& e) {
        throw Error("'" + source + "' is not a readable engine sidecar (" + std::string(e.what()) +
                    "); rebuild the engine with `sk-edge build`");
    }
}

EngineSidecar read_sidecar(const std::string& engine_path) {
    const std::string path = engine_path + ".json";
    std::ifstream in(path);
    if (!in) {
        const std::string name = std::filesystem::path(engine_path).filename().string();
        throw Error("'" + path + "' is missing or unreadable, so '" + name + "' cannot be checked; rebuild with `sk-edge build`");
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_sidecar(buffer.str(), path);
}

std::string engine_mismatch(const EngineSidecar& s, const std::string& trt_version, const std::optional<GpuIdentity>& gpu,
                            const Platform& here) {
    if (!same_tensorrt_version(s.tensorrt_version, trt_version))
        return "it was built with TensorRT " + s.tensorrt_version + " and this is TensorRT " + trt_version;
    if (!gpu) return "there is no CUDA GPU here";
    if (s.platform && (s.platform->machine != here.machine || s.platform->jetson != here.jetson))
        return "it was built on " + where(*s.platform) + " and this is " + where(here);
    if (s.hardware_compatible) {
        const int major = std::atoi(gpu->compute_capability.c_str());
        return major >= 8 ? "" : "it is built for Ampere and newer GPUs and this " + gpu->name + " is older";
    }
    const GpuIdentity made_on = s.gpu.value_or(GpuIdentity{"None", "None"});
    if (made_on.compute_capability != gpu->compute_capability || made_on.name != gpu->name)
        return "it was built on a " + made_on.name + " (compute capability " + made_on.compute_capability +
               ") and this is a " + gpu->name + " (compute capability " + gpu->compute_capability + ")";
    return "";
}

std::string refusal_message(const std::string& engine_path, const EngineSidecar& s, const std::string& why) {
    std::string parent = std::filesystem::path(engine_path).parent_path().string();
    if (parent.empty()) parent = ".";  // Python's Path("x.engine").parent
    return "'" + engine_path + "' cannot run here: " + why + "; rebuild it on this device with `sk-edge build --from " +
           parent + " --precision " + s.precision + "`";
}

std::vector<Prediction> top_k(const float* logits, int n, int k, const std::vector<std::string>& names) {
    if (n <= 0) return {};
    k = std::clamp(k, 0, n);
    const double peak = *std::max_element(logits, logits + n);
    std::vector<double> p(n);
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += (p[i] = std::exp(static_cast<double>(logits[i]) - peak));
    std::vector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    std::vector<Prediction> out;
    for (int i = 0; i < k; ++i) {
        const int c = order[i];
        out.push_back({c, static_cast<float>(p[c] / sum), c < static_cast<int>(names.size()) ? names[c] : std::string()});
    }
    return out;
}

}  // namespace sk_edge
