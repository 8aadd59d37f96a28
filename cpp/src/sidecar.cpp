// Reading an engine's sidecar and deciding whether the engine can run here.
//
// The rules and the words are sk_edge.backends.tensorrt.engine_mismatch's and
// sk_edge.runtime.Engine's: tests/data/engine_compat_cases.json holds sidecars, environments and the
// message each must give, and both the Python tests and the C++ tests check them against it.
#include <algorithm>
#include <cmath>
#include <cstring>
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
        s.flavour = str_or(doc.value("tensorrt", json::object()), "flavour", "tensorrt");
        if (doc.contains("rtx") && doc["rtx"].is_object()) {
            for (const auto& c : doc["rtx"].value("compute_capabilities", json::array())) s.compute_capabilities.push_back(c.get<std::string>());
            s.default_targets = doc["rtx"].value("default_targets", false);
        }
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

namespace {

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
    return std::find(items.begin(), items.end(), item) != items.end();
}

// sk_edge.backends.tensorrt.rtx_mismatch: the GPU's compute capability must be one the engine targets.
std::string rtx_mismatch(const EngineSidecar& s, const std::optional<GpuIdentity>& gpu) {
    if (!gpu) return "there is no CUDA GPU here (it runs on an RTX GPU)";
    std::string sm = gpu->compute_capability;
    sm.erase(std::remove(sm.begin(), sm.end(), '.'), sm.end());
    const std::vector<std::string> targets = s.compute_capabilities.empty() ? rtx_default_sms() : s.compute_capabilities;
    const bool digits = !sm.empty() && std::all_of(sm.begin(), sm.end(), ::isdigit);
    const bool later = s.default_targets && digits && std::stoi(sm) >= 120;  // NVIDIA's default: "12.0 and later"
    if (contains(targets, sm) || later) return "";
    if (!contains(rtx_sms(), sm))
        return "TensorRT-RTX has no kernels for this " + gpu->name + " (compute capability " + gpu->compute_capability +
               "); it targets RTX GPUs (" + joined(rtx_sms()) + "): use --target tensorrt here";
    return "it is built for compute capabilities " + joined(targets) + " and this " + gpu->name + " is " +
           gpu->compute_capability + "; rebuild with --rtx-sm " + sm;
}

}  // namespace

std::string engine_mismatch(const EngineSidecar& s, const std::string& trt_version, const std::optional<GpuIdentity>& gpu,
                            const Platform& here) {
    const std::string name = s.flavour == "rtx" ? "TensorRT-RTX" : "TensorRT";
    if (!same_tensorrt_version(s.tensorrt_version, trt_version))
        return "it was built with " + name + " " + s.tensorrt_version + " and this is " + name + " " + trt_version;
    if (s.flavour == "rtx") return rtx_mismatch(s, gpu);
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

std::string flavour_mismatch(const EngineSidecar& s, const std::string& linked_flavour, const std::string& linked_version) {
    if (s.flavour == linked_flavour) return "";
    auto name = [](const std::string& flavour) { return flavour == "rtx" ? std::string("TensorRT-RTX") : std::string("TensorRT"); };
    return "it was built with " + name(s.flavour) + " " + s.tensorrt_version + " and this runtime is linked to " +
           name(linked_flavour) + " " + linked_version;
}

std::string rtx_header_version(const void* data, size_t size) {
    // As sk_edge.backends.tensorrt.rtx_header_version: the magic, then major, minor, patch, build at 0x18.
    const auto* bytes = static_cast<const unsigned char*>(data);
    if (size < 0x1C || std::memcmp(bytes, "vtrt", 4) != 0) return "";
    return std::to_string(bytes[0x18]) + "." + std::to_string(bytes[0x19]) + "." + std::to_string(bytes[0x1A]) + "." +
           std::to_string(bytes[0x1B]);
}

std::string rtx_header_mismatch(const void* data, size_t size, const std::string& linked_version) {
    const std::string made_by = rtx_header_version(data, size);
    if (made_by.empty())
        return "it is not a TensorRT-RTX engine (its header is not one); rebuild it with `sk-edge build --target rtx`";
    if (!same_tensorrt_version(made_by, linked_version))
        return "it was built by TensorRT-RTX " + made_by + " and this is TensorRT-RTX " + linked_version +
               "; rebuild it with this release";
    return "";
}

std::string rtx_invalidity(uint64_t diagnostics) {
    // The names of EngineInvalidityDiagnostics' bits, lowercased as the Python runtime prints them.
    static const char* names[] = {"version mismatch", "unsupported cc", "old cuda driver", "old cuda runtime",
                                  "insufficient gpu memory", "malformed engine", "cuda error"};
    std::string reasons;
    for (int bit = 0; bit < 7; ++bit)
        if (diagnostics & (1ULL << bit)) reasons += (reasons.empty() ? "" : ", ") + std::string(names[bit]);
    return "TensorRT-RTX says the engine is invalid on this machine (" +
           (reasons.empty() ? std::string("no usable CUDA driver or GPU") : reasons) + ")";
}

std::string rtx_runtime_cache_path(const std::string& engine_path) {
    // sk_edge.workdir.runtime_cache_name: model.int8.rtx.engine -> model.int8.rtx.runtime.cache
    const std::string suffix = ".engine";
    const bool ends = engine_path.size() >= suffix.size() &&
                      engine_path.compare(engine_path.size() - suffix.size(), suffix.size(), suffix) == 0;
    return (ends ? engine_path.substr(0, engine_path.size() - suffix.size()) : engine_path) + ".runtime.cache";
}

std::string refusal_message(const std::string& engine_path, const EngineSidecar& s, const std::string& why) {
    std::string parent = std::filesystem::path(engine_path).parent_path().string();
    if (parent.empty()) parent = ".";  // Python's Path("x.engine").parent
    return "'" + engine_path + "' cannot run here: " + why + "; rebuild it on this device with `sk-edge build --from " +
           parent + " --precision " + s.precision + (s.flavour == "rtx" ? " --target rtx" : "") + "`";
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
