// XLM-R tokenizer: sentencepiece + fairseq id mapping (see include/pdsd/tokenizer/xlmr_tokenizer.h).
#include "pdsd/tokenizer/xlmr_tokenizer.h"

#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <filesystem>

namespace pdsd::tokenizer {

namespace fs = std::filesystem;

struct XlmrTokenizer::Impl {
    sentencepiece::SentencePieceProcessor sp;
    std::string source;
};

namespace {

struct Special {
    std::string_view text;
    int32_t id;        // -1: <mask> (the last id)
    bool lstrip;
};
// Longest first where one is a prefix of another ("</s>" vs "<s>" never collide).
constexpr std::array<Special, 5> kSpecials{{{"<mask>", -1, true}, {"<pad>", XlmrTokenizer::kPad, false},
                                             {"<unk>", XlmrTokenizer::kUnk, false}, {"</s>", XlmrTokenizer::kEos, false},
                                             {"<s>", XlmrTokenizer::kBos, false}}};

// Trailing Unicode White_Space of `s` (ASCII + NBSP + U+3000 + U+2000..U+200A etc.): bytes to cut.
size_t trailing_space_bytes(std::string_view s) {
    size_t n = s.size();
    while (n > 0) {
        unsigned char c = static_cast<unsigned char>(s[n - 1]);
        if (c == ' ' || (c >= 0x09 && c <= 0x0d)) { --n; continue; }
        auto ends = [&](std::string_view u) { return n >= u.size() && s.substr(n - u.size(), u.size()) == u; };
        bool hit = false;
        for (std::string_view u : {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf",
                                   "\xe2\x81\x9f", "\xe3\x80\x80"}) {
            if (ends(u)) { n -= u.size(); hit = true; break; }
        }
        if (!hit && n >= 3 && static_cast<unsigned char>(s[n - 3]) == 0xe2 && static_cast<unsigned char>(s[n - 2]) == 0x80) {
            unsigned char t = static_cast<unsigned char>(s[n - 1]);
            if (t >= 0x80 && t <= 0x8a) { n -= 3; hit = true; }   // U+2000..U+200A
        }
        if (!hit) break;
    }
    return s.size() - n;
}

}  // namespace

XlmrTokenizer::XlmrTokenizer(XlmrTokenizer&&) noexcept = default;
XlmrTokenizer& XlmrTokenizer::operator=(XlmrTokenizer&&) noexcept = default;
XlmrTokenizer::~XlmrTokenizer() = default;

bool has_xlmr_tokenizer(const std::string& dir) {
    std::error_code ec;
    return fs::exists(fs::path(dir) / "sentencepiece.bpe.model", ec);
}

bool is_xlm_roberta_config(const std::string& dir) {
    std::error_code ec;
    fs::path cfg = fs::path(dir) / "config.json";
    if (!fs::exists(cfg, ec)) return false;
    try {
        nlohmann::json j = read_json_file(cfg.string());
        std::string mt = j.value("model_type", "");
        if (!mt.empty()) return mt == "xlm-roberta" || mt == "roberta";
        if (j.contains("architectures") && j["architectures"].is_array())
            for (auto& a : j["architectures"])
                if (a.is_string() && (a.get<std::string>().rfind("XLMRoberta", 0) == 0 || a.get<std::string>().rfind("Roberta", 0) == 0))
                    return true;
    } catch (const Error&) {
    } catch (const nlohmann::json::exception&) {
    }
    return false;
}

XlmrTokenizer XlmrTokenizer::load(const std::string& dir_or_file) {
    fs::path p(dir_or_file);
    fs::path dir = fs::is_directory(p) ? p : p.parent_path();
    fs::path model = fs::is_directory(p) ? p / "sentencepiece.bpe.model" : p;
    if (!fs::exists(model)) {
        if (fs::exists(dir / "tokenizer.json"))
            throw ConfigError(ErrorInfo{dir.string()}.msg("XLM-R tokenizer: only tokenizer.json found")
                                  .expected("sentencepiece.bpe.model")
                                  .hint("copy sentencepiece.bpe.model from the model's Hugging Face repository "
                                        "(bge-m3 ships it); the Unigram model of tokenizer.json is not read by pdsd"));
        throw IoError(ErrorInfo{model.string()}.msg("no sentencepiece model").expected("sentencepiece.bpe.model"));
    }
    XlmrTokenizer t;
    t.impl_ = std::make_unique<Impl>();
    t.impl_->source = model.string();
    auto st = t.impl_->sp.Load(model.string());
    if (!st.ok())
        throw FormatError(ErrorInfo{model.string()}.msg("not a sentencepiece model: " + st.ToString()));
    if (t.impl_->sp.GetPieceSize() < 4)
        throw FormatError(ErrorInfo{model.string()}.expected("at least 4 pieces").found(std::to_string(t.impl_->sp.GetPieceSize())));
    // XLM-R's spm layout: <unk>=0, <s>=1, </s>=2 (the fairseq mapping relies on it).
    if (t.impl_->sp.unk_id() != 0)
        throw FormatError(ErrorInfo{model.string()}.at("unk_id").expected("0 (XLM-R layout)").found(std::to_string(t.impl_->sp.unk_id())));
    fs::path tc = dir / "tokenizer_config.json";
    if (fs::exists(tc)) {
        nlohmann::json j = read_json_file(tc.string());
        auto m = j.find("model_max_length");
        // HF writes 1e30 ("no limit") for models without one.
        if (m != j.end() && m->is_number()) {
            double v = m->get<double>();
            t.model_max_length_ = v > 0 && v < 1e9 ? static_cast<size_t>(v) : 0;
        }
    }
    return t;
}

size_t XlmrTokenizer::vocab_size() const { return static_cast<size_t>(impl_->sp.GetPieceSize()) + 2; }

std::vector<int32_t> XlmrTokenizer::encode_plain(std::string_view text) const {
    std::vector<int32_t> out;
    std::vector<int> ids;
    auto encode_segment = [&](std::string_view seg) {
        if (seg.empty()) return;
        ids.clear();
        auto st = impl_->sp.Encode(seg, &ids);
        if (!st.ok()) throw InternalError(ErrorInfo{impl_->source}.msg("sentencepiece encode failed: " + st.ToString()));
        for (int id : ids) out.push_back(id == 0 ? kUnk : static_cast<int32_t>(id) + 1);
    };
    size_t start = 0, i = 0;
    while (i < text.size()) {
        const Special* hit = nullptr;
        if (text[i] == '<')
            for (const auto& s : kSpecials)
                if (text.compare(i, s.text.size(), s.text) == 0) { hit = &s; break; }
        if (!hit) { ++i; continue; }
        std::string_view before = text.substr(start, i - start);
        if (hit->lstrip) before.remove_suffix(trailing_space_bytes(before));
        encode_segment(before);
        out.push_back(hit->id < 0 ? mask_id() : hit->id);
        i += hit->text.size();
        start = i;
    }
    encode_segment(text.substr(start));
    return out;
}

XlmrEncoding XlmrTokenizer::encode(std::string_view text, size_t max_length) const {
    if (max_length == 0) max_length = model_max_length_;
    if (max_length != 0 && max_length < 2)
        throw UsageError(ErrorInfo{}.at("max_length").expected(">= 2 (<s> and </s>)").found(std::to_string(max_length)));
    std::vector<int32_t> body = encode_plain(text);
    XlmrEncoding e;
    e.full_length = body.size() + 2;
    size_t keep = max_length == 0 ? body.size() : std::min(body.size(), max_length - 2);
    e.ids.reserve(keep + 2);
    e.ids.push_back(kBos);
    e.ids.insert(e.ids.end(), body.begin(), body.begin() + static_cast<std::ptrdiff_t>(keep));
    e.ids.push_back(kEos);
    return e;
}

std::vector<std::string> XlmrTokenizer::tokenize(std::string_view text) const {
    std::vector<std::string> out;
    for (int32_t id : encode_plain(text)) {
        if (id == kBos) out.emplace_back("<s>");
        else if (id == kPad) out.emplace_back("<pad>");
        else if (id == kEos) out.emplace_back("</s>");
        else if (id == kUnk) out.emplace_back("<unk>");
        else if (id == mask_id()) out.emplace_back("<mask>");
        else out.push_back(impl_->sp.IdToPiece(id - 1));
    }
    return out;
}

}  // namespace pdsd::tokenizer
