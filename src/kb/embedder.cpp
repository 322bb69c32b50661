#include "pdsd/kb/embedder.h"

#include "pdsd/core/error.h"
#include "pdsd/kb/text.h"
#include "bge_embedder.h"

#include <cmath>
#include <map>
#include <mutex>

namespace pdsd::kb {

namespace {
uint64_t fnv1a(const char32_t* p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) {
        h ^= static_cast<uint64_t>(p[i]);
        h *= 1099511628211ull;
    }
    return h;
}

std::mutex& registry_mutex() { static std::mutex m; return m; }
std::map<std::string, EmbedderFactory>& registry() { static std::map<std::string, EmbedderFactory> r; return r; }
}  // namespace

std::vector<std::vector<float>> HashNgramEmbedder::embed(const std::vector<std::string>& texts, bool) {
    std::vector<std::vector<float>> out;
    out.reserve(texts.size());
    for (const auto& t : texts) {
        std::u32string u = utf8_to_u32(t);
        std::vector<float> v(static_cast<size_t>(dim_), 0.0f);
        for (size_t i = 0; i < u.size(); ++i) {
            if (is_py_space(u[i])) continue;
            // unigram weight 1, bigram weight 2 (bigrams carry more of the "meaning")
            v[fnv1a(&u[i], 1) % dim_] += 1.0f;
            if (i + 1 < u.size() && !is_py_space(u[i + 1])) v[fnv1a(&u[i], 2) % dim_] += 2.0f;
        }
        double n = 0;
        for (float x : v) n += double(x) * x;
        if (n > 0) {
            float inv = static_cast<float>(1.0 / std::sqrt(n));
            for (auto& x : v) x *= inv;
        }
        out.push_back(std::move(v));
    }
    return out;
}

void register_embedder_factory(const std::string& name, EmbedderFactory factory) {
    std::lock_guard<std::mutex> lock(registry_mutex());
    registry()[name] = std::move(factory);
}

std::vector<std::vector<float>> SerializedEmbedder::embed(const std::vector<std::string>& texts, bool is_query) {
    std::lock_guard<std::mutex> lock(mu_);
    return inner_->embed(texts, is_query);
}

void SerializedEmbedder::configure(const EmbedderOptions& o) {
    std::lock_guard<std::mutex> lock(mu_);
    inner_->configure(o);
}

size_t SerializedEmbedder::token_count(const std::string& text) const {
    std::lock_guard<std::mutex> lock(mu_);   // a tokenizer may keep a cache
    return inner_->token_count(text);
}

std::shared_ptr<Embedder> thread_safe_embedder(std::shared_ptr<Embedder> e) {
    if (!e || e->thread_safe()) return e;
    return std::make_shared<SerializedEmbedder>(std::move(e));
}

std::unique_ptr<Embedder> make_embedder(const std::string& name) {
    if (name.empty() || name == "none") return nullptr;
    if (name == "hash-ngram") return std::make_unique<HashNgramEmbedder>();
    if (name.rfind("hash-ngram-", 0) == 0) {
        std::string d = name.substr(11);
        if (!d.empty() && d.size() <= 5 && d.find_first_not_of("0123456789") == std::string::npos) {
            int dim = std::stoi(d);
            if (dim >= 8 && dim <= 65536) return std::make_unique<HashNgramEmbedder>(dim);
        }
    }
    static std::once_flag builtins;
    std::call_once(builtins, [] { register_bge_embedder(); });
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end())
        if (auto e = it->second(name)) return e;
    for (auto& [key, factory] : registry())
        if (auto e = factory(name)) return e;
    std::string known = "none, hash-ngram, hash-ngram-<dim>";
    for (auto& [k, v] : registry()) known += ", " + k;
    throw ConfigError(ErrorInfo{}.at("embed_model")
                          .msg("no embedding model implementation named '" + name + "'")
                          .expected(known)
                          .found(name)
                          .hint("give the folder of a BERT/bge model (config.json, model.safetensors, vocab.txt), "
                                "a model name under <root>/models or $PDSD_MODELS_DIR, or -e none (BM25 search)"));
}

}  // namespace pdsd::kb
