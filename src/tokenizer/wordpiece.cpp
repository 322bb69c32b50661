// WordPiece (BERT) tokenizer: see include/pdsd/tokenizer/wordpiece.h for the semantics.
#include "pdsd/tokenizer/wordpiece.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include <algorithm>
#include <filesystem>

namespace pdsd::tokenizer {

namespace fs = std::filesystem;

namespace {

void append_utf8(std::string& s, char32_t cp) {
    if (cp < 0x80) {
        s += static_cast<char>(cp);
    } else if (cp < 0x800) {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        s += static_cast<char>(0xE0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        s += static_cast<char>(0xF0 | (cp >> 18));
        s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// Unicode White_Space (what Rust's char::is_whitespace tests).
bool is_white_space(char32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// BertNormalizer's is_control: "other" categories except \t \n \r.
bool is_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    if (c < 0x20 || c == 0x7F) return true;
    if (c < 0x80) return false;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
        case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
        case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: return true;
        default: return false;
    }
}

// The CJK ranges of BERT's _is_chinese_char (Unified Ideographs, Extensions A-E,
// compatibility ideographs); Hangul, kana etc. are not in them.
bool is_chinese_char(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// BertPreTokenizer's punctuation: ASCII punctuation or a P* category.
bool is_punctuation(char32_t c) {
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
        case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
        case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO: return true;
        default: return false;
    }
}

bool is_mn(char32_t c) {
    return c >= 0x300 && utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN;
}

// Lowercase with Unicode's full mapping (Rust char::to_lowercase): the simple mapping
// except U+0130, whose lowercase is "i" + U+0307.
void push_lower(std::u32string& out, char32_t c) {
    if (c < 0x80) {
        out += (c >= 'A' && c <= 'Z') ? c + 32 : c;
    } else if (c == 0x130) {
        out += U'i';
        out += char32_t(0x307);
    } else {
        out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    }
}

std::optional<bool> json_bool(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) return std::nullopt;
    return it->get<bool>();
}

// A special token entry of tokenizer_config.json: "[UNK]" or {"content": "[UNK]", ...}.
std::optional<std::string> json_token(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    return std::nullopt;
}

}  // namespace

std::vector<std::string> read_wordpiece_vocab(const std::string& path) {
    std::string all = read_file(path);
    std::vector<std::string> vocab;
    size_t pos = 0;
    while (pos < all.size()) {
        size_t eol = all.find('\n', pos);
        if (eol == std::string::npos) eol = all.size();
        std::string tok = all.substr(pos, eol - pos);
        if (!tok.empty() && tok.back() == '\r') tok.pop_back();
        vocab.push_back(std::move(tok));
        pos = eol + 1;
    }
    if (vocab.empty()) throw DataError(ErrorInfo{path}.msg("empty vocabulary").expected("one token per line"));
    if (!is_valid_utf8(all)) throw DataError(ErrorInfo{path}.msg("vocab.txt is not valid UTF-8"));
    return vocab;
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
    ids_.reserve(vocab_.size() * 2);
    for (size_t i = 0; i < vocab_.size(); ++i) ids_[vocab_[i]] = static_cast<int32_t>(i);
    strip_accents_ = options_.strip_accents.value_or(options_.do_lower_case);
    auto need = [&](const std::string& t, const char* what) {
        auto it = ids_.find(t);
        if (it == ids_.end())
            throw ConfigError(ErrorInfo{}.at("WordPiece vocabulary").msg(std::string("no ") + what + " token")
                                  .expected(t).hint("vocab.txt must hold BERT's special tokens"));
        return it->second;
    };
    unk_id_ = need(options_.unk_token, "unknown");
    cls_id_ = need(options_.cls_token, "[CLS]");
    sep_id_ = need(options_.sep_token, "[SEP]");
    auto p = ids_.find(options_.pad_token);
    pad_id_ = p == ids_.end() ? 0 : p->second;
    // HF registers these five as special (added) tokens, matched in raw text.
    for (const auto* t : {&options_.pad_token, &options_.unk_token, &options_.cls_token, &options_.sep_token,
                          &options_.mask_token}) {
        auto it = ids_.find(*t);
        if (it != ids_.end()) add_special_token(*t, it->second);
    }
}

void WordPieceTokenizer::add_special_token(const std::string& token, int32_t id) {
    if (token.empty()) return;
    for (auto& s : specials_)
        if (s.first == token) { s.second = id; return; }
    specials_.emplace_back(token, id);
    std::stable_sort(specials_.begin(), specials_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

WordPieceTokenizer WordPieceTokenizer::load(const std::string& dir_or_file) {
    fs::path p(dir_or_file);
    fs::path dir = fs::is_directory(p) ? p : p.parent_path();
    fs::path vocab_txt = fs::is_directory(p) ? dir / "vocab.txt" : p;
    WordPieceOptions o;
    fs::path cfg = dir / "tokenizer_config.json";
    if (fs::exists(cfg)) {
        nlohmann::json j = read_json_file(cfg.string());
        if (auto v = json_bool(j, "do_lower_case")) o.do_lower_case = *v;
        o.strip_accents = json_bool(j, "strip_accents");
        if (auto v = json_bool(j, "tokenize_chinese_chars")) o.tokenize_chinese_chars = *v;
        if (auto v = json_token(j, "unk_token")) o.unk_token = *v;
        if (auto v = json_token(j, "cls_token")) o.cls_token = *v;
        if (auto v = json_token(j, "sep_token")) o.sep_token = *v;
        if (auto v = json_token(j, "pad_token")) o.pad_token = *v;
        if (auto v = json_token(j, "mask_token")) o.mask_token = *v;
        auto m = j.find("model_max_length");
        // HF writes 1e30 ("no limit") for models without one.
        if (m != j.end() && m->is_number()) {
            double v = m->get<double>();
            o.model_max_length = v > 0 && v < 1e9 ? static_cast<size_t>(v) : 0;
        }
    }
    if (fs::exists(vocab_txt) && vocab_txt.extension() != ".json")
        return WordPieceTokenizer(read_wordpiece_vocab(vocab_txt.string()), o);

    fs::path tj = fs::is_directory(p) ? dir / "tokenizer.json" : p;
    if (!fs::exists(tj))
        throw IoError(ErrorInfo{dir.string()}.msg("no WordPiece vocabulary").expected("vocab.txt or tokenizer.json")
                          .hint("point at the folder of a BERT/bge model"));
    nlohmann::json j = read_json_file(tj.string());
    const auto& model = j.at("model");
    if (model.value("type", "") != "WordPiece" || !model.contains("vocab") || !model["vocab"].is_object())
        throw ConfigError(ErrorInfo{tj.string()}.at("model.type").expected("WordPiece").found(model.value("type", "?")));
    std::vector<std::string> vocab;
    for (auto& [tok, id] : model["vocab"].items()) {
        int64_t i = id.get<int64_t>();
        if (i < 0 || i > 100000000) throw DataError(ErrorInfo{tj.string()}.at("model.vocab." + tok).msg("bad id"));
        if (static_cast<size_t>(i) >= vocab.size()) vocab.resize(static_cast<size_t>(i) + 1);
        vocab[static_cast<size_t>(i)] = tok;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) o.unk_token = model["unk_token"].get<std::string>();
    if (model.contains("continuing_subword_prefix") && model["continuing_subword_prefix"].is_string())
        o.continuing_prefix = model["continuing_subword_prefix"].get<std::string>();
    if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_integer())
        o.max_input_chars_per_word = model["max_input_chars_per_word"].get<size_t>();
    auto n = j.find("normalizer");
    if (n != j.end() && n->is_object() && n->value("type", "") == "BertNormalizer") {
        if (auto v = json_bool(*n, "lowercase")) o.do_lower_case = *v;
        o.strip_accents = json_bool(*n, "strip_accents");
        if (auto v = json_bool(*n, "handle_chinese_chars")) o.tokenize_chinese_chars = *v;
        if (auto v = json_bool(*n, "clean_text")) o.clean_text = *v;
    }
    WordPieceTokenizer t(std::move(vocab), o);
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
        for (auto& a : j["added_tokens"])
            if (a.value("special", false) && a.contains("content") && a.contains("id"))
                t.add_special_token(a["content"].get<std::string>(), a["id"].get<int32_t>());
    return t;
}

const std::string& WordPieceTokenizer::id_to_token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= vocab_.size())
        throw UsageError(ErrorInfo{}.at("token id").expected("0.." + std::to_string(vocab_.size() - 1)).found(std::to_string(id)));
    return vocab_[static_cast<size_t>(id)];
}

std::optional<int32_t> WordPieceTokenizer::token_to_id(std::string_view token) const {
    auto it = ids_.find(std::string(token));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
}

std::vector<std::string> WordPieceTokenizer::pre_tokenize(std::string_view raw) const {
    std::string fixed;
    if (!is_valid_utf8(raw)) {
        fixed = utf8_replace_invalid(raw);
        raw = fixed;
    }
    // Normalise into code points: clean, CJK padding, accents, lowercase.
    std::u32string norm;
    norm.reserve(raw.size());
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
    const auto* end = p + raw.size();
    utf8proc_int32_t dec[32];
    while (p < end) {
        char32_t c;
        p += detail::decode_cp(p, c);
        if (options_.clean_text) {
            if (c == 0 || c == 0xFFFD || is_control(c)) continue;
            if (is_white_space(c)) c = ' ';
        }
        bool cjk = options_.tokenize_chinese_chars && is_chinese_char(c);
        if (cjk) norm += U' ';
        if (strip_accents_ && c >= 0xC0) {
            // NFD of one character, marks (Mn) dropped (nothing below U+00C0 decomposes
            // canonically; every Mn is >= U+0300 and decomposes to itself).
            int opts = UTF8PROC_DECOMPOSE;
            utf8proc_int32_t last = 0;
            utf8proc_ssize_t k = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), dec, 32,
                                                         static_cast<utf8proc_option_t>(opts), &last);
            if (k < 0 || k > 32) { dec[0] = static_cast<utf8proc_int32_t>(c); k = 1; }
            for (utf8proc_ssize_t i = 0; i < k; ++i) {
                char32_t d = static_cast<char32_t>(dec[i]);
                if (is_mn(d)) continue;
                if (options_.do_lower_case) push_lower(norm, d);
                else norm += d;
            }
        } else if (options_.do_lower_case) {
            push_lower(norm, c);
        } else {
            norm += c;
        }
        if (cjk) norm += U' ';
    }
    // Split on White_Space, punctuation isolated.
    std::vector<std::string> words;
    std::string cur;
    for (char32_t c : norm) {
        if (is_white_space(c)) {
            if (!cur.empty()) words.push_back(std::move(cur)), cur.clear();
        } else if (is_punctuation(c)) {
            if (!cur.empty()) words.push_back(std::move(cur)), cur.clear();
            std::string s;
            append_utf8(s, c);
            words.push_back(std::move(s));
        } else {
            append_utf8(cur, c);
        }
    }
    if (!cur.empty()) words.push_back(std::move(cur));
    return words;
}

void WordPieceTokenizer::word_pieces(std::string_view word, size_t n_chars, std::vector<int32_t>& out) const {
    if (n_chars > options_.max_input_chars_per_word) { out.push_back(unk_id_); return; }
    // Code-point boundaries (byte offsets) of the word.
    size_t bounds[128];
    size_t nb = 0;
    for (size_t i = 0; i < word.size(); ++i)
        if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80 && nb < 127) bounds[nb++] = i;
    bounds[nb] = word.size();
    size_t mark = out.size();
    std::string key;
    size_t start = 0;
    while (start < nb) {
        size_t e = nb;
        int32_t found = -1;
        for (; e > start; --e) {
            key.clear();
            if (start > 0) key += options_.continuing_prefix;
            key.append(word.substr(bounds[start], bounds[e] - bounds[start]));
            auto it = ids_.find(key);
            if (it != ids_.end()) { found = it->second; break; }
        }
        if (found < 0) {
            out.resize(mark);
            out.push_back(unk_id_);
            return;
        }
        out.push_back(found);
        start = e;
    }
}

void WordPieceTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
    for (const auto& w : pre_tokenize(text)) {
        size_t n = 0;
        for (unsigned char ch : w) n += (ch & 0xC0) != 0x80;
        word_pieces(w, n, out);
    }
}

std::vector<int32_t> WordPieceTokenizer::encode_plain(std::string_view text) const {
    std::vector<int32_t> out;
    size_t seg = 0, i = 0;
    while (i < text.size()) {
        const std::pair<std::string, int32_t>* hit = nullptr;
        for (const auto& s : specials_)
            if (text.compare(i, s.first.size(), s.first) == 0) { hit = &s; break; }
        if (hit) {
            if (i > seg) encode_segment(text.substr(seg, i - seg), out);
            out.push_back(hit->second);
            i += hit->first.size();
            seg = i;
        } else {
            ++i;
        }
    }
    if (seg < text.size()) encode_segment(text.substr(seg), out);
    return out;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
    std::vector<std::string> toks;
    for (int32_t id : encode_plain(text)) toks.push_back(vocab_[static_cast<size_t>(id)]);
    return toks;
}

WordPieceEncoding WordPieceTokenizer::encode(std::string_view text, size_t max_length) const {
    if (max_length == 0) max_length = options_.model_max_length;
    if (max_length != 0 && max_length < 2)
        throw UsageError(ErrorInfo{}.at("max_length").expected(">= 2 ([CLS] and [SEP])").found(std::to_string(max_length)));
    std::vector<int32_t> body = encode_plain(text);
    WordPieceEncoding e;
    e.full_length = body.size() + 2;
    size_t keep = max_length == 0 ? body.size() : std::min(body.size(), max_length - 2);
    e.ids.reserve(keep + 2);
    e.ids.push_back(cls_id_);
    e.ids.insert(e.ids.end(), body.begin(), body.begin() + static_cast<std::ptrdiff_t>(keep));
    e.ids.push_back(sep_id_);
    return e;
}

}  // namespace pdsd::tokenizer
