// The "bge" embedder: a BERT model folder (bge-*-zh-v1.5, bge-*-en-v1.5, ...) or an
// XLM-RoBERTa one (bge-m3: config model_type "xlm-roberta", sentencepiece.bpe.model) run by
// model/bert.h; CLS pooling + L2 normalisation there. Registered through
// register_embedder_factory like any other embedder; the torch code stays in src/model.
#include "bge_embedder.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/model/bert.h"
#include "pdsd/tokenizer/wordpiece.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace pdsd::kb {

namespace fs = std::filesystem;

namespace {

// bge's published query instructions (FlagEmbedding's model cards).
const char* kZhInstruction = "为这个句子生成表示以用于检索相关文章：";
const char* kEnInstruction = "Represent this sentence for searching relevant passages: ";

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

class BgeEmbedder final : public Embedder {
public:
    BgeEmbedder(const fs::path& dir, std::string name) : dir_(dir), name_(std::move(name)) {
        cfg_ = load_bert_config(dir.string());
        xlmr_ = tokenizer::is_xlm_roberta_config(dir.string());
        if (xlmr_) {
            // RoBERTa positions start at pad_token_id + 1: bge-m3 (8194 positions) holds 8192 tokens.
            xtok_ = std::make_unique<tokenizer::XlmrTokenizer>(tokenizer::XlmrTokenizer::load(dir.string()));
            max_tokens_ = static_cast<size_t>(std::max<int64_t>(2, cfg_.max_position_embeddings - cfg_.pad_token_id - 1));
            if (xtok_->model_max_length()) max_tokens_ = std::min(max_tokens_, xtok_->model_max_length());
        } else {
            tok_ = std::make_unique<tokenizer::WordPieceTokenizer>(tokenizer::WordPieceTokenizer::load(dir.string()));
            max_tokens_ = static_cast<size_t>(cfg_.max_position_embeddings);
            if (tok_->options().model_max_length) max_tokens_ = std::min(max_tokens_, tok_->options().model_max_length);
        }
        configure(EmbedderOptions{});
    }

    void configure(const EmbedderOptions& o) override {
        if (model_ && o.dtype != options_.dtype)
            throw UsageError(ErrorInfo{}.at("embedder " + name_).msg("configure() after the model was loaded"));
        options_ = o;
        std::string n = lower(name_);
        if (o.query_instruction == "auto") {
            // bge-m3 (XLM-R) embeds queries as they are: no instruction.
            instruction_ = xlmr_ || n.find("bge") == std::string::npos ? ""
                           : n.find("zh") != std::string::npos ? kZhInstruction
                           : n.find("en") != std::string::npos ? kEnInstruction : "";
        } else if (o.query_instruction == "none") {
            instruction_.clear();
        } else {
            instruction_ = o.query_instruction;
        }
    }

    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) override {
        if (!model_) {
            model::BertEmbedOptions mo;
            mo.dtype = options_.dtype;
            mo.max_length = max_tokens_;
            // A/B switch for benchmarks: PDSD_EMBED_PADDED=1 runs padded batches.
            if (const char* pad = std::getenv("PDSD_EMBED_PADDED"); pad && std::string(pad) == "1") mo.packed = false;
            // PDSD_EMBED_BATCH_TOKENS=N: tokens per forward (default model::BertEmbedOptions').
            if (const char* bt = std::getenv("PDSD_EMBED_BATCH_TOKENS"); bt && std::atol(bt) > 0)
                mo.max_batch_tokens = static_cast<size_t>(std::atol(bt));
            // PDSD_EMBED_UNFUSED=1: at::linear + at::gelu instead of oneDNN's pre-packed fused linear.
            if (const char* uf = std::getenv("PDSD_EMBED_UNFUSED"); uf && std::string(uf) == "1") mo.fused_linear = false;
            log::info("kb", log::cat("loading embedding model ", dir_.string(), " (", options_.dtype, ")"));
            model_ = model::BertEmbedder::load(dir_.string(), mo);
            if (options_.dtype == "auto") log::info("kb", log::cat("embedding dtype auto -> ", model_->dtype()));
        }
        if (!is_query || instruction_.empty()) return model_->embed(texts);
        std::vector<std::string> q;
        q.reserve(texts.size());
        for (auto& t : texts) q.push_back(instruction_ + t);
        return model_->embed(q);
    }

    int dim() const override { return static_cast<int>(cfg_.hidden_size); }
    std::string name() const override { return name_; }
    size_t max_tokens() const override { return max_tokens_; }
    size_t token_count(const std::string& text) const override {
        return xtok_ ? xtok_->encode(text, 0).full_length : tok_->encode(text, 0).full_length;
    }

private:
    fs::path dir_;
    std::string name_;
    BertConfig cfg_;
    bool xlmr_ = false;
    std::unique_ptr<tokenizer::WordPieceTokenizer> tok_;   // BERT
    std::unique_ptr<tokenizer::XlmrTokenizer> xtok_;       // XLM-R
    std::unique_ptr<model::BertEmbedder> model_;
    EmbedderOptions options_;
    std::string instruction_;
    size_t max_tokens_ = 512;
};

// A folder with a BERT or XLM-R config.json (model_type "bert" / "xlm-roberta" / "roberta",
// or a Bert* / XLMRoberta* architecture).
bool is_bert_folder(const fs::path& d) {
    std::error_code ec;
    if (!fs::is_directory(d, ec) || !fs::exists(d / "config.json", ec)) return false;
    try {
        nlohmann::json j = read_json_file((d / "config.json").string());
        std::string mt = j.value("model_type", "");
        if (mt == "bert" || mt == "xlm-roberta" || mt == "roberta") return true;
        if (!mt.empty()) return false;
        if (j.contains("architectures") && j["architectures"].is_array())
            for (auto& a : j["architectures"])
                if (a.is_string() && (a.get<std::string>().rfind("Bert", 0) == 0 || a.get<std::string>().rfind("XLMRoberta", 0) == 0))
                    return true;
    } catch (const Error&) {
    }
    return false;
}

std::unique_ptr<Embedder> make_bge(const std::string& spec) {
    fs::path p(spec);
    std::vector<fs::path> cands{p};
    if (const char* md = std::getenv("PDSD_MODELS_DIR"); md && *md && p.is_relative()) cands.push_back(fs::path(md) / p);
    for (auto& c : cands) {
        if (!is_bert_folder(c)) continue;
        // Not canonical(): a symlinked folder (e.g. into a hub cache snapshot) keeps the
        // name it was given, which names the vector store.
        fs::path abs = fs::absolute(c).lexically_normal();
        std::string name = abs.filename().string();
        if (name.empty()) name = abs.parent_path().filename().string();
        return std::make_unique<BgeEmbedder>(abs, name);
    }
    return nullptr;
}

}  // namespace

void register_bge_embedder() { register_embedder_factory("bge", make_bge); }

}  // namespace pdsd::kb
