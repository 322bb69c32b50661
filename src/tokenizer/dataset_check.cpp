#include "pdsd/tokenizer/dataset_check.h"

#include "pdsd/core/error.h"

#include <cstdio>
#include <sstream>

namespace pdsd::tokenizer {

namespace {
constexpr size_t kBatch = 16384;  // conversations tokenized per batch (bounded memory)
}

DataCheckReport check_datasets(const DataCheckOptions& options, const EncodeFn* encode) {
    DataCheckReport report;
    if (options.template_name != "qwen")
        throw UsageError(ErrorInfo{}.at("--template").msg("unsupported template").expected("qwen").found(options.template_name)
                             .hint("pdsd reproduces LLaMA-Factory's qwen template for Qwen2.5"));
    data::Registry reg = data::Registry::load(options.dataset_dir, report.problems);
    std::unique_ptr<QwenTrainTemplate> tpl;
    if (encode) {
        tpl = std::make_unique<QwenTrainTemplate>(*encode, options.template_options);
        report.tokenized = true;
    }
    for (const auto& name : options.datasets) {
        DatasetSummary sum;
        sum.name = name;
        if (!reg.check_defined(name, report.problems)) {
            report.datasets.push_back(sum);
            continue;
        }
        const data::DatasetAttr* attr = reg.find(name);
        if (!attr) {
            report.datasets.push_back(sum);
            continue;
        }
        TokenStats stats;
        stats.cutoff_len = options.template_options.cutoff_len;
        std::vector<data::Conversation> batch;
        auto flush = [&] {
            if (!tpl || batch.empty()) return;
            accumulate_token_stats(*tpl, batch, stats, options.threads);
            batch.clear();
        };
        sum.records = data::for_each_conversation(reg, *attr, report.problems, [&](const data::RecordRef& ref, const data::Conversation& c) {
            ++sum.usable;
            if (!tpl) return;
            // A malformed function call / tools JSON was already reported by the converter;
            // the template would throw on it, so keep such records out of the statistics.
            batch.push_back(c);
            if (batch.size() >= kBatch) flush();
            (void)ref;
        });
        try {
            flush();
        } catch (const DataError& e) {
            report.problems.push_back({name, ErrorInfo{attr->file_name}.msg(std::string("tokenization failed: ") + e.what())});
        }
        if (tpl) sum.tokens = stats;
        report.datasets.push_back(sum);
    }
    return report;
}

std::string format_report(const DataCheckReport& report, const DataCheckOptions& options) {
    std::ostringstream os;
    os << "pdsd data validate: " << options.datasets.size() << " dataset(s) in " << options.dataset_dir
       << " (template " << options.template_name << ")\n";
    for (const auto& d : report.datasets) {
        os << "\n" << d.name << ": " << d.records << " records, " << d.usable << " usable\n";
        if (d.tokens) {
            const TokenStats& t = *d.tokens;
            os << "  tokens (cutoff_len " << t.cutoff_len << "): " << t.total_tokens << " after truncation, "
               << t.trained_tokens << " trained, longest example " << t.max_length << "\n";
            os << "  truncated: " << t.truncated << " of " << t.examples << " examples";
            os << "; responses that lose <|im_end|>: " << t.lost_eos << "\n";
            os << "  length histogram (tokens before truncation):\n";
            const auto& b = TokenStats::bucket_bounds();
            int64_t lo = 0;
            for (size_t i = 0; i < b.size(); ++i) {
                char label[64];
                if (i + 1 < b.size()) {
                    auto hi = static_cast<int64_t>(b[i] * static_cast<double>(t.cutoff_len));
                    std::snprintf(label, sizeof label, "%7lld..%-7lld", static_cast<long long>(lo), static_cast<long long>(hi));
                    lo = hi + 1;
                } else {
                    std::snprintf(label, sizeof label, "%7lld..      ", static_cast<long long>(lo));
                }
                int64_t bar = t.examples ? (t.histogram[i] * 40 + t.examples - 1) / t.examples : 0;
                os << "    " << label << " " << std::string(static_cast<size_t>(bar), '#') << " " << t.histogram[i]
                   << (b[i] > 1.0 && t.histogram[i] ? "  (> cutoff_len: truncated)" : "") << "\n";
            }
        }
    }
    if (report.problems.empty()) {
        os << "\nno problems found\n";
    } else {
        os << "\n" << report.problems.size() << " problem(s):\n";
        for (const auto& p : report.problems) os << "- " << p.format() << "\n";
    }
    return os.str();
}

nlohmann::json report_to_json(const DataCheckReport& report, const DataCheckOptions& options) {
    nlohmann::json j;
    j["dataset_dir"] = options.dataset_dir;
    j["template"] = options.template_name;
    j["cutoff_len"] = options.template_options.cutoff_len;
    j["clean"] = report.clean();
    j["datasets"] = nlohmann::json::array();
    for (const auto& d : report.datasets) {
        nlohmann::json dj{{"name", d.name}, {"records", d.records}, {"usable", d.usable}};
        if (d.tokens) {
            const TokenStats& t = *d.tokens;
            dj["tokens"] = {{"examples", t.examples},         {"truncated", t.truncated},
                            {"lost_im_end", t.lost_eos},      {"total_tokens", t.total_tokens},
                            {"trained_tokens", t.trained_tokens}, {"max_length", t.max_length},
                            {"histogram", t.histogram},
                            {"histogram_upper_bounds_of_cutoff", {0.25, 0.5, 0.75, 1.0, 1.5, 2.0, nullptr}}};
        }
        j["datasets"].push_back(dj);
    }
    j["problems"] = nlohmann::json::array();
    for (const auto& p : report.problems) {
        nlohmann::json pj{{"dataset", p.dataset}, {"file", p.info.file},      {"where", p.info.where},
                          {"what", p.info.what},   {"expected", p.info.expected_}, {"found", p.info.found_},
                          {"hint", p.info.hint_},  {"message", p.format()}};
        j["problems"].push_back(pj);
    }
    return j;
}

std::string preview_example(const DataCheckOptions& options, const std::string& dataset, int64_t index,
                            const EncodeFn* encode, const std::function<std::string(const std::vector<int32_t>&)>* decode,
                            bool color) {
    data::Problems problems;
    data::Registry reg = data::Registry::load(options.dataset_dir, problems);
    std::optional<data::Conversation> found;
    data::RecordRef where;
    int64_t seen = 0;
    if (reg.check_defined(dataset, problems) && reg.find(dataset)) {
        data::for_each_conversation(reg, *reg.find(dataset), problems, [&](const data::RecordRef& ref, const data::Conversation& c) {
            if (seen++ == index) {
                found = c;
                where = ref;
            }
        });
    }
    if (!found) {
        std::string msg = problems.empty() ? "" : "\n  " + problems.front().format();
        throw DataError(ErrorInfo{options.dataset_dir}.at("dataset " + dataset + " index " + std::to_string(index))
                            .msg("no such usable record" + msg)
                            .expected("an index below " + std::to_string(seen)).found(std::to_string(index)));
    }
    const std::string on = color ? "\x1b[32m" : "[[", off = color ? "\x1b[0m" : "]]";
    std::ostringstream os;
    os << "# " << dataset << " record " << where.index << " (" << where.file << ", line " << where.line << ")\n";
    os << "# trained text is " << (color ? "green" : "inside [[ ]]") << "\n\n";
    if (encode && decode) {
        QwenTrainTemplate tpl(*encode, options.template_options);
        EncodedExample ex = tpl.encode(*found);
        size_t i = 0, n = ex.input_ids.size();
        int64_t trained = 0;
        while (i < n) {
            bool t = ex.labels[i] != IGNORE_INDEX;
            size_t j = i;
            while (j < n && (ex.labels[j] != IGNORE_INDEX) == t) ++j;
            std::vector<int32_t> run(ex.input_ids.begin() + static_cast<std::ptrdiff_t>(i),
                                     ex.input_ids.begin() + static_cast<std::ptrdiff_t>(j));
            std::string text = (*decode)(run);
            if (t) {
                trained += static_cast<int64_t>(j - i);
                os << on << text << off;
            } else {
                os << text;
            }
            i = j;
        }
        os << "\n\n# tokens: " << n << " (" << trained << " trained, " << (static_cast<int64_t>(n) - trained)
           << " masked), before truncation " << ex.full_length << ", cutoff_len " << options.template_options.cutoff_len;
        if (ex.truncated) os << ", TRUNCATED";
        if (ex.response_lost_eos) os << ", a trained response LOST its <|im_end|>";
        os << "\n";
    } else {
        QwenTrainTemplate tpl([](std::string_view) { return std::vector<int32_t>{}; }, options.template_options);
        auto slots = tpl.slots(*found);
        size_t pairs = slots.size() / 2;
        for (size_t i = 0; i < slots.size(); ++i) {
            std::string text;
            for (const auto& s : slots[i]) text += s;
            bool is_target = i % 2 == 1;
            bool trained = is_target ? !(options.template_options.mask_history && i / 2 + 1 != pairs)
                                     : options.template_options.train_on_prompt;
            os << (trained ? on + text + off : text);
        }
        os << "\n\n# (no tokenizer given: pass --model DIR or --tokenizer DIR for token counts and cutoff_len truncation)\n";
    }
    return os.str();
}

}  // namespace pdsd::tokenizer
