// Cross-encoder rerankers: a (query, document) pair in, one relevance logit out.
//
// Built in: XLMRobertaForSequenceClassification folders (bge-reranker-v2-m3,
// bge-reranker-large, bge-reranker-base: config model_type "xlm-roberta",
// sentencepiece.bpe.model, model.safetensors with roberta.* + classifier.*), run by the
// XLM-R encoder of model/bert.h with the classification head here:
//   logit = classifier.out_proj( tanh( classifier.dense( h[<s>] ) ) )     (one label)
// where h[<s>] is the last hidden state of the first token of
//   <s> query </s></s> document </s>
// truncated to max_length tokens with HF's "longest_first" rule (xlmr_pair_ids).
// The relevance score is sigmoid(logit), what sentence-transformers' CrossEncoder.predict
// returns for one-label models (and Xinference/llama-server's relevance_score here).
// Pairs are scored in packed batches like the embedder's (no padding in the linears).
//
// BertForSequenceClassification cross-encoders are refused (ConfigError): their second
// segment needs token_type_ids 1, which the encoder does not take.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::kb {

struct RerankerOptions {
    size_t max_length = 1024;      // tokens per pair incl. specials (Chatchat's RERANKER_MAX_LENGTH);
                                   // capped at the model's own limit
    std::string dtype = "fp32";    // fp32 | bf16 | auto (as the embedder's embed_dtype)
};

class Reranker {
public:
    virtual ~Reranker() = default;
    // One logit per (query, document) pair (higher = more relevant), in order; all pairs
    // are batched together. Thread-safe (calls are serialised).
    virtual std::vector<double> pair_logits(const std::vector<std::pair<std::string, std::string>>& pairs) = 0;
    // The logits of (query, documents[i]).
    std::vector<double> logits(const std::string& query, const std::vector<std::string>& documents);
    // sigmoid(logits): CrossEncoder.predict's scores, in (0, 1).
    std::vector<double> scores(const std::string& query, const std::vector<std::string>& documents);
    // The model folder's name (what /v1/rerank reports as "model").
    virtual std::string name() const = 0;
    virtual size_t max_length() const = 0;
};

double rerank_sigmoid(double logit);

// The reranker of `spec`: a model folder, a name under <root>/models, or $PDSD_MODELS_DIR/NAME.
// Throws IoError (no such folder) / ConfigError (not a supported cross-encoder) / FormatError.
std::unique_ptr<Reranker> open_reranker(const std::string& root, const std::string& spec, const RerankerOptions& options = {});

// Process-wide cache of open_reranker (keyed by resolved folder and options): the CLI,
// the chat session and the server's KB routes share one loaded model per spec.
std::shared_ptr<Reranker> shared_reranker(const std::string& root, const std::string& spec, const RerankerOptions& options = {});

// <s> a </s></s> b </s> from the plain ids of a and b, cut to at most max_length ids as HF
// tokenizers' longest_first truncation does (budget = max_length - 4 content tokens:
// the shorter keeps min(its length, budget/2 or what the longer leaves), the longer the rest).
std::vector<int32_t> xlmr_pair_ids(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t max_length);

}  // namespace pdsd::kb
