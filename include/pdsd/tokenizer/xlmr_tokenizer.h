// XLM-RoBERTa tokenizer (bge-m3, xlm-roberta-*, multilingual-e5-*), torch-free.
//
// The folder's `sentencepiece.bpe.model` (despite the name a unigram model in bge-m3 and
// XLM-R) is run by the sentencepiece C++ library; its ids are mapped the way fairseq
// and Hugging Face `XLMRobertaTokenizer` do:
//   <s>=0, <pad>=1, </s>=2, <unk>=3, spm piece i (i >= 3) -> i + 1 (spm's own <unk>,
//   id 0, -> 3), <mask> = spm pieces + 1 (the last id; vocab = spm pieces + 2).
// Text -> <s> pieces </s>. The special tokens <s> </s> <pad> <unk> <mask> written in the
// raw text are kept whole (as HF's added tokens; <mask> also eats the whitespace on its
// left, lstrip); the text between them is encoded segment by segment.
// Checked id for id against HF's fast XLMRobertaTokenizer (tokenizer.json converted from
// the same spm model) by tests/model/test_xlmr.cpp (golden) and scripts/oracle/xlmr_diff.py.
// A folder with only tokenizer.json is refused (ConfigError): the Unigram model of
// tokenizer.json is not implemented here.
#pragma once

#include "pdsd/tokenizer/wordpiece.h"   // WordPieceEncoding: ids + full length

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pdsd::tokenizer {

using XlmrEncoding = WordPieceEncoding;

class XlmrTokenizer {
public:
    static constexpr int32_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3;

    // A model folder holding sentencepiece.bpe.model (+ tokenizer_config.json for
    // model_max_length), or the .model file itself. Throws IoError / ConfigError /
    // FormatError naming the file.
    static XlmrTokenizer load(const std::string& dir_or_file);
    XlmrTokenizer(XlmrTokenizer&&) noexcept;
    XlmrTokenizer& operator=(XlmrTokenizer&&) noexcept;
    ~XlmrTokenizer();

    // Ids without <s> </s> (HF `encode(text, add_special_tokens=False)`).
    std::vector<int32_t> encode_plain(std::string_view text) const;
    // <s> ids </s>, the content truncated so that the whole is at most max_length ids
    // (HF `encode(text, truncation=True, max_length=...)`); 0: model_max_length() (0 there
    // too: no truncation). max_length must be >= 2.
    XlmrEncoding encode(std::string_view text, size_t max_length = 0) const;
    // The pieces of `text` as strings ("▁" marks a word start), no specials.
    std::vector<std::string> tokenize(std::string_view text) const;

    size_t vocab_size() const;            // spm pieces + 2
    int32_t mask_id() const { return static_cast<int32_t>(vocab_size()) - 1; }
    size_t model_max_length() const { return model_max_length_; }

private:
    XlmrTokenizer() = default;
    struct Impl;
    std::unique_ptr<Impl> impl_;
    size_t model_max_length_ = 512;
};

// True when `dir` has what XlmrTokenizer::load needs (sentencepiece.bpe.model).
bool has_xlmr_tokenizer(const std::string& dir);
// True when `dir`/config.json describes a RoBERTa-style encoder: model_type "xlm-roberta"
// or "roberta", or (without model_type) an XLMRoberta* / Roberta* architecture. Such
// folders use this tokenizer and RoBERTa position ids (model/bert.h). False when there is
// no readable config.json.
bool is_xlm_roberta_config(const std::string& dir);

}  // namespace pdsd::tokenizer
