// Byte-level BPE (Qwen2 / GPT-2 style), compatible with HF tokenizers' tokenizer.json.
//
// Encoding pipeline (same order as tokenizers' AddedVocabulary + Tokenizer::encode):
//   1. ill-formed UTF-8 input is repaired first (each maximal ill-formed subpart -> U+FFFD;
//      HF's Rust API only accepts valid str, Python callers would have failed to decode);
//   2. added tokens with normalized=false are matched in the raw text (leftmost-longest);
//   3. each remaining span is NFC-normalised, then added tokens with normalized=true are
//      matched in it;
//   4. the rest is split by the Qwen regex (unicode.h), every piece's bytes map to the
//      ids of their GPT-2 byte characters, and pairs are merged by rank (lowest first,
//      leftmost on ties: tokenizers' BinaryHeap order).
#include "pdsd/tokenizer/tokenizer.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace pdsd::tokenizer {

namespace fs = std::filesystem;

namespace {

// The pre-tokenizer regex of Qwen2/Qwen2.5 tokenizer.json; the only Split pattern supported.
constexpr const char* kQwenPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// GPT-2 bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68
// bytes to U+0100.. in byte order.
struct ByteMap {
    char32_t byte_to_cp[256];
    int16_t cp_to_byte[324];  // code points < 0x144; -1 when not a byte character
    ByteMap() {
        std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t(-1));
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            byte_to_cp[b] = printable ? char32_t(b) : char32_t(256 + n++);
            cp_to_byte[byte_to_cp[b]] = int16_t(b);
        }
    }
};
const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Bytes of a vocab string as tokenizers' ByteLevel decoder yields them: every character
// mapped back through the GPT-2 table, or — when one is not a byte character — the
// string's own UTF-8.
std::string byte_level_decode(const std::string& token) {
    if (!is_valid_utf8(token)) return token;
    const auto& m = byte_map();
    std::string out;
    out.reserve(token.size());
    const auto* s = reinterpret_cast<const unsigned char*>(token.data());
    for (size_t i = 0; i < token.size();) {
        char32_t cp;
        i += detail::decode_cp(s + i, cp);
        if (cp >= 324 || m.cp_to_byte[cp] < 0) return token;
        out += char(m.cp_to_byte[cp]);
    }
    return out;
}

std::string byte_level_encode(std::string_view bytes) {
    const auto& m = byte_map();
    std::string out;
    for (unsigned char b : bytes) append_utf8(out, m.byte_to_cp[b]);
    return out;
}

inline uint64_t mix64(uint64_t h) {
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ULL;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ULL;
    h ^= h >> 32;
    return h;
}

uint64_t hash_bytes(const unsigned char* p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h = mix64(h);
    return h ? h : 1;
}

// (left id, right id) -> (rank, merged id); open addressing, linear probing.
class PairTable {
public:
    struct Hit {
        uint32_t rank;
        TokenId id;
    };
    void reserve(size_t count) {
        size_t cap = 1024;
        while (cap < count * 2) cap <<= 1;
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
    }
    // Later duplicates overwrite earlier ones, as when tokenizers collects its HashMap.
    void insert(TokenId a, TokenId b, uint32_t rank, TokenId id) {
        uint64_t key = pack(a, b);
        for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
            if (slots_[i].key == kEmpty || slots_[i].key == key) {
                slots_[i] = Slot{key, rank, id};
                return;
            }
        }
    }
    // rank UINT32_MAX when (a, b) is not a merge.
    Hit find(TokenId a, TokenId b) const {
        uint64_t key = pack(a, b);
        for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
            const Slot& s = slots_[i];
            if (s.key == key) return Hit{s.rank, s.id};
            if (s.key == kEmpty) return Hit{UINT32_MAX, -1};
        }
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);
    static uint64_t pack(TokenId a, TokenId b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    struct Slot {
        uint64_t key = kEmpty;
        uint32_t rank = 0;
        TokenId id = -1;
    };
    std::vector<Slot> slots_;
    size_t mask_ = 0;
};

struct AddedToken {
    std::string content;
    TokenId id = -1;
    bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Rust char::is_whitespace (Unicode White_Space).
bool ws_cp(char32_t cp) { return (detail::cp_class(cp) & detail::kWS) != 0; }
// A "word" character for single_word: Rust regex's Unicode \w, which tokenizers uses
// (Alphabetic, marks, decimal digits, connector punctuation, ZWNJ/ZWJ). Alphabetic is
// taken as letters + Nl + the enclosed letters that Other_Alphabetic adds.
bool word_cp(char32_t cp) {
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
        case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) ||
                   (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
                   (cp >= 0x1F170 && cp <= 0x1F189);
    }
}

// Last code point of valid UTF-8 `s` (non-empty).
char32_t last_cp(std::string_view s) {
    size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    char32_t cp;
    detail::decode_cp(reinterpret_cast<const unsigned char*>(s.data()) + i, cp);
    return cp;
}

// Finds added tokens in text: leftmost-longest, non-overlapping (tokenizers builds an
// Aho-Corasick automaton with MatchKind::LeftmostLongest), then applies the tokens'
// single_word / lstrip / rstrip flags the way tokenizers' AddedVocabulary::find_matches does.
class AddedMatcher {
public:
    struct Split {
        size_t begin, end;  // bytes
        int token;          // index into tokens, or -1 for plain text
    };
    // normalized=false tokens match their content in the raw text; normalized=true ones
    // match the NFC of their content in normalised text (tokenizers normalises the
    // patterns with the tokenizer's normalizer).
    void build(const std::vector<AddedToken>* tokens, bool normalized, bool nfc_patterns) {
        tokens_ = tokens;
        patterns_.assign(tokens->size(), std::string());
        for (auto& v : by_first_) v.clear();
        for (size_t k = 0; k < tokens->size(); ++k) {
            const auto& t = (*tokens)[k];
            if (t.normalized != normalized || t.content.empty()) continue;
            patterns_[k] = normalized && nfc_patterns ? nfc(t.content) : t.content;
            if (patterns_[k].empty()) continue;
            by_first_[static_cast<unsigned char>(patterns_[k][0])].push_back(static_cast<int>(k));
            any_ = true;
        }
        for (auto& v : by_first_) {
            std::stable_sort(v.begin(), v.end(), [&](int a, int b) { return patterns_[a].size() > patterns_[b].size(); });
        }
    }
    bool empty() const { return !any_; }

    // Appends the splits of `text` (plain spans and added tokens, in order) to `out`.
    void split(std::string_view text, std::vector<Split>& out) const {
        size_t start_offset = 0, i = 0, n = text.size();
        while (i < n) {
            const auto& cands = by_first_[static_cast<unsigned char>(text[i])];
            int hit = -1;
            for (int k : cands) {
                const auto& c = patterns_[size_t(k)];
                if (c.size() <= n - i && std::memcmp(text.data() + i, c.data(), c.size()) == 0) {
                    hit = k;
                    break;
                }
            }
            if (hit < 0) {
                ++i;
                continue;
            }
            const AddedToken& t = (*tokens_)[hit];
            size_t start = i, stop = i + patterns_[size_t(hit)].size();
            i = stop;  // the automaton resumes after the raw match
            if (t.single_word) {
                bool start_space = start == 0 || !word_cp(last_cp(text.substr(0, start)));
                bool stop_space = true;
                if (stop < n) {
                    char32_t cp;
                    detail::decode_cp(reinterpret_cast<const unsigned char*>(text.data()) + stop, cp);
                    stop_space = !word_cp(cp);
                }
                if (!start_space || !stop_space) continue;
            }
            if (t.lstrip) {
                size_t s = start;
                while (s > 0) {
                    size_t b = s - 1;
                    while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
                    char32_t cp;
                    detail::decode_cp(reinterpret_cast<const unsigned char*>(text.data()) + b, cp);
                    if (!ws_cp(cp)) break;
                    s = b;
                }
                start = std::max(s, start_offset);
            }
            if (t.rstrip) {
                while (stop < n) {
                    char32_t cp;
                    size_t len = detail::decode_cp(reinterpret_cast<const unsigned char*>(text.data()) + stop, cp);
                    if (!ws_cp(cp)) break;
                    stop += len;
                }
            }
            if (start_offset < start) out.push_back({start_offset, start, -1});
            out.push_back({start, stop, hit});
            start_offset = stop;
            i = std::max(i, stop);
        }
        if (start_offset < n) out.push_back({start_offset, n, -1});
    }

private:
    const std::vector<AddedToken>* tokens_ = nullptr;
    std::vector<std::string> patterns_;  // per token index; "" when not in this matcher
    std::vector<int> by_first_[256];
    bool any_ = false;
};

// Per-thread cache of pre-token bytes -> ids. Bounded: cleared when full. Owned by one
// Tokenizer at a time (instance id); another tokenizer used on the thread resets it.
class WordCache {
public:
    static constexpr size_t kSlots = size_t(1) << 17;
    static constexpr size_t kMaxWords = kSlots / 2;
    static constexpr size_t kMaxKeyBytes = 128;

    void own(uint64_t owner) {
        if (owner_ == owner) return;
        owner_ = owner;
        clear();
    }
    const TokenId* find(uint64_t h, const unsigned char* p, size_t n, size_t& count) const {
        if (slots_.empty()) return nullptr;
        for (size_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
            const Slot& s = slots_[i];
            if (s.hash == 0) return nullptr;
            if (s.hash == h && s.key_len == n && std::memcmp(keys_.data() + s.key_off, p, n) == 0) {
                count = s.val_len;
                return vals_.data() + s.val_off;
            }
        }
    }
    void insert(uint64_t h, const unsigned char* p, size_t n, const TokenId* ids, size_t count) {
        if (n > kMaxKeyBytes) return;
        if (slots_.empty() || words_ >= kMaxWords) clear();
        size_t i = h & (kSlots - 1);
        while (slots_[i].hash != 0) i = (i + 1) & (kSlots - 1);
        slots_[i] = Slot{h, uint32_t(keys_.size()), uint32_t(n), uint32_t(vals_.size()), uint32_t(count)};
        keys_.append(reinterpret_cast<const char*>(p), n);
        vals_.insert(vals_.end(), ids, ids + count);
        ++words_;
    }

private:
    struct Slot {
        uint64_t hash = 0;
        uint32_t key_off = 0, key_len = 0, val_off = 0, val_len = 0;
    };
    void clear() {
        slots_.assign(kSlots, Slot{});
        keys_.clear();
        vals_.clear();
        words_ = 0;
    }
    uint64_t owner_ = 0;
    std::vector<Slot> slots_;
    std::string keys_;
    std::vector<TokenId> vals_;
    size_t words_ = 0;
};

thread_local WordCache tl_cache;

// Scratch buffers of the merge loop, reused across calls on a thread.
struct BpeScratch {
    std::vector<TokenId> ids;
    std::vector<uint32_t> ranks;
    std::vector<TokenId> merged;
    struct Sym {
        TokenId id;
        int32_t prev, next;
    };
    std::vector<Sym> syms;
    std::vector<uint64_t> heap;
    std::vector<AddedMatcher::Split> splits, splits2;  // Impl::encode / Impl::encode_span
};
thread_local BpeScratch tl_scratch;

std::atomic<uint64_t> g_instance_counter{0};

}  // namespace

struct Tokenizer::Impl {
    uint64_t instance_id = ++g_instance_counter;
    std::string source;                           // file(s) it was loaded from, for errors
    std::vector<std::string> tokens;              // id -> vocab string ("" for unused ids)
    std::vector<std::string> token_bytes;         // id -> decoded bytes
    std::vector<uint8_t> special;                 // id -> added token with special=true
    std::unordered_map<std::string, TokenId> token_to_id;  // vocab and added strings
    std::unordered_map<std::string, TokenId> bytes_to_id;  // only for ignore_merges
    TokenId byte_id[256] = {};
    PairTable merges;
    std::vector<AddedToken> added;
    AddedMatcher raw_matcher, normalized_matcher;
    bool nfc = true;
    bool ignore_merges = false;

    static std::unique_ptr<Impl> load_tokenizer_json(const std::string& path);
    static std::unique_ptr<Impl> load_vocab_merges(const std::string& dir);

    void set_token(TokenId id, const std::string& s) {
        if (id < 0) throw FormatError(ErrorInfo{source}.at("token '" + s + "'").msg("negative token id"));
        if (size_t(id) >= tokens.size()) tokens.resize(size_t(id) + 1);
        tokens[size_t(id)] = s;
    }

    // After vocab, merges and added tokens are in: byte table, decode bytes, matchers.
    void finish() {
        const auto& m = byte_map();
        for (int b = 0; b < 256; ++b) {
            std::string s;
            append_utf8(s, m.byte_to_cp[b]);
            auto it = token_to_id.find(s);
            if (it == token_to_id.end()) {
                throw FormatError(ErrorInfo{source}.at("model.vocab")
                                      .msg("byte-level vocabulary lacks the token of byte " + std::to_string(b))
                                      .expected("all 256 GPT-2 byte characters in the vocab")
                                      .hint("only byte-level BPE tokenizers (GPT-2, Qwen) are supported"));
            }
            byte_id[b] = it->second;
        }
        for (const auto& t : added) {
            set_token(t.id, t.content);
            token_to_id[t.content] = t.id;
        }
        token_bytes.assign(tokens.size(), std::string());
        for (size_t id = 0; id < tokens.size(); ++id) token_bytes[id] = byte_level_decode(tokens[id]);
        special.assign(tokens.size(), 0);
        for (const auto& t : added) {
            if (t.special) special[size_t(t.id)] = 1;
        }
        if (ignore_merges) {
            for (size_t id = 0; id < tokens.size(); ++id) {
                if (!tokens[id].empty()) bytes_to_id.emplace(token_bytes[id], TokenId(id));
            }
        }
        raw_matcher.build(&added, false, nfc);
        normalized_matcher.build(&added, true, nfc);
    }

    // `where()` names the merge in an error; it is only called on failure (building a string
    // per merge cost ~10% of loading a 151k-merge tokenizer).
    template <typename Where>
    void add_merge(std::string_view a, std::string_view b, uint32_t rank, const Where& where) {
        // One reused key buffer: unordered_map<std::string> lookups need a std::string in C++17.
        thread_local std::string key;
        auto lookup = [&](std::string_view x, std::string_view y) {
            key.assign(x.data(), x.size());
            key.append(y.data(), y.size());
            auto it = token_to_id.find(key);
            return it == token_to_id.end() ? TokenId(-1) : it->second;
        };
        TokenId ia = lookup(a, {}), ib = lookup(b, {}), ic = lookup(a, b);
        if (ia < 0 || ib < 0 || ic < 0) {
            throw FormatError(ErrorInfo{source}.at(where())
                                  .msg("merge '" + std::string(a) + " " + std::string(b) + "' uses a token that is not in the vocab")
                                  .hint("vocab and merges must come from the same tokenizer"));
        }
        merges.insert(ia, ib, rank, ic);
    }

    // BPE of one pre-token's bytes; appends ids to out.
    void bpe(const unsigned char* p, size_t n, std::vector<TokenId>& out) const {
        BpeScratch& sc = tl_scratch;
        if (n > size_t(INT32_MAX)) {
            throw DataError(ErrorInfo{}.msg("a single pre-token longer than 2 GiB").found(std::to_string(n) + " bytes")
                                .hint("split the text into lines or documents first"));
        }
        if (n <= 48) {
            // Short words: arrays, rescanned for the lowest rank (leftmost on ties).
            auto& ids = sc.ids;
            auto& ranks = sc.ranks;
            auto& merged = sc.merged;
            ids.resize(n);
            ranks.resize(n);
            merged.resize(n);
            for (size_t k = 0; k < n; ++k) ids[k] = byte_id[p[k]];
            size_t m = n;
            for (size_t k = 0; k + 1 < m; ++k) {
                auto h = merges.find(ids[k], ids[k + 1]);
                ranks[k] = h.rank;
                merged[k] = h.id;
            }
            while (m > 1) {
                size_t best = 0;
                uint32_t best_rank = ranks[0];
                for (size_t k = 1; k + 1 < m; ++k) {
                    if (ranks[k] < best_rank) {
                        best_rank = ranks[k];
                        best = k;
                    }
                }
                if (best_rank == UINT32_MAX) break;
                ids[best] = merged[best];
                // Remove element best+1.
                for (size_t k = best + 1; k + 1 < m; ++k) {
                    ids[k] = ids[k + 1];
                    ranks[k] = ranks[k + 1];
                    merged[k] = merged[k + 1];
                }
                --m;
                if (best > 0) {
                    auto h = merges.find(ids[best - 1], ids[best]);
                    ranks[best - 1] = h.rank;
                    merged[best - 1] = h.id;
                }
                if (best + 1 < m) {
                    auto h = merges.find(ids[best], ids[best + 1]);
                    ranks[best] = h.rank;
                    merged[best] = h.id;
                }
            }
            out.insert(out.end(), ids.begin(), ids.begin() + long(m));
            return;
        }
        // Long words: linked symbols + a min-heap of (rank, position), stale entries skipped.
        auto& syms = sc.syms;
        auto& heap = sc.heap;
        syms.resize(n);
        heap.clear();
        for (size_t k = 0; k < n; ++k) syms[k] = {byte_id[p[k]], int32_t(k) - 1, k + 1 < n ? int32_t(k + 1) : -1};
        auto push = [&](int32_t pos) {
            int32_t nx = syms[size_t(pos)].next;
            if (nx < 0) return;
            auto h = merges.find(syms[size_t(pos)].id, syms[size_t(nx)].id);
            if (h.rank == UINT32_MAX) return;
            heap.push_back((uint64_t(h.rank) << 32) | uint32_t(pos));
            std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
        };
        for (size_t k = 0; k + 1 < n; ++k) push(int32_t(k));
        while (!heap.empty()) {
            std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
            uint64_t top = heap.back();
            heap.pop_back();
            auto rank = uint32_t(top >> 32);
            auto pos = int32_t(uint32_t(top));
            auto& s = syms[size_t(pos)];
            if (s.id < 0 || s.next < 0) continue;  // merged away, or last symbol now
            auto& r = syms[size_t(s.next)];
            auto h = merges.find(s.id, r.id);
            if (h.rank != rank) continue;  // the pair at pos changed since the push
            s.id = h.id;
            int32_t gone = s.next;
            s.next = r.next;
            if (r.next >= 0) syms[size_t(r.next)].prev = pos;
            syms[size_t(gone)].id = -1;
            if (s.prev >= 0) push(s.prev);
            push(pos);
        }
        for (int32_t k = 0; k >= 0; k = syms[size_t(k)].next) out.push_back(syms[size_t(k)].id);
    }

    void encode_word(const unsigned char* p, size_t n, std::vector<TokenId>& out) const {
        if (n == 1) {
            out.push_back(byte_id[p[0]]);
            return;
        }
        if (ignore_merges) {
            auto it = bytes_to_id.find(std::string(reinterpret_cast<const char*>(p), n));
            if (it != bytes_to_id.end()) {
                out.push_back(it->second);
                return;
            }
        }
        WordCache& cache = tl_cache;
        uint64_t h = 0;
        if (n <= WordCache::kMaxKeyBytes) {
            cache.own(instance_id);
            h = hash_bytes(p, n);
            size_t count = 0;
            if (const TokenId* ids = cache.find(h, p, n, count)) {
                out.insert(out.end(), ids, ids + count);
                return;
            }
        }
        size_t before = out.size();
        bpe(p, n, out);
        if (n <= WordCache::kMaxKeyBytes) cache.insert(h, p, n, out.data() + before, out.size() - before);
    }

    // Pre-tokenize + BPE of normalised text without added tokens.
    void encode_words(std::string_view text, std::vector<TokenId>& out) const {
        const auto* base = reinterpret_cast<const unsigned char*>(text.data());
        qwen_split(text, [&](size_t off, size_t len) { encode_word(base + off, len, out); });
    }

    // A span between raw-matched added tokens: normalise, match normalized added tokens, encode.
    void encode_span(std::string_view span, std::vector<TokenId>& out) const {
        std::string normalized;
        if (nfc && !is_nfc_quick(span)) {
            normalized = pdsd::tokenizer::nfc(span);
            span = normalized;
        }
        if (normalized_matcher.empty()) {
            encode_words(span, out);
            return;
        }
        auto& splits = tl_scratch.splits2;  // encode_span does not nest: reuse per thread
        splits.clear();
        normalized_matcher.split(span, splits);
        for (const auto& s : splits) {
            if (s.token >= 0) {
                out.push_back(added[size_t(s.token)].id);
            } else {
                encode_words(span.substr(s.begin, s.end - s.begin), out);
            }
        }
    }

    void encode(std::string_view text, std::vector<TokenId>& out) const {
        std::string repaired;
        if (!is_valid_utf8(text)) {
            repaired = utf8_replace_invalid(text);
            text = repaired;
        }
        if (raw_matcher.empty()) {
            encode_span(text, out);
            return;
        }
        auto& splits = tl_scratch.splits;  // encode does not nest: reuse per thread
        splits.clear();
        raw_matcher.split(text, splits);
        for (const auto& s : splits) {
            if (s.token >= 0) {
                out.push_back(added[size_t(s.token)].id);
            } else {
                encode_span(text.substr(s.begin, s.end - s.begin), out);
            }
        }
    }
};

namespace {

AddedToken parse_added(const nlohmann::json& j, const std::string& source, const std::string& where) {
    AddedToken t;
    try {
        t.content = j.at("content").get<std::string>();
        if (j.contains("id")) t.id = j.at("id").get<TokenId>();
        t.special = j.value("special", false);
        t.lstrip = j.value("lstrip", false);
        t.rstrip = j.value("rstrip", false);
        t.single_word = j.value("single_word", false);
        t.normalized = j.value("normalized", !t.special);
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(ErrorInfo{source}.at(where).msg("malformed added token").found(e.what()));
    }
    if (t.content.empty() || !is_valid_utf8(t.content)) {
        throw FormatError(ErrorInfo{source}.at(where).msg("added token content must be non-empty UTF-8"));
    }
    return t;
}

void check_pre_tokenizer(const nlohmann::json& pt, const std::string& source) {
    auto unsupported = [&](const std::string& found) {
        return FormatError(ErrorInfo{source}.at("pre_tokenizer")
                               .msg("unsupported pre-tokenizer")
                               .expected("Sequence[Split(Qwen2 regex, Isolated), ByteLevel(use_regex=false)]")
                               .found(found)
                               .hint("pdsd implements the Qwen2/Qwen2.5 byte-level BPE tokenizer only"));
    };
    if (!pt.is_object() || pt.value("type", "") != "Sequence" || !pt.contains("pretokenizers")) {
        throw unsupported(pt.dump().substr(0, 200));
    }
    const auto& seq = pt["pretokenizers"];
    if (!seq.is_array() || seq.size() != 2) throw unsupported(seq.dump().substr(0, 200));
    const auto& split = seq[0];
    const auto& bl = seq[1];
    std::string pattern;
    if (split.value("type", "") == "Split" && split.contains("pattern") && split["pattern"].is_object() &&
        split["pattern"].contains("Regex")) {
        pattern = split["pattern"]["Regex"].get<std::string>();
    }
    if (pattern != kQwenPattern || split.value("behavior", "") != "Isolated" || split.value("invert", false)) {
        throw unsupported(split.dump().substr(0, 300));
    }
    if (bl.value("type", "") != "ByteLevel" || bl.value("add_prefix_space", false) || bl.value("use_regex", true)) {
        throw unsupported(bl.dump().substr(0, 300));
    }
}

// tokenizer.json normalizer: null, NFC, or a Sequence of just NFC. Returns whether NFC applies.
bool parse_normalizer(const nlohmann::json& n, const std::string& source) {
    if (n.is_null()) return false;
    std::string type = n.value("type", "");
    if (type == "NFC") return true;
    if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
        bool any = false;
        for (const auto& x : n["normalizers"]) {
            if (x.value("type", "") != "NFC") {
                throw FormatError(ErrorInfo{source}.at("normalizer").msg("unsupported normalizer")
                                      .expected("NFC").found(x.dump().substr(0, 200)));
            }
            any = true;
        }
        return any;
    }
    throw FormatError(ErrorInfo{source}.at("normalizer").msg("unsupported normalizer").expected("NFC or null")
                          .found(n.dump().substr(0, 200)));
}

}  // namespace

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::load_tokenizer_json(const std::string& path) {
    auto impl = std::make_unique<Tokenizer::Impl>();
    impl->source = path;
    auto t0 = std::chrono::steady_clock::now();
    // The vocab (151k entries) and merges (151k) are streamed out of the parser through its
    // callback instead of being built into the DOM (a std::map of 151k json values, walked
    // and freed again: ~2/3 of the load time); the small rest (normalizer, pre-tokenizer,
    // added tokens, model options) stays in the DOM. Depths are nlohmann's: keys of the root
    // object are at 1, of "model" at 2, vocab entries and merges at 3, [a, b] merge parts at 4.
    std::vector<std::pair<std::string, TokenId>> vocab_entries;
    std::vector<std::pair<std::string, std::string>> merge_entries;  // (a, b)
    bool bad_vocab_value = false, bad_merge = false;
    size_t bad_merge_index = 0;
    std::string top_key, model_key, vocab_key;
    vocab_entries.reserve(160000);
    merge_entries.reserve(160000);
    using PE = nlohmann::json::parse_event_t;
    auto callback = [&](int depth, PE event, nlohmann::json& parsed) -> bool {
        if (event == PE::key) {
            if (depth == 1) top_key = parsed.get<std::string>();
            else if (depth == 2) model_key = parsed.get<std::string>();
        }
        if (depth < 3 || top_key != "model") return true;
        if (model_key == "vocab" && depth == 3) {
            if (event == PE::key) {
                vocab_key = std::move(parsed.get_ref<std::string&>());
                return false;  // not stored in the DOM
            }
            if (event == PE::value) {
                if (parsed.is_number_integer()) vocab_entries.emplace_back(std::move(vocab_key), parsed.get<TokenId>());
                else bad_vocab_value = true;
                return false;
            }
            if (event == PE::object_end || event == PE::array_end) {  // a nested value: not an id
                bad_vocab_value = true;
                return false;
            }
            return true;
        }
        if (model_key == "merges") {
            if (depth == 3 && event == PE::value) {
                if (parsed.is_string()) {
                    const auto& m = parsed.get_ref<const std::string&>();
                    auto sp = m.find(' ');
                    if (sp == std::string::npos) {
                        if (!bad_merge) bad_merge_index = merge_entries.size();
                        bad_merge = true;
                    } else {
                        merge_entries.emplace_back(m.substr(0, sp), m.substr(sp + 1));
                    }
                } else {
                    if (!bad_merge) bad_merge_index = merge_entries.size();
                    bad_merge = true;
                }
                return false;
            }
            if (depth == 3 && event == PE::array_end) {  // ["a", "b"] form (tokenizers >= 0.20)
                if (parsed.size() == 2 && parsed[0].is_string() && parsed[1].is_string()) {
                    merge_entries.emplace_back(std::move(parsed[0].get_ref<std::string&>()),
                                               std::move(parsed[1].get_ref<std::string&>()));
                } else {
                    if (!bad_merge) bad_merge_index = merge_entries.size();
                    bad_merge = true;
                }
                return false;
            }
            if (depth == 3 && event == PE::object_end) {
                if (!bad_merge) bad_merge_index = merge_entries.size();
                bad_merge = true;
                return false;
            }
        }
        return true;
    };
    std::string text = read_file(path);
    if (find_json_limit_violation(text)) parse_json(text, path);   // throws the depth/size error with line/column
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), callback);
    } catch (const nlohmann::json::exception&) {
        j = parse_json(text, path);  // rethrows the syntax error with line/column (FormatError)
        throw FormatError(ErrorInfo{path}.msg("malformed tokenizer file"));
    }
    text.clear();
    text.shrink_to_fit();
    auto t1 = std::chrono::steady_clock::now();
    // Schema: a field of the wrong type makes nlohmann throw from .get<>/.value(); that is
    // the user's file, not a pdsd bug (exit 1, not 2).
    try {
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
        throw FormatError(ErrorInfo{path}.msg("not a tokenizers file").expected("an object with \"model\""));
    }
    const auto& model = j["model"];
    if (model.value("type", "BPE") != "BPE") {
        throw FormatError(ErrorInfo{path}.at("model.type").msg("unsupported model").expected("BPE")
                              .found(model.value("type", "")));
    }
    if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0) {
        throw FormatError(ErrorInfo{path}.at("model.dropout").msg("BPE dropout is not supported")
                              .hint("set it to null for inference"));
    }
    if (model.value("byte_fallback", false)) {
        throw FormatError(ErrorInfo{path}.at("model.byte_fallback").msg("byte_fallback is not supported"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty()) {
            throw FormatError(ErrorInfo{path}.at(std::string("model.") + key).msg("not supported by pdsd")
                                  .expected("empty or null"));
        }
    }
    impl->ignore_merges = model.value("ignore_merges", false);
    impl->nfc = parse_normalizer(j.value("normalizer", nlohmann::json()), path);
    check_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()), path);

    if (!model.contains("vocab") || !model["vocab"].is_object() || !model["vocab"].empty() || bad_vocab_value) {
        throw FormatError(ErrorInfo{path}.at("model.vocab").msg("expected an object token -> integer id"));
    }
    impl->token_to_id.reserve(vocab_entries.size() * 2);
    for (auto& [token, id] : vocab_entries) {
        impl->set_token(id, token);
        impl->token_to_id[std::move(token)] = id;
    }
    vocab_entries = {};
    if (!model.contains("merges") || !model["merges"].is_array() || !model["merges"].empty() || bad_merge) {
        throw FormatError(ErrorInfo{path}.at("model.merges[" + std::to_string(bad_merge_index) + "]")
                              .msg("malformed merge").expected("\"a b\" or [\"a\", \"b\"]"));
    }
    impl->merges.reserve(merge_entries.size());
    uint32_t rank = 0;
    for (const auto& [a, b] : merge_entries) {
        impl->add_merge(a, b, rank, [rank] { return "model.merges[" + std::to_string(rank) + "]"; });
        ++rank;
    }
    merge_entries = {};
    if (j.contains("added_tokens") && !j["added_tokens"].is_array() && !j["added_tokens"].is_null())
        throw FormatError(ErrorInfo{path}.at("added_tokens").msg("wrong type")
                              .expected("a list of {\"id\", \"content\", \"special\", ...}")
                              .found(std::string(j["added_tokens"].type_name()) + " " + j["added_tokens"].dump().substr(0, 40)));
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
        size_t k = 0;
        for (const auto& t : j["added_tokens"]) {
            AddedToken a = parse_added(t, path, "added_tokens[" + std::to_string(k++) + "]");
            if (a.id < 0) throw FormatError(ErrorInfo{path}.at("added_tokens").msg("added token without id"));
            impl->added.push_back(std::move(a));
        }
    }
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(ErrorInfo{path}.msg("malformed tokenizer file: a field has the wrong type").found(e.what())
                              .hint("compare with the model's original tokenizer.json"));
    }
    impl->finish();
    auto t2 = std::chrono::steady_clock::now();
    log::debug("tokenizer", log::cat(path, ": parsed in ", std::chrono::duration<double>(t1 - t0).count(), " s, built in ",
                                     std::chrono::duration<double>(t2 - t1).count(), " s"));
    return impl;
}

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::load_vocab_merges(const std::string& dir) {
    auto impl = std::make_unique<Tokenizer::Impl>();
    std::string vocab_path = (fs::path(dir) / "vocab.json").string();
    std::string merges_path = (fs::path(dir) / "merges.txt").string();
    impl->source = vocab_path;
    nlohmann::json vocab = read_json_file(vocab_path);
    if (!vocab.is_object()) throw FormatError(ErrorInfo{vocab_path}.msg("expected an object token -> id"));
    impl->token_to_id.reserve(vocab.size() * 2);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (!it.value().is_number_integer())
            throw FormatError(ErrorInfo{vocab_path}.at("\"" + it.key() + "\"").msg("wrong type").expected("an integer token id")
                                  .found(it.value().type_name()));
        auto id = it.value().get<TokenId>();
        impl->set_token(id, it.key());
        impl->token_to_id[it.key()] = id;
    }
    impl->source = merges_path;
    std::string text = read_file(merges_path);
    size_t pos = 0, line_no = 0;
    uint32_t rank = 0;
    impl->merges.reserve(text.size() / 8);
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string::npos) eol = text.size();
        std::string line = text.substr(pos, eol - pos);
        pos = eol + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
        auto sp = line.find(' ');
        auto where = [line_no] { return "line " + std::to_string(line_no); };
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
            throw FormatError(ErrorInfo{merges_path}.at(where()).msg("malformed merge").expected("\"a b\"").found(line));
        }
        impl->add_merge(std::string_view(line).substr(0, sp), std::string_view(line).substr(sp + 1), rank++, where);
    }
    // Added tokens: tokenizer_config.json's added_tokens_decoder, as transformers reads it.
    std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
    impl->source = config_path;
    if (fs::exists(config_path)) {
        nlohmann::json cfg = read_json_file(config_path);
        if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
            for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
                std::string where = "added_tokens_decoder." + it.key();
                AddedToken a = parse_added(it.value(), config_path, where);
                try {
                    a.id = static_cast<TokenId>(std::stol(it.key()));
                } catch (const std::exception&) {
                    throw FormatError(ErrorInfo{config_path}.at(where).msg("key is not a token id"));
                }
                impl->added.push_back(std::move(a));
            }
        }
    }
    std::sort(impl->added.begin(), impl->added.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
    impl->source = vocab_path;
    impl->finish();
    return impl;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
    fs::path p(path);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
        if (fs::exists(p / "tokenizer.json")) return Tokenizer(Impl::load_tokenizer_json((p / "tokenizer.json").string()));
        if (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt")) return Tokenizer(Impl::load_vocab_merges(path));
        throw IoError(ErrorInfo{path}.msg("no tokenizer found")
                          .expected("tokenizer.json, or vocab.json + merges.txt")
                          .hint("point --tokenizer at the model folder downloaded from the Hub"));
    }
    if (!fs::exists(p, ec)) {
        throw IoError(ErrorInfo{path}.msg("tokenizer path does not exist").hint("check the path"));
    }
    return Tokenizer(Impl::load_tokenizer_json(path));
}

std::vector<TokenId> Tokenizer::encode(std::string_view text) const {
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    impl_->encode(text, out);
    return out;
}

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int threads) const {
    std::vector<std::vector<TokenId>> out(texts.size());
    size_t nt = threads > 0 ? size_t(threads) : std::max<size_t>(1, std::thread::hardware_concurrency());
    nt = std::min(nt, texts.size());
    if (nt <= 1) {
        for (size_t k = 0; k < texts.size(); ++k) out[k] = encode(texts[k]);
        return out;
    }
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&] {
        try {
            constexpr size_t kChunk = 16;
            for (;;) {
                size_t begin = next.fetch_add(kChunk);
                if (begin >= texts.size()) break;
                size_t end = std::min(texts.size(), begin + kChunk);
                for (size_t k = begin; k < end; ++k) out[k] = encode(texts[k]);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = texts.size();
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt);
    for (size_t k = 0; k < nt; ++k) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
    return out;
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
    std::string bytes;
    for (TokenId id : ids) {
        if (id < 0 || size_t(id) >= impl_->tokens.size()) continue;  // unknown ids are skipped, as in tokenizers
        if (skip_special_tokens && impl_->special[size_t(id)]) continue;
        bytes += impl_->token_bytes[size_t(id)];
    }
    if (is_valid_utf8(bytes)) return bytes;
    return utf8_replace_invalid(bytes);
}

std::string Tokenizer::token_bytes(TokenId id) const {
    if (id < 0 || size_t(id) >= impl_->tokens.size()) return std::string();
    return impl_->token_bytes[size_t(id)];
}

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const {
    auto it = impl_->token_to_id.find(std::string(token));
    if (it == impl_->token_to_id.end()) return std::nullopt;
    return it->second;
}

std::string Tokenizer::id_to_token(TokenId id) const {
    if (id < 0 || size_t(id) >= impl_->tokens.size()) return std::string();
    return impl_->tokens[size_t(id)];
}

bool Tokenizer::is_special(TokenId id) const {
    return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[size_t(id)] != 0;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->tokens.size()); }

std::string Tokenizer::vocab_string(std::string_view bytes) { return byte_level_encode(bytes); }

}  // namespace pdsd::tokenizer
