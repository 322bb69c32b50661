// BERT encoder (BertModel) in libtorch for text embeddings: bge-*-zh-v1.5 and other
// models of that architecture, loaded from their Hugging Face folder (config.json,
// model.safetensors, vocab.txt / tokenizer.json). Torch-free interface (pimpl), so the
// torch-free kb layer can hold one.
//
// Parameter names are HF's (an optional "bert." prefix is accepted):
//   embeddings.{word,position,token_type}_embeddings.weight, embeddings.LayerNorm.*,
//   encoder.layer.N.attention.self.{query,key,value}.*, attention.output.{dense,LayerNorm}.*,
//   intermediate.dense.*, output.{dense,LayerNorm}.*   (pooler.* is not used).
// Forward: post-LN BERT, exact (erf) GELU, padding keys masked out of attention,
// position ids 0..L-1, token_type_ids 0. Embedding = hidden state of [CLS] of the last
// layer, L2-normalised (bge's pooling; no pooler dense layer).
//
// XLM-RoBERTa (config model_type "xlm-roberta" or "roberta": bge-m3, xlm-roberta-*) is the
// same encoder: parameters without prefix or under "roberta.", position ids
// padding_idx+1, +2, ... skipping tokens whose id is padding_idx (HF
// create_position_ids_from_input_ids), token_type_embeddings of one row, <s> pooled.
// Its tokenizer is tokenizer/xlmr_tokenizer.h (sentencepiece.bpe.model); max length
// max_position_embeddings - padding_idx - 1 (8192 for bge-m3).
#pragma once

#include "pdsd/tokenizer/wordpiece.h"
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pdsd::model {

struct BertEmbedOptions {
    std::string dtype = "fp32";      // compute dtype: fp32 | bf16 (weights converted once) | auto:
                                     // bf16 where the CPU has AVX512-BF16 or AMX-BF16, else fp32
    size_t max_length = 0;           // tokens incl. [CLS]/[SEP]; 0: min(tokenizer model_max_length,
                                     // max_position_embeddings)
    size_t max_batch = 256;          // sequences per forward
    size_t max_batch_tokens = 16384; // tokens per forward (packed: real tokens; padded: batch x longest)
    bool packed = true;              // false: classic padded batches with an attention mask
    bool fused_linear = true;        // oneDNN linear with weights pre-packed at load and bias, GELU
                                     // and the residual add fused into the matmul (when this
                                     // libtorch has oneDNN); false: at::linear + at::gelu + add
    bool normalize = true;           // false: embed/embed_ids return the raw last-layer [CLS] hidden
                                     // state (cross-encoder heads, kb/reranker.h), not L2-normalised
};

struct BertEmbedStats {
    size_t texts = 0, tokens = 0, batches = 0, padded_tokens = 0;
    size_t truncated = 0;            // texts longer than max_length (cut for embedding)
};

class BertEmbedder {
public:
    // Throws IoError/ConfigError/FormatError naming the file or tensor at fault.
    static std::unique_ptr<BertEmbedder> load(const std::string& model_dir, const BertEmbedOptions& options = {});
    virtual ~BertEmbedder() = default;

    // One L2-normalised vector of hidden_size() floats per text. Texts are tokenized,
    // truncated to max_length(), sorted by length and run in batches of packed
    // sequences: linear layers see only real tokens, attention runs per sequence, so
    // there is no padding and no mask.
    virtual std::vector<std::vector<float>> embed(const std::vector<std::string>& texts) = 0;
    // Same, from token ids that already hold [CLS] ... [SEP] (at most max_length() each).
    virtual std::vector<std::vector<float>> embed_ids(const std::vector<std::vector<int32_t>>& ids) = 0;

    // Raw forward for tests: `ids` and `mask` are [batch, seq] row-major (mask 1 = token,
    // 0 = padding). Returns last_hidden_state [batch, seq, hidden] and, in `cls`,
    // the L2-normalised [CLS] vectors [batch, hidden], both fp32.
    virtual std::vector<float> forward(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask, int64_t batch,
                                       int64_t seq, std::vector<float>* cls) = 0;

    virtual int64_t hidden_size() const = 0;
    // The compute dtype in use: "fp32" or "bf16" ("auto" resolved).
    virtual std::string dtype() const = 0;
    virtual size_t max_length() const = 0;
    // nullptr when the folder has no vocab.txt/tokenizer.json (then only embed_ids and
    // forward work; embed throws ConfigError).
    virtual const tokenizer::WordPieceTokenizer* tokenizer() const = 0;
    // The XLM-R tokenizer (nullptr for BERT models, or without sentencepiece.bpe.model).
    virtual const tokenizer::XlmrTokenizer* xlmr_tokenizer() const = 0;
    // Counters since load (what the last embed() calls cost).
    virtual const BertEmbedStats& stats() const = 0;
};

}  // namespace pdsd::model
