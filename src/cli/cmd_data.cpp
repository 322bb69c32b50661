// `pdsd data validate` and `pdsd data preview`: lint SFT datasets registered in
// dataset_info.json (every problem at once) and show one example with its trained spans.
#include "commands.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/tokenizer/dataset_check.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <limits>
#include <iostream>
#include <memory>

#include <unistd.h>

namespace pdsd::cli {

namespace {

struct DataArgs {
    std::string datasets;
    std::string dataset_dir = "data";
    std::string template_name = "qwen";
    int64_t cutoff_len = 2048;
    std::string model, tokenizer;
    bool train_on_prompt = false, mask_history = false;
    std::string default_system;
    bool json = false;
    int64_t index = 0;
    std::string color = "auto";
};

void add_common(CLI::App* cmd, DataArgs& a) {
    cmd->add_option("--dataset", a.datasets, "dataset names from dataset_info.json, comma-separated")->required();
    cmd->add_option("--dataset_dir", a.dataset_dir, "folder holding dataset_info.json")->capture_default_str();
    cmd->add_option("--template", a.template_name, "chat template (qwen)")->capture_default_str();
    cmd->add_option("--cutoff_len", a.cutoff_len, "max tokens per example (LLaMA-Factory truncation)")
        ->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--model,--model_name_or_path", a.model, "model folder whose tokenizer gives token statistics");
    cmd->add_option("--tokenizer", a.tokenizer, "tokenizer folder or tokenizer.json (instead of --model)");
    cmd->add_flag("--train_on_prompt", a.train_on_prompt, "train on prompt tokens too (LLaMA-Factory option)");
    cmd->add_flag("--mask_history", a.mask_history, "train on the last turn only (LLaMA-Factory option)");
    cmd->add_option("--default_system", a.default_system, "system prompt used when a record has none");
}

tokenizer::DataCheckOptions to_options(const DataArgs& a) {
    tokenizer::DataCheckOptions o;
    o.datasets = split_list(a.datasets);
    o.dataset_dir = a.dataset_dir;
    o.template_name = a.template_name;
    o.template_options.cutoff_len = a.cutoff_len;
    o.template_options.train_on_prompt = a.train_on_prompt;
    o.template_options.mask_history = a.mask_history;
    if (!a.default_system.empty()) o.template_options.default_system = a.default_system;
    return o;
}

// The tokenizer (or none), kept alive with the encode/decode functions that point at it.
struct LoadedTokenizer {
    std::unique_ptr<tokenizer::Tokenizer> tok;
    std::unique_ptr<tokenizer::EncodeFn> encode;
    std::unique_ptr<std::function<std::string(const std::vector<int32_t>&)>> decode;
};

LoadedTokenizer load_tokenizer(const DataArgs& a) {
    LoadedTokenizer t;
    std::string path = !a.tokenizer.empty() ? a.tokenizer : a.model;
    if (path.empty()) return t;
    t.tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(path));
    t.encode = std::make_unique<tokenizer::EncodeFn>(tokenizer::encoder_of(*t.tok));
    const tokenizer::Tokenizer* tk = t.tok.get();
    t.decode = std::make_unique<std::function<std::string(const std::vector<int32_t>&)>>(
        [tk](const std::vector<int32_t>& ids) { return tk->decode(ids); });
    return t;
}

}  // namespace

void register_data(CLI::App& app, Registry& registry) {
    auto* data = app.add_subcommand("data", "check SFT datasets (dataset_info.json, alpaca/sharegpt)");
    data->require_subcommand(1);

    auto va = std::make_shared<DataArgs>();
    auto* validate = data->add_subcommand("validate", "report every problem of the datasets; exit 0 only when clean");
    add_common(validate, *va);
    validate->add_flag("--json", va->json, "print the report as JSON");
    registry.add(validate, [va] {
        tokenizer::DataCheckOptions o = to_options(*va);
        LoadedTokenizer t = load_tokenizer(*va);
        tokenizer::DataCheckReport r = tokenizer::check_datasets(o, t.encode.get());
        // replace: a file name or record quoted in a problem may hold non-UTF-8 bytes.
        if (va->json)
            std::cout << tokenizer::report_to_json(r, o).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        else std::cout << tokenizer::format_report(r, o);
        std::cout.flush();
        if (!r.clean())
            throw DataError(ErrorInfo{}.msg(std::to_string(r.problems.size()) + " dataset problem(s)").hint("see the report on stdout"));
    });

    auto pa = std::make_shared<DataArgs>();
    auto* preview = data->add_subcommand("preview", "show one example as the model sees it, trained text marked");
    add_common(preview, *pa);
    preview->add_option("--index", pa->index, "record index among the usable records")->capture_default_str();
    preview->add_option("--color", pa->color, "auto|always|never")->capture_default_str();
    registry.add(preview, [pa] {
        check_int_in_range(pa->index, "--index", 0, std::numeric_limits<int64_t>::max());
        tokenizer::DataCheckOptions o = to_options(*pa);
        LoadedTokenizer t = load_tokenizer(*pa);
        bool color = pa->color == "always" || (pa->color == "auto" && isatty(STDOUT_FILENO));
        std::cout << tokenizer::preview_example(o, o.datasets.empty() ? "" : o.datasets.front(), pa->index, t.encode.get(),
                                                t.decode.get(), color);
    });
}

}  // namespace pdsd::cli
