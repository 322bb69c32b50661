// Byte-level BPE tokenizer compatible with Hugging Face `tokenizers` for Qwen2/Qwen2.5
// (tokenizer.json, or vocab.json + merges.txt + tokenizer_config.json).
//
// encode(): added/special tokens are matched in the raw text first; every other span
// is NFC-normalised, split with the Qwen pre-tokenizer regex, mapped through the GPT-2
// byte-to-unicode table and merged by rank. Same ids as
// `tokenizer.encode(text, add_special_tokens=False)` in HF tokenizers. Input that is not
// valid UTF-8 is first repaired like Python's errors="replace" (each maximal ill-formed
// subpart becomes U+FFFD), then encoded; HF only accepts valid strings.
// Thread-safe: encode/decode may run concurrently on one Tokenizer (each thread keeps
// its own bounded word cache).
// decode(): token bytes concatenated; invalid UTF-8 replaced by U+FFFD like
// `bytes.decode("utf-8", errors="replace")`. Ids outside the vocab are skipped, as
// tokenizers does.
//
// Torch-free (level 2: may include core and data only).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pdsd::tokenizer {

using TokenId = int32_t;

class Tokenizer {
public:
    // `path` is a folder (tokenizer.json, else vocab.json + merges.txt) or a tokenizer.json.
    // vocab.json + merges.txt get the Qwen2 normalizer and pre-tokenizer (NFC + the Qwen
    // split regex), as transformers' Qwen2Tokenizer does, and added tokens from
    // tokenizer_config.json's `added_tokens_decoder` when that file exists.
    // Throws IoError / FormatError naming the file.
    static Tokenizer load(const std::string& path);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    std::vector<TokenId> encode(std::string_view text) const;
    // Many texts at once on `threads` threads (0 = all cores); same result as encode each.
    std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts, int threads = 0) const;

    std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const;
    // Raw bytes of one token (may be part of a UTF-8 sequence): for streaming output.
    std::string token_bytes(TokenId id) const;

    std::optional<TokenId> token_to_id(std::string_view token) const;  // vocab or added token
    std::string id_to_token(TokenId id) const;                          // "" when out of range
    bool is_special(TokenId id) const;                                  // added token with special=true
    int64_t vocab_size() const;                                         // largest id + 1

    // The vocab (byte-level) spelling of raw bytes: each byte as its GPT-2
    // bytes_to_unicode() character ("\xC4\xA0" for a space, i.e. "Ġ").
    static std::string vocab_string(std::string_view bytes);

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Longest prefix of `bytes` that ends on a UTF-8 character boundary; streaming
// decoders emit that and keep the rest for the next token.
size_t complete_utf8_prefix(std::string_view bytes);

}  // namespace pdsd::tokenizer
