// `pdsd data validate` / `pdsd data preview`: whole-dataset lint with optional token
// statistics through the qwen training template.
//
// Level 2 (tokenizer); torch-free. The encoder is optional: without one only the structural
// checks run (registry keys, files, JSON syntax, UTF-8, columns, types, roles, placeholders).
#pragma once

#include "pdsd/data/dataset.h"
#include "pdsd/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace pdsd::tokenizer {

struct DataCheckOptions {
    std::vector<std::string> datasets;  // names in dataset_info.json
    std::string dataset_dir = "data";
    std::string template_name = "qwen";
    TemplateOptions template_options;   // cutoff_len, train_on_prompt, mask_history, default_system
    int threads = 0;                    // tokenization threads (0 = all cores)
};

struct DatasetSummary {
    std::string name;
    int64_t records = 0;   // records read
    int64_t usable = 0;    // records converted without problems
    std::optional<TokenStats> tokens;
};

struct DataCheckReport {
    std::vector<DatasetSummary> datasets;
    data::Problems problems;
    bool tokenized = false;
    bool clean() const { return problems.empty(); }
};

// Read every record of every dataset; `encode` may be null (no token statistics).
DataCheckReport check_datasets(const DataCheckOptions& options, const EncodeFn* encode);

std::string format_report(const DataCheckReport& report, const DataCheckOptions& options);
nlohmann::json report_to_json(const DataCheckReport& report, const DataCheckOptions& options);

// One rendered example: source text plain, trained text marked (ANSI green when `color`,
// otherwise wrapped in [[ ]]). With `encode`, spans come from the labels of the real encoding
// (after cutoff_len) and token counts are shown; without, from the template slots.
std::string preview_example(const DataCheckOptions& options, const std::string& dataset, int64_t index,
                            const EncodeFn* encode, const std::function<std::string(const std::vector<int32_t>&)>* decode,
                            bool color);

}  // namespace pdsd::tokenizer
