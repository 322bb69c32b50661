// libFuzzer target: the JSON reader (depth/size budget), dataset record conversion and the
// knowledge-base loaders (JSON, JSONL, docx XML, HTML, CSV). The first byte picks the
// reader, the rest is the input. Any input must end in a pdsd::Error (user error) or a
// result, never a crash, an exception of another kind, or a hang.
#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"
#include "pdsd/data/dataset.h"
#include "pdsd/kb/loader.h"
#include "../../src/kb/docx_loader.h"

#include <cstdint>
#include <string>

namespace {

// Depth of a parsed value; parse_json_bounded promised at most JsonLimits::max_depth.
size_t depth_of(const nlohmann::ordered_json& j) {
    size_t d = 0;
    if (j.is_structured())
        for (const auto& v : j) d = std::max(d, depth_of(v));
    return d + (j.is_structured() ? 1 : 0);
}

void json_and_records(const std::string& s) {
    auto j = pdsd::parse_ordered_json_bounded(s, "fuzz");
    if (depth_of(j) > pdsd::JsonLimits{}.max_depth) __builtin_trap();
    for (auto formatting : {pdsd::data::Formatting::alpaca, pdsd::data::Formatting::sharegpt}) {
        pdsd::data::DatasetAttr attr;
        attr.name = "fuzz";
        attr.formatting = formatting;
        pdsd::data::Problems problems;
        pdsd::data::convert_record(attr, j, pdsd::data::RecordRef{"fuzz", "fuzz.json", 0, 1}, problems);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string s(reinterpret_cast<const char*>(data) + 1, size - 1);
    std::vector<std::string> warnings;
    try {
        switch (data[0] % 6) {
            case 0: json_and_records(s); break;
            case 1: pdsd::kb::detail::docx_xml_to_text("fuzz.docx", s, warnings); break;
            case 2: pdsd::kb::load_bytes("fuzz.html", s); break;
            case 3: pdsd::kb::load_bytes("fuzz.csv", s); break;
            case 4: pdsd::kb::load_bytes("fuzz.json", s); break;
            case 5: pdsd::kb::load_bytes("fuzz.jsonl", s); break;
        }
    } catch (const pdsd::Error&) {
    }
    return 0;
}
