// Torch-free part of model/quant.h: the type names and the model_settings.yaml key.
#include "pdsd/model/quant_type.h"

#include "pdsd/core/error.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

namespace pdsd::model::quant {

Type parse_type(const std::string& name, const std::string& where) {
    if (name.empty() || name == "none") return Type::none;
    if (name == "int8") return Type::int8;
    if (name == "int4") return Type::int4;
    throw UsageError(ErrorInfo{}.at(where).msg("unknown quantization").expected("none | int8 | int4").found(name)
                         .hint("int8: Q8_0-like groups of 32 (near-lossless); int4: 4-bit groups of 32 with scale and minimum"));
}

std::string type_name(Type t) { return t == Type::int8 ? "int8" : t == Type::int4 ? "int4" : "none"; }

std::string settings_quant(const std::string& path) {
    if (!std::filesystem::exists(path)) return "";
    YAML::Node y;
    try {
        y = YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
        throw ConfigError(ErrorInfo{path}.msg("not valid YAML").found(e.what()));
    }
    if (!y.IsMap() || !y["quant"] || y["quant"].IsNull()) return "";
    const std::string v = y["quant"].IsScalar() ? y["quant"].as<std::string>() : "(not a scalar)";
    if (v != "none" && v != "int8" && v != "int4") {
        throw ConfigError(ErrorInfo{path}.at("quant (line " + std::to_string(y["quant"].Mark().line + 1) + ")")
                              .msg("unknown quantization").expected("none | int8 | int4").found(v)
                              .hint("int8 is near-lossless; int4 is smaller and faster; none keeps the checkpoint's weights"));
    }
    return v;
}

}  // namespace pdsd::model::quant
