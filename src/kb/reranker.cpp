// Cross-encoder rerankers (include/pdsd/kb/reranker.h): the XLM-R encoder of model/bert.h
// returns the raw <s> hidden states of packed pair batches; the one-label classification
// head (dense + tanh + out_proj, a few H x H multiply-adds per pair) runs here on floats.
#include "pdsd/kb/reranker.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/model/bert.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

namespace pdsd::kb {

namespace fs = std::filesystem;

double rerank_sigmoid(double logit) { return 1.0 / (1.0 + std::exp(-logit)); }

std::vector<double> Reranker::logits(const std::string& query, const std::vector<std::string>& documents) {
    std::vector<std::pair<std::string, std::string>> pairs;
    pairs.reserve(documents.size());
    for (const auto& d : documents) pairs.emplace_back(query, d);
    return pair_logits(pairs);
}

std::vector<double> Reranker::scores(const std::string& query, const std::vector<std::string>& documents) {
    std::vector<double> s = logits(query, documents);
    for (auto& x : s) x = rerank_sigmoid(x);
    return s;
}

std::vector<int32_t> xlmr_pair_ids(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t max_length) {
    using tokenizer::XlmrTokenizer;
    if (max_length < 5) throw UsageError(ErrorInfo{}.at("reranker max_length").expected(">= 5").found(std::to_string(max_length)));
    const size_t budget = max_length - 4;   // <s> a </s> </s> b </s>
    size_t na = a.size(), nb = b.size();
    if (na + nb > budget) {
        // tokenizers' TruncationStrategy::LongestFirst (n1 the shorter, n2 the longer).
        const bool swap = na > nb;
        size_t n1 = std::min(na, nb), n2 = std::max(na, nb);
        n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
        if (n1 + n2 > budget) {
            n1 = budget / 2;
            n2 = n1 + budget % 2;
        }
        if (swap) std::swap(n1, n2);
        na = std::min(na, n1);
        nb = std::min(nb, n2);
    }
    std::vector<int32_t> ids;
    ids.reserve(na + nb + 4);
    ids.push_back(XlmrTokenizer::kBos);
    ids.insert(ids.end(), a.begin(), a.begin() + static_cast<ptrdiff_t>(na));
    ids.push_back(XlmrTokenizer::kEos);
    ids.push_back(XlmrTokenizer::kEos);
    ids.insert(ids.end(), b.begin(), b.begin() + static_cast<ptrdiff_t>(nb));
    ids.push_back(XlmrTokenizer::kEos);
    return ids;
}

namespace {

// A checkpoint tensor as floats (F32 / F16 / BF16), checked against `shape`.
std::vector<float> read_floats(const Checkpoint& ck, const std::string& name, const std::vector<int64_t>& shape) {
    if (!ck.contains(name))
        throw FormatError(ErrorInfo{ck.source()}.at(name).msg("missing tensor")
                              .hint("a cross-encoder folder (XLMRobertaForSequenceClassification) has classifier.dense.* and classifier.out_proj.*"));
    const TensorInfo& t = ck.info(name);
    if (t.shape != shape) {
        std::string e, f;
        for (auto s : shape) e += (e.empty() ? "[" : ",") + std::to_string(s);
        for (auto s : t.shape) f += (f.empty() ? "[" : ",") + std::to_string(s);
        throw ShapeError(ErrorInfo{ck.source()}.at(name).expected(e + "]").found(f.empty() ? "[]" : f + "]"));
    }
    const uint8_t* p = ck.data(name);
    std::vector<float> out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
        if (t.dtype == DType::F32) {
            std::memcpy(&out[i], p + 4 * i, 4);
        } else if (t.dtype == DType::BF16 || t.dtype == DType::F16) {
            uint16_t h;
            std::memcpy(&h, p + 2 * i, 2);
            if (t.dtype == DType::BF16) {
                uint32_t u = static_cast<uint32_t>(h) << 16;
                std::memcpy(&out[i], &u, 4);
            } else {
                // IEEE half -> float
                uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
                if (exp == 0) {
                    float v = std::ldexp(static_cast<float>(man), -24);
                    out[i] = sign ? -v : v;
                    continue;
                }
                u = exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112) << 23) | (man << 13));
                std::memcpy(&out[i], &u, 4);
            }
        } else {
            throw FormatError(ErrorInfo{ck.source()}.at(name).expected("F32, F16 or BF16").found(dtype_name(t.dtype)));
        }
    }
    return out;
}

class XlmrCrossEncoder final : public Reranker {
public:
    XlmrCrossEncoder(const fs::path& dir, std::string name, const RerankerOptions& o) : name_(std::move(name)) {
        const std::string cfg_path = (dir / "config.json").string();
        if (!tokenizer::is_xlm_roberta_config(dir.string()))
            throw ConfigError(ErrorInfo{cfg_path}.at("model_type").expected("xlm-roberta (XLMRobertaForSequenceClassification)")
                                  .hint("bge-reranker-v2-m3, bge-reranker-large and bge-reranker-base are supported; "
                                        "BERT cross-encoders need token_type_ids, which pdsd's encoder does not take"));
        BertConfig cfg = load_bert_config(dir.string());
        hidden_ = cfg.hidden_size;
        Checkpoint ck = Checkpoint::open(dir.string());
        dense_w_ = read_floats(ck, "classifier.dense.weight", {hidden_, hidden_});
        dense_b_ = read_floats(ck, "classifier.dense.bias", {hidden_});
        if (ck.contains("classifier.out_proj.weight") && ck.info("classifier.out_proj.weight").shape.size() == 2 &&
            ck.info("classifier.out_proj.weight").shape[0] != 1)
            throw ConfigError(ErrorInfo{cfg_path}.at("num_labels").expected("1 (a relevance score)")
                                  .found(std::to_string(ck.info("classifier.out_proj.weight").shape[0])));
        out_w_ = read_floats(ck, "classifier.out_proj.weight", {1, hidden_});
        out_b_ = read_floats(ck, "classifier.out_proj.bias", {1});
        model::BertEmbedOptions mo;
        mo.dtype = o.dtype;
        mo.max_length = o.max_length;
        mo.normalize = false;   // the head needs the raw <s> state
        model_ = model::BertEmbedder::load(dir.string(), mo);
        if (!model_->xlmr_tokenizer())
            throw ConfigError(ErrorInfo{dir.string()}.msg("the reranker folder has no sentencepiece.bpe.model"));
        max_length_ = model_->max_length();
        if (max_length_ < 5) throw ConfigError(ErrorInfo{cfg_path}.at("max_position_embeddings").expected("room for >= 5 tokens"));
        log::info("kb", log::cat("reranker ", dir.string(), " (", model_->dtype(), ", max_length ", max_length_, ")"));
    }

    std::vector<double> pair_logits(const std::vector<std::pair<std::string, std::string>>& texts) override {
        std::lock_guard<std::mutex> lock(mu_);
        if (texts.empty()) return {};
        const auto* tok = model_->xlmr_tokenizer();
        std::vector<std::vector<int32_t>> pairs;
        pairs.reserve(texts.size());
        const std::string* last_query = nullptr;   // consecutive pairs of one query tokenize it once
        std::vector<int32_t> q;
        for (const auto& [query, doc] : texts) {
            if (!last_query || *last_query != query) q = tok->encode_plain(query);
            last_query = &query;
            pairs.push_back(xlmr_pair_ids(q, tok->encode_plain(doc), max_length_));
        }
        std::vector<std::vector<float>> cls = model_->embed_ids(pairs);   // [pairs][hidden], raw <s> states
        std::vector<double> out(texts.size());
        const size_t H = static_cast<size_t>(hidden_);
        std::vector<float> h(H);
        for (size_t i = 0; i < cls.size(); ++i) {
            const float* x = cls[i].data();
            for (size_t r = 0; r < H; ++r) {
                const float* w = &dense_w_[r * H];
                float acc = 0;
                for (size_t c = 0; c < H; ++c) acc += w[c] * x[c];
                h[r] = std::tanh(acc + dense_b_[r]);
            }
            double logit = out_b_[0];
            for (size_t c = 0; c < H; ++c) logit += static_cast<double>(out_w_[c]) * h[c];
            out[i] = logit;
        }
        return out;
    }

    std::string name() const override { return name_; }
    size_t max_length() const override { return max_length_; }

private:
    std::string name_;
    int64_t hidden_ = 0;
    std::vector<float> dense_w_, dense_b_, out_w_, out_b_;   // [H, H], [H], [1, H], [1]
    std::unique_ptr<model::BertEmbedder> model_;
    size_t max_length_ = 512;
    std::mutex mu_;
};

fs::path resolve_reranker_dir(const std::string& root, const std::string& spec) {
    fs::path p(spec);
    std::vector<fs::path> cands{p};
    if (p.is_relative()) {
        if (!root.empty()) cands.push_back(fs::path(root) / "models" / p);
        if (const char* md = std::getenv("PDSD_MODELS_DIR"); md && *md) cands.push_back(fs::path(md) / p);
    }
    std::error_code ec;
    for (auto& c : cands)
        if (fs::is_directory(c, ec) && fs::exists(c / "config.json", ec)) return fs::absolute(c).lexically_normal();
    throw IoError(ErrorInfo{spec}.at("reranker").msg("no model folder (config.json) found")
                      .hint("give the folder of a cross-encoder such as bge-reranker-v2-m3, or a name under <root>/models "
                            "or $PDSD_MODELS_DIR"));
}

}  // namespace

std::unique_ptr<Reranker> open_reranker(const std::string& root, const std::string& spec, const RerankerOptions& options) {
    if (spec.empty() || spec == "none")
        throw UsageError(ErrorInfo{}.at("reranker").msg("no reranker model given").found(spec.empty() ? "\"\"" : spec));
    fs::path dir = resolve_reranker_dir(root, spec);
    std::string name = dir.filename().string();
    if (name.empty()) name = dir.parent_path().filename().string();
    return std::make_unique<XlmrCrossEncoder>(dir, name, options);
}

std::shared_ptr<Reranker> shared_reranker(const std::string& root, const std::string& spec, const RerankerOptions& options) {
    static std::mutex mu;
    static std::map<std::string, std::shared_ptr<Reranker>> cache;
    const std::string key = resolve_reranker_dir(root, spec).string() + "\n" + std::to_string(options.max_length) + "\n" + options.dtype;
    std::lock_guard<std::mutex> lock(mu);
    auto& slot = cache[key];
    if (!slot) slot = open_reranker(root, spec, options);
    return slot;
}

}  // namespace pdsd::kb
