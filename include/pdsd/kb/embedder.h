// The seam where a dense embedding model plugs into the knowledge base.
//
// The KB only needs vectors: an Embedder turns texts into L2-normalised float vectors
// of dim() floats, so inner product == cosine similarity (FAISS IndexFlatIP). A
// libtorch BERT/bge implementation lives in a higher-level module and registers a
// factory with register_embedder_factory(); the KB itself stays torch-free.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pdsd::kb {

// Settings a model-backed embedder takes from kb_settings.yaml before its first use.
struct EmbedderOptions {
    // Prepended to queries (not documents). "auto": the model family's default (bge
    // *-zh*: "为这个句子生成表示以用于检索相关文章：", bge *-en*: "Represent this sentence for
    // searching relevant passages: ", others none); "none" or "": no instruction.
    std::string query_instruction = "auto";
    // Compute dtype of torch models: fp32 | bf16 | auto (bf16 where the CPU has AVX512-BF16 or
    // AMX-BF16: 2-3x faster there, vectors within cosine 0.999 of fp32; else fp32).
    std::string dtype = "auto";
};

class Embedder {
public:
    virtual ~Embedder() = default;
    // One vector per text, each of dim() floats with L2 norm 1 (or all zeros for an
    // empty text). `is_query`: the text is a search query (a model may prepend an
    // instruction, e.g. bge's "为这个句子生成表示以用于检索相关文章：").
    virtual std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) = 0;
    virtual int dim() const = 0;
    // The model name used in the layout: vector_store/<name with ':' -> '_'>/index.faiss.
    virtual std::string name() const = 0;
    // Applied before the first embed(); the default ignores it.
    virtual void configure(const EmbedderOptions&) {}
    // Hard cap in the model's tokens (with [CLS]/[SEP]); texts longer than this are
    // truncated for embedding. 0: no cap (token_count() is then not meaningful).
    virtual size_t max_tokens() const { return 0; }
    // Tokens of `text` as a document, before truncation, with the model's specials.
    virtual size_t token_count(const std::string& /*text*/) const { return 0; }
    // true: embed() may run on several threads at once (no state changes per call).
    // Model-backed embedders are not (a torch module and its buffers are shared).
    virtual bool thread_safe() const { return false; }
};

// An embedder whose embed() runs one call at a time: the lock that lets several searches
// share one model. Only embed() takes the lock; dim/name/max_tokens pass through (they
// read fields set at load). Share the wrapper, not the model, so every user takes the
// same lock.
class SerializedEmbedder final : public Embedder {
public:
    explicit SerializedEmbedder(std::shared_ptr<Embedder> inner) : inner_(std::move(inner)) {}
    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) override;
    int dim() const override { return inner_->dim(); }
    std::string name() const override { return inner_->name(); }
    void configure(const EmbedderOptions& o) override;
    size_t max_tokens() const override { return inner_->max_tokens(); }
    size_t token_count(const std::string& text) const override;
    bool thread_safe() const override { return true; }

private:
    std::shared_ptr<Embedder> inner_;
    mutable std::mutex mu_;
};

// `e` itself when it is thread-safe (or null), else `e` wrapped in a SerializedEmbedder.
std::shared_ptr<Embedder> thread_safe_embedder(std::shared_ptr<Embedder> e);

// Deterministic, model-free embedder for tests and benchmarks ("hash-ngram"): hashed
// character 1- and 2-grams into `dim` buckets, L2-normalised. Texts sharing characters
// get higher cosine; it has no semantics beyond that. "hash-ngram" is 256-d;
// "hash-ngram-<dim>" (e.g. hash-ngram-1024, bge-large's width) gives other widths, so
// search at a real model's dimension can be benchmarked without running a model.
class HashNgramEmbedder : public Embedder {
public:
    explicit HashNgramEmbedder(int dim = 256) : dim_(dim) {}
    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts, bool is_query) override;
    int dim() const override { return dim_; }
    // "hash-ngram" for the default 256-d, else "hash-ngram-<dim>".
    std::string name() const override { return dim_ == 256 ? "hash-ngram" : "hash-ngram-" + std::to_string(dim_); }
    bool thread_safe() const override { return true; }   // a pure function of the text

private:
    int dim_;
};

// Factory for `-e/--embed-model NAME`. Returns nullptr for "none" (BM25 only);
// "hash-ngram" gives HashNgramEmbedder (256-d), "hash-ngram-<dim>" one of that dim
// (8..65536); other names are looked up in the registered
// factories: first the one registered under exactly that name, then every factory in
// name order, each of which may decline by returning nullptr. Built in: "bge", which
// accepts a BERT model folder (config.json with model_type bert + model.safetensors +
// vocab.txt/tokenizer.json) given as a path or found as $PDSD_MODELS_DIR/NAME; its
// name() is the folder's name (the vector_store/<name> folder, as in Chatchat).
// Unknown -> ConfigError naming the registered ones.
using EmbedderFactory = std::function<std::unique_ptr<Embedder>(const std::string& name)>;
void register_embedder_factory(const std::string& name, EmbedderFactory factory);
std::unique_ptr<Embedder> make_embedder(const std::string& name);

}  // namespace pdsd::kb
