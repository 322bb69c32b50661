// The weight-only quantization types of model/quant.h by name, torch-free (the chat loader
// resolves `--quant` / model_settings.yaml's `quant:` before the model loads).
#pragma once

#include <string>

namespace pdsd::model::quant {

enum class Type { none, int8, int4 };

// "" / "none" / "int8" / "int4" -> Type; UsageError naming `where` (e.g. "--quant") otherwise.
Type parse_type(const std::string& name, const std::string& where = "--quant");
std::string type_name(Type t);
// The `quant:` key of a model_settings.yaml ("" when the file or the key is absent); a value
// other than none/int8/int4 is a ConfigError naming the file and key.
std::string settings_quant(const std::string& model_settings_yaml);

}  // namespace pdsd::model::quant
