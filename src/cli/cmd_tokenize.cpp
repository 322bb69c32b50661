// `pdsd tokenize`: text -> token ids (JSON array on stdout) and back, with the Qwen
// tokenizer of a model folder. Modes:
//   pdsd tokenize --tokenizer DIR "text"          ids of the text
//   pdsd tokenize --tokenizer DIR -               ids of stdin (all bytes, as read)
//   pdsd tokenize --tokenizer DIR --decode "[1,2]"   text of a JSON id array (or - for stdin)
//   pdsd tokenize --tokenizer DIR --jsonl         stdin: one JSON string per line ->
//                                                 stdout: one JSON id array per line
//   pdsd tokenize --tokenizer DIR --jsonl --decode   id arrays -> JSON strings
//   pdsd tokenize --tokenizer DIR --bench FILE [--threads N]
//        encodes every line of FILE, prints MB/s to stderr and "<token count> <FNV-1a of ids>" to stdout.
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/tokenizer/tokenizer.h"
#include "pdsd/tokenizer/wordpiece.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>

namespace pdsd::cli {

namespace {

struct TokenizeOptions {
    std::string tokenizer;
    std::string text;
    bool decode = false;
    bool jsonl = false;
    bool skip_special = false;
    std::string bench;
    int threads = 1;
};

std::string read_stdin() {
    std::ios::sync_with_stdio(false);
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::string ids_json(const std::vector<tokenizer::TokenId>& ids) {
    std::string s = "[";
    for (size_t k = 0; k < ids.size(); ++k) {
        if (k) s += ',';
        s += std::to_string(ids[k]);
    }
    s += ']';
    return s;
}

std::vector<tokenizer::TokenId> parse_ids(const std::string& text, const std::string& source) {
    nlohmann::json j = parse_json(text, source);
    if (!j.is_array()) throw DataError(ErrorInfo{source}.msg("expected a JSON array of token ids").found(text.substr(0, 80)));
    std::vector<tokenizer::TokenId> ids;
    for (const auto& x : j) {
        if (!x.is_number_integer()) throw DataError(ErrorInfo{source}.msg("token ids must be integers").found(x.dump()));
        ids.push_back(x.get<tokenizer::TokenId>());
    }
    return ids;
}

std::vector<std::string> split_lines(const std::string& all) {
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < all.size()) {
        size_t eol = all.find('\n', pos);
        if (eol == std::string::npos) eol = all.size();
        lines.push_back(all.substr(pos, eol - pos));
        pos = eol + 1;
    }
    return lines;
}

void run_bench(const tokenizer::Tokenizer& tok, const TokenizeOptions& o) {
    std::vector<std::string> lines = split_lines(read_file(o.bench));
    size_t bytes = 0;
    for (const auto& l : lines) bytes += l.size();
    auto t0 = std::chrono::steady_clock::now();
    // Token count and an FNV-1a checksum of all ids, so a peer run can be checked equal.
    size_t count = 0;
    uint64_t checksum = 0xCBF29CE484222325ULL;
    auto add = [&](const std::vector<tokenizer::TokenId>& ids) {
        count += ids.size();
        for (auto id : ids) checksum = (checksum ^ uint64_t(uint32_t(id))) * 0x100000001B3ULL;
    };
    double s;
    if (o.threads == 1) {
        for (const auto& l : lines) add(tok.encode(l));
        s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
        auto all = tok.encode_batch(lines, o.threads);
        s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (const auto& ids : all) add(ids);
    }
    std::fprintf(stderr, "pdsd tokenize bench: %zu lines, %.2f MB in %.3f s = %.2f MB/s (%d threads)\n", lines.size(),
                 double(bytes) / 1e6, s, double(bytes) / 1e6 / s, o.threads);
    std::printf("%zu %016llx\n", count, static_cast<unsigned long long>(checksum));
}

// A BERT folder: vocab.txt, or a tokenizer.json whose model is WordPiece.
bool is_wordpiece_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    if (fs::exists(fs::path(dir) / "vocab.txt")) return true;
    fs::path tj = fs::path(dir) / "tokenizer.json";
    if (!fs::exists(tj)) return false;
    nlohmann::json j = read_json_file(tj.string());
    // Not an object with a "model" object (e.g. `[]`): the BPE loader reports what is wrong.
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object() || !j["model"].contains("type")) return false;
    return j["model"]["type"].is_string() && j["model"]["type"].get<std::string>() == "WordPiece";
}

// WordPiece models (bge/BERT): ids with [CLS] ... [SEP], truncated to model_max_length,
// as HF `tokenizer(text, truncation=True)["input_ids"]`. XLM-R (bge-m3, a folder with
// sentencepiece.bpe.model): <s> ... </s> the same way.
template <class Tok>
void run_encoder(const Tok& tok, const TokenizeOptions& o) {
    auto ids_of = [&](const std::string& t) {
        auto ids = tok.encode(t).ids;
        return ids_json(std::vector<tokenizer::TokenId>(ids.begin(), ids.end()));
    };
    if (o.decode || !o.bench.empty()) throw UsageError(ErrorInfo{}.msg("--decode/--bench are for Qwen tokenizers"));
    if (!o.jsonl) {
        std::string s = ids_of(o.text == "-" ? read_stdin() : o.text) + "\n";
        std::fwrite(s.data(), 1, s.size(), stdout);
        return;
    }
    std::vector<std::string> lines = split_lines(read_stdin());
    std::string out;
    for (size_t k = 0; k < lines.size(); ++k) {
        nlohmann::json j = parse_json(lines[k], "stdin line " + std::to_string(k + 1));
        if (!j.is_string())
            throw DataError(ErrorInfo{"stdin"}.at("line " + std::to_string(k + 1)).msg("expected a JSON string per line"));
        out += ids_of(j.get<std::string>()) + "\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
}

void run_tokenize(const TokenizeOptions& o) {
    if (tokenizer::has_xlmr_tokenizer(o.tokenizer)) {
        run_encoder(tokenizer::XlmrTokenizer::load(o.tokenizer), o);
        return;
    }
    if (is_wordpiece_folder(o.tokenizer)) {
        run_encoder(tokenizer::WordPieceTokenizer::load(o.tokenizer), o);
        return;
    }
    auto t0 = std::chrono::steady_clock::now();
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(o.tokenizer);
    log::debug("tokenize", log::cat("loaded ", o.tokenizer, " in ",
                                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s"));
    if (!o.bench.empty()) {
        run_bench(tok, o);
        return;
    }
    if (o.jsonl) {
        if (!o.text.empty() && o.text != "-") {
            throw UsageError(ErrorInfo{}.msg("--jsonl reads stdin").hint("drop the TEXT argument"));
        }
        std::vector<std::string> lines = split_lines(read_stdin());
        std::string out;
        if (o.decode) {
            for (size_t k = 0; k < lines.size(); ++k) {
                auto ids = parse_ids(lines[k], "stdin line " + std::to_string(k + 1));
                out += nlohmann::json(tok.decode(ids, o.skip_special)).dump(-1, ' ', false) + "\n";
            }
        } else {
            std::vector<std::string> texts(lines.size());
            for (size_t k = 0; k < lines.size(); ++k) {
                nlohmann::json j = parse_json(lines[k], "stdin line " + std::to_string(k + 1));
                if (!j.is_string()) {
                    throw DataError(ErrorInfo{"stdin"}.at("line " + std::to_string(k + 1))
                                        .msg("expected a JSON string per line"));
                }
                texts[k] = j.get<std::string>();
            }
            for (const auto& ids : tok.encode_batch(texts, o.threads)) out += ids_json(ids) + "\n";
        }
        std::fwrite(out.data(), 1, out.size(), stdout);
        return;
    }
    std::string input = o.text == "-" ? read_stdin() : o.text;
    if (o.decode) {
        std::string text = tok.decode(parse_ids(input, o.text == "-" ? "stdin" : "TEXT"), o.skip_special);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fputc('\n', stdout);
    } else {
        std::string s = ids_json(tok.encode(input)) + "\n";
        std::fwrite(s.data(), 1, s.size(), stdout);
    }
}

}  // namespace

void register_tokenize(CLI::App& app, Registry& registry) {
    auto opts = std::make_shared<TokenizeOptions>();
    auto* cmd = app.add_subcommand("tokenize", "text -> Qwen token ids as a JSON array (or --decode ids -> text)");
    cmd->add_option("--tokenizer", opts->tokenizer,
                    "model folder (tokenizer.json or vocab.json + merges.txt; BERT: vocab.txt -> ids with [CLS]/[SEP])")
        ->required();
    cmd->add_option("text", opts->text, "text to encode (or JSON id array with --decode); - reads stdin");
    cmd->add_flag("--decode", opts->decode, "input is a JSON array of ids; print the text");
    cmd->add_flag("--skip-special-tokens", opts->skip_special, "with --decode: drop special tokens");
    cmd->add_flag("--jsonl", opts->jsonl, "batch: one JSON string (or id array with --decode) per stdin line");
    cmd->add_option("--bench", opts->bench, "benchmark: encode each line of FILE, MB/s to stderr")->group("");
    cmd->add_option("--threads", opts->threads, "threads for --jsonl / --bench (0 = all cores)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    registry.add(cmd, [opts] {
        if (opts->text.empty() && !opts->jsonl && opts->bench.empty()) {
            throw UsageError(ErrorInfo{}.msg("nothing to tokenize").hint("give TEXT, - for stdin, or --jsonl"));
        }
        run_tokenize(*opts);
    });
}

}  // namespace pdsd::cli
