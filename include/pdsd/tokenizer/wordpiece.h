// WordPiece tokenizer of BERT models (bge-*-zh, bert-base-chinese, ...), torch-free.
//
// Semantics are those of Hugging Face `BertTokenizer` (transformers 5: the `tokenizers`
// pipeline BertNormalizer -> BertPreTokenizer -> WordPiece -> [CLS] A [SEP]), checked
// id for id by scripts/oracle/wordpiece_diff.py:
//   1. special tokens ([PAD] [UNK] [CLS] [SEP] [MASK], and added special tokens of a
//      tokenizer.json) found verbatim in the raw text are kept whole (longest match);
//   2. clean text: drop U+0000, U+FFFD and control characters (categories Cc Cf Cs Co Cn
//      except \t \n \r); every White_Space character becomes ' ';
//   3. CJK ideographs (the BERT ranges) are surrounded by spaces: one token each;
//   4. strip accents (NFD, drop Mn) when strip_accents, or when it is unset and
//      do_lower_case; then lowercase (full mapping: U+0130 -> "i" U+0307);
//   5. split on White_Space and isolate punctuation (ASCII punctuation and P*);
//   6. WordPiece per word: greedy longest match, continuation pieces prefixed "##";
//      a word longer than max_input_chars_per_word code points, or one that cannot be
//      covered, becomes [UNK].
// Invalid UTF-8 is first repaired to U+FFFD (which step 2 then drops).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pdsd::tokenizer {

struct WordPieceOptions {
    bool do_lower_case = true;
    std::optional<bool> strip_accents;     // unset: follows do_lower_case
    bool tokenize_chinese_chars = true;
    bool clean_text = true;
    size_t max_input_chars_per_word = 100; // code points
    std::string continuing_prefix = "##";
    std::string unk_token = "[UNK]", cls_token = "[CLS]", sep_token = "[SEP]", pad_token = "[PAD]",
                mask_token = "[MASK]";
    size_t model_max_length = 512;          // tokenizer_config.json; 0 = none
};

// One encoded text: ids with [CLS] ... [SEP], truncated to the requested length.
struct WordPieceEncoding {
    std::vector<int32_t> ids;
    size_t full_length = 0;    // length with specials before truncation
    bool truncated() const { return full_length > ids.size(); }
};

class WordPieceTokenizer {
public:
    // `vocab[i]` is the token of id i (vocab.txt order). Throws ConfigError when the
    // unk/cls/sep tokens are missing from the vocabulary.
    WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options);

    // A model folder (or file): vocab.txt (+ tokenizer_config.json for do_lower_case,
    // strip_accents, tokenize_chinese_chars, model_max_length and the special tokens), or
    // tokenizer.json with a WordPiece model and BertNormalizer when there is no vocab.txt.
    static WordPieceTokenizer load(const std::string& dir_or_file);

    // Word pieces of `text`, no [CLS]/[SEP] (HF `tokenizer.tokenize`).
    std::vector<std::string> tokenize(std::string_view text) const;
    // Ids without specials (HF `encode(text, add_special_tokens=False)`).
    std::vector<int32_t> encode_plain(std::string_view text) const;
    // [CLS] ids [SEP], the content truncated so that the whole is at most `max_length`
    // ids (HF `encode(text, truncation=True, max_length=max_length)`); max_length 0:
    // options().model_max_length (0 there too: no truncation). max_length must be >= 2.
    WordPieceEncoding encode(std::string_view text, size_t max_length = 0) const;

    size_t vocab_size() const { return vocab_.size(); }
    const std::string& id_to_token(int32_t id) const;   // throws UsageError when out of range
    std::optional<int32_t> token_to_id(std::string_view token) const;
    int32_t unk_id() const { return unk_id_; }
    int32_t cls_id() const { return cls_id_; }
    int32_t sep_id() const { return sep_id_; }
    int32_t pad_id() const { return pad_id_; }
    const WordPieceOptions& options() const { return options_; }

    // The normalised, pre-tokenized words of `text` (steps 2-5), for tests.
    std::vector<std::string> pre_tokenize(std::string_view text) const;

    // Adds a special token matched verbatim in raw text (tokenizer.json added_tokens).
    void add_special_token(const std::string& token, int32_t id);

private:
    void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
    void word_pieces(std::string_view word, size_t n_chars, std::vector<int32_t>& out) const;

    std::vector<std::string> vocab_;
    std::unordered_map<std::string, int32_t> ids_;
    WordPieceOptions options_;
    bool strip_accents_ = true;
    int32_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0;
    std::vector<std::pair<std::string, int32_t>> specials_;   // longest first
};

// Reads vocab.txt: one token per line, id = line number ("\r\n" tolerated; a final empty
// line ignored). Throws IoError / DataError (duplicate tokens keep the last id, as HF).
std::vector<std::string> read_wordpiece_vocab(const std::string& path);

}  // namespace pdsd::tokenizer
