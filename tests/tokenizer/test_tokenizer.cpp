// Qwen tokenizer: exact ids against HF tokenizers' goldens, loading from both file
// layouts, the pre-tokenizer split, UTF-8 repair, NFC and decoding.
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/tokenizer/tokenizer.h"
#include "pdsd/tokenizer/unicode.h"

#include <nlohmann/json.hpp>

#include <fstream>

namespace pdsd::tokenizer {
namespace {

std::string qwen_dir() { return test::fixtures() + "/qwen-tokenizer"; }

const Tokenizer& qwen() {
    static const Tokenizer tok = Tokenizer::load(qwen_dir());
    return tok;
}

const nlohmann::json& golden_cases() {
    static const nlohmann::json cases = read_json_file(test::golden("qwen_tokenizer_cases_dev.json"));
    return cases;
}

std::vector<TokenId> ids_of(const nlohmann::json& j) { return j.get<std::vector<TokenId>>(); }

// ---- goldens -----------------------------------------------------------------------

TEST(TokenizerGolden, EveryDevCaseHasHfIdsAndDecodedText) {
    const auto& cases = golden_cases();
    ASSERT_GT(cases.size(), 5u);
    for (const auto& c : cases) {
        std::string text = c.at("text").get<std::string>();
        std::vector<TokenId> expected = ids_of(c.at("ids"));
        EXPECT_EQ(qwen().encode(text), expected) << "text: " << text;
        EXPECT_EQ(qwen().decode(expected), c.at("decoded").get<std::string>()) << "text: " << text;
    }
}

TEST(TokenizerGolden, VocabJsonAndMergesTxtGiveTheSameIds) {
    test::TempDir dir;
    nlohmann::json tj = read_json_file(qwen_dir() + "/tokenizer.json");
    {
        std::ofstream v(dir.file("vocab.json"), std::ios::binary);
        v << tj["model"]["vocab"].dump(-1, ' ', false);
        std::ofstream m(dir.file("merges.txt"), std::ios::binary);
        m << "#version: 0.2\n";
        for (const auto& pair : tj["model"]["merges"]) {
            if (pair.is_string()) {
                m << pair.get<std::string>() << "\n";
            } else {
                m << pair[0].get<std::string>() << " " << pair[1].get<std::string>() << "\n";
            }
        }
        std::ofstream c(dir.file("tokenizer_config.json"), std::ios::binary);
        c << read_file(qwen_dir() + "/tokenizer_config.json");
    }
    Tokenizer slow = Tokenizer::load(dir.str());
    EXPECT_EQ(slow.vocab_size(), qwen().vocab_size());
    std::vector<std::string> texts = {"<|im_start|>user\nHello, world! 你好<|im_end|>\n", "WE'LL SEE'S  x\r\n\ty 123"};
    for (const auto& c : golden_cases()) texts.push_back(c.at("text").get<std::string>());
    for (const auto& t : texts) EXPECT_EQ(slow.encode(t), qwen().encode(t)) << "text: " << t;
    EXPECT_TRUE(slow.is_special(151644));
    EXPECT_FALSE(slow.is_special(151657));  // <tool_call> is added but not special
}

TEST(TokenizerGolden, MergesAsStringsOrPairsLoadTheSame) {
    test::TempDir dir;
    nlohmann::json tj = read_json_file(qwen_dir() + "/tokenizer.json");
    auto& merges = tj["model"]["merges"];
    bool pairs = merges[0].is_array();
    for (auto& m : merges) {
        if (pairs) {
            m = m[0].get<std::string>() + " " + m[1].get<std::string>();
        } else {
            std::string s = m.get<std::string>();
            auto sp = s.find(' ');
            m = nlohmann::json::array({s.substr(0, sp), s.substr(sp + 1)});
        }
    }
    write_file_atomic(dir.file("tokenizer.json"), tj.dump());
    Tokenizer other = Tokenizer::load(dir.file("tokenizer.json"));
    for (const auto& c : golden_cases()) {
        std::string text = c.at("text").get<std::string>();
        EXPECT_EQ(other.encode(text), qwen().encode(text)) << "text: " << text;
    }
}

// ---- pre-tokenizer (expected pieces from tokenizers' pre_tokenize_str) --------------

TEST(PreTokenizer, SplitsLikeTheQwenRegex) {
    struct Case {
        std::string text;
        std::vector<std::string> pieces;
    };
    std::vector<Case> cases = {
        {"a\r\nb", {"a", "\r\n", "b"}},
        {"x \r\n\r\n  y", {"x", " \r\n\r\n", " ", " y"}},
        {"   hello", {"  ", " hello"}},
        {"a   b", {"a", "  ", " b"}},
        {"tail   ", {"tail", "   "}},
        {"\t\tword", {"\t", "\tword"}},
        {"HE'S it'S 'LL'll 're'Re", {"HE", "'S", " it", "'S", " '", "LL", "'ll", " '", "re", "'Re"}},
        {"x'\u017f", {"x", "'\u017f"}},  // LONG S case-folds to 's'
        {"abc123 4567", {"abc", "1", "2", "3", " ", "4", "5", "6", "7"}},
        {"caf\u00e9 e\u0301", {"caf\u00e9", " e", "\u0301"}},  // a combining mark is not a letter
        {"\U0001F468\u200d\U0001F469\u200d\U0001F467 ok", {"\U0001F468\u200d\U0001F469\u200d\U0001F467", " ok"}},
        {"a\u00a0\u00a0b", {"a", "\u00a0", "\u00a0b"}},
        {"!!! ...\n\nx", {"!!!", " ...\n\n", "x"}},
        {" ?? a", {" ??", " a"}},
        {"\n \n", {"\n \n"}},
        {"\u4e2d\u6587\uff0c\u6d4b\u8bd5\u3002", {"\u4e2d\u6587", "\uff0c\u6d4b\u8bd5", "\u3002"}},
        {"", {}},
    };
    for (const auto& c : cases) EXPECT_EQ(qwen_pre_tokenize(c.text), c.pieces) << "text: " << c.text;
}

TEST(PreTokenizer, PiecesCoverTheInput) {
    std::string text = "  mixed 中文 text\r\n\r\n\t 12 ,, 'd 😀\u3000 \n";
    std::string joined;
    for (const auto& p : qwen_pre_tokenize(text)) joined += p;
    EXPECT_EQ(joined, text);
}

// ---- Unicode helpers ---------------------------------------------------------------

TEST(Utf8, ReplacesMaximalSubpartsLikePython) {
    // Expected strings: bytes.decode("utf-8", errors="replace").
    const std::string R = "\xEF\xBF\xBD";
    EXPECT_EQ(utf8_replace_invalid("abc"), "abc");
    EXPECT_EQ(utf8_replace_invalid("\xE4\xBD"), R);                 // truncated 3-byte: one U+FFFD
    EXPECT_EQ(utf8_replace_invalid("a\xC3("), "a" + R + "(");
    EXPECT_EQ(utf8_replace_invalid("\xF0\x80\x80"), R + R + R);     // F0 needs 90..BF next
    EXPECT_EQ(utf8_replace_invalid("\xED\xA0\x80"), R + R + R);     // surrogate
    EXPECT_EQ(utf8_replace_invalid("\xF4\x90\x80\x80"), R + R + R + R);  // > U+10FFFF
    EXPECT_EQ(utf8_replace_invalid("\xC0\xAF"), R + R);             // overlong
    EXPECT_EQ(utf8_replace_invalid("\xF0\x9F\x98"), R);             // truncated emoji
    EXPECT_EQ(utf8_replace_invalid("\xFF\xE2\x82\xAC"), R + "\xE2\x82\xAC");
    EXPECT_TRUE(is_valid_utf8("\xE2\x82\xAC \xF0\x9F\x98\x80"));
    EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));
}

TEST(Utf8, CompletePrefixHoldsBackAnUnfinishedCharacter) {
    EXPECT_EQ(complete_utf8_prefix(""), 0u);
    EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
    EXPECT_EQ(complete_utf8_prefix("ab\xE4"), 2u);
    EXPECT_EQ(complete_utf8_prefix("ab\xE4\xBD"), 2u);
    EXPECT_EQ(complete_utf8_prefix("ab\xE4\xBD\xA0"), 5u);
    EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);
    EXPECT_EQ(complete_utf8_prefix("x\xFF"), 2u);      // never valid: nothing to wait for
    EXPECT_EQ(complete_utf8_prefix("x\xE0\x80"), 3u);  // E0 80 is ill-formed already
}

TEST(Nfc, ComposesAndReorders) {
    EXPECT_EQ(nfc("e\u0301"), "\u00e9");
    EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");
    EXPECT_EQ(nfc("s\u0307\u0323"), "\u1e69");  // reordered then composed
    EXPECT_EQ(nfc("\u212b"), "\u00c5");         // singleton
    EXPECT_EQ(nfc("plain ascii"), "plain ascii");
    EXPECT_TRUE(is_nfc_quick("\u4f60\u597d world"));
    EXPECT_FALSE(is_nfc_quick("e\u0301"));
}

// ---- encode / decode behaviour -----------------------------------------------------

TEST(Tokenizer, NormalisesToNfcBeforeSplitting) {
    EXPECT_EQ(qwen().encode("caf" "e\u0301"), qwen().encode("caf\u00e9"));
}

TEST(Tokenizer, InvalidUtf8IsEncodedAsReplacementCharacters) {
    std::string bad = "ab\xFF" "c\xE4\xBD";
    std::vector<TokenId> ids;
    ASSERT_NO_THROW(ids = qwen().encode(bad));
    EXPECT_EQ(ids, qwen().encode("ab\xEF\xBF\xBD" "c\xEF\xBF\xBD"));
}

TEST(Tokenizer, DecodeReplacesSplitCharacters) {
    // "你" = E4 BD A0 is one token; the ids of its single bytes decode alone to U+FFFD.
    std::vector<TokenId> bytes;
    for (unsigned char b : std::string("\xE4\xBD\xA0")) {
        auto id = qwen().token_to_id(Tokenizer::vocab_string(std::string(1, char(b))));
        ASSERT_TRUE(id.has_value());
        bytes.push_back(*id);
    }
    EXPECT_EQ(qwen().decode(bytes), "\xE4\xBD\xA0");
    EXPECT_EQ(qwen().decode({bytes[0], bytes[1]}), "\xEF\xBF\xBD");
    EXPECT_EQ(qwen().decode({bytes[1], bytes[2]}), "\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(qwen().token_bytes(bytes[0]), "\xE4");
}

TEST(Tokenizer, SpecialTokensAndSkipping) {
    const auto& tok = qwen();
    EXPECT_EQ(tok.vocab_size(), 151669);
    EXPECT_EQ(tok.token_to_id("<|im_start|>"), std::optional<TokenId>(151644));
    EXPECT_EQ(tok.id_to_token(151645), "<|im_end|>");
    EXPECT_EQ(tok.id_to_token(9707), "Hello");
    EXPECT_EQ(tok.id_to_token(-1), "");
    EXPECT_TRUE(tok.is_special(151643));
    EXPECT_FALSE(tok.is_special(151667));  // <think> is not special
    auto ids = tok.encode("<|im_start|>user\nhi<think>x</think><|im_end|>");
    EXPECT_EQ(ids.front(), 151644);
    EXPECT_EQ(ids.back(), 151645);
    EXPECT_EQ(tok.decode(ids, true), "user\nhi<think>x</think>");
    EXPECT_EQ(tok.decode(ids), "<|im_start|>user\nhi<think>x</think><|im_end|>");
    // A broken added token is plain text.
    EXPECT_EQ(tok.decode(tok.encode("<|im_start")), "<|im_start");
    EXPECT_NE(tok.encode("<|im_start").front(), 151644);
    EXPECT_EQ(tok.decode({151644, 999999999, -5}), "<|im_start|>");  // unknown ids skipped
}

TEST(Tokenizer, BatchEqualsOneByOne) {
    std::vector<std::string> texts;
    for (const auto& c : golden_cases()) texts.push_back(c.at("text").get<std::string>());
    for (int k = 0; k < 50; ++k) texts.push_back("line " + std::to_string(k) + " 配电网 data\r\n");
    auto batch = qwen().encode_batch(texts, 4);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t k = 0; k < texts.size(); ++k) EXPECT_EQ(batch[k], qwen().encode(texts[k]));
    EXPECT_EQ(qwen().encode_batch(texts, 0), batch);
    EXPECT_TRUE(qwen().encode_batch({}, 3).empty());
}

TEST(Tokenizer, LongWordsUseTheSameMerges) {
    // 1000 Han characters are one pre-token (the heap merge path); HF tokenizers gives
    // the 3 ids of one repetition, 200 times.
    std::string unit = "\u914d\u7535\u7f51\u6545\u969c", text;
    for (int k = 0; k < 200; ++k) text += unit;
    std::vector<TokenId> one = qwen().encode(unit), expected;
    EXPECT_EQ(one, (std::vector<TokenId>{54387, 105102, 105716}));
    for (int k = 0; k < 200; ++k) expected.insert(expected.end(), one.begin(), one.end());
    EXPECT_EQ(qwen().encode(text), expected);
}

TEST(Tokenizer, AddedTokenFlagsFollowTokenizers) {
    // Expected ids from HF tokenizers 0.23 with the same edits to tokenizer.json.
    test::TempDir dir;
    nlohmann::json tj = read_json_file(qwen_dir() + "/tokenizer.json");
    for (auto& t : tj["added_tokens"]) {
        if (t["content"] == "<think>") t["lstrip"] = t["rstrip"] = true;
        if (t["content"] == "</think>") t["single_word"] = true;
    }
    tj["added_tokens"].push_back({{"id", 151669}, {"content", "caf\u00e9"}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", false}, {"normalized", true}, {"special", false}});
    write_file_atomic(dir.file("tokenizer.json"), tj.dump());
    Tokenizer tok = Tokenizer::load(dir.file("tokenizer.json"));
    EXPECT_EQ(tok.encode("a  <think>  b"), (std::vector<TokenId>{64, 151667, 65}));
    EXPECT_EQ(tok.encode("x</think> y </think>"), (std::vector<TokenId>{87, 522, 26865, 29, 379, 220, 151668}));
    EXPECT_EQ(tok.encode("cafe\u0301 ok"), (std::vector<TokenId>{151669, 5394}));  // matched after NFC
    EXPECT_EQ(tok.vocab_size(), 151670);
}

TEST(Tokenizer, RandomBytesNeverCrashAndEqualTheirRepair) {
    uint64_t state = 12345;
    auto next = [&] {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<uint32_t>(state >> 33);
    };
    const std::string alphabet[] = {"a", " ", "\n", "'", "s", "1", "\xE4", "\xBD", "\xA0", "\xF0", "\x9F", "\x98",
                                    "\x80", "\xFF", "\xC3", "\xA9", "\xCC", "\x81", "<|im_end|>", "\xED", "\xA0"};
    for (int k = 0; k < 3000; ++k) {
        std::string s;
        size_t len = next() % 24;
        for (size_t i = 0; i < len; ++i) s += alphabet[next() % (sizeof(alphabet) / sizeof(alphabet[0]))];
        std::vector<TokenId> ids;
        ASSERT_NO_THROW(ids = qwen().encode(s));
        EXPECT_EQ(ids, qwen().encode(utf8_replace_invalid(s)));
        // Round trip up to NFC ('<' and '>' around the added token compose with nothing).
        EXPECT_EQ(qwen().decode(ids), nfc(utf8_replace_invalid(s)));
    }
}

TEST(Tokenizer, MissingOrUnsupportedFilesThrow) {
    test::TempDir dir;
    EXPECT_THROW(Tokenizer::load(dir.str()), IoError);
    EXPECT_THROW(Tokenizer::load(dir.file("nope.json")), IoError);
    nlohmann::json tj = read_json_file(qwen_dir() + "/tokenizer.json");
    tj["pre_tokenizer"] = {{"type", "Whitespace"}};
    write_file_atomic(dir.file("tokenizer.json"), tj.dump());
    EXPECT_THROW(Tokenizer::load(dir.file("tokenizer.json")), FormatError);
}

// The loader streams model.vocab and model.merges out of the parser: malformed entries there
// must still fail as FormatError, and a syntax error keeps its line/column.
TEST(Tokenizer, MalformedVocabOrMergesThrowFormatError) {
    test::TempDir dir;
    const nlohmann::json good = read_json_file(qwen_dir() + "/tokenizer.json");
    auto expect_format_error = [&](const nlohmann::json& tj, const std::string& what) {
        write_file_atomic(dir.file("tokenizer.json"), tj.dump());
        EXPECT_THROW(Tokenizer::load(dir.file("tokenizer.json")), FormatError) << what;
    };
    nlohmann::json tj = good;
    tj["model"]["vocab"]["!"] = "not an id";
    expect_format_error(tj, "string id");
    tj = good;
    tj["model"]["vocab"]["!"] = nlohmann::json::array({1, 2});
    expect_format_error(tj, "array id");
    tj = good;
    tj["model"]["merges"][3] = "nospace";
    expect_format_error(tj, "merge without a space");
    tj = good;
    tj["model"]["merges"][3] = nlohmann::json::array({"a"});
    expect_format_error(tj, "one-part merge");
    tj = good;
    tj["model"]["merges"][3] = "zzzzqq qqzzzz";
    expect_format_error(tj, "merge of unknown tokens");
    tj = good;
    tj["model"]["vocab"] = nlohmann::json::array();
    expect_format_error(tj, "vocab not an object");
    write_file_atomic(dir.file("tokenizer.json"), good.dump().substr(0, 5000));
    try {
        Tokenizer::load(dir.file("tokenizer.json"));
        ADD_FAILURE() << "truncated file loaded";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("line 1"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace pdsd::tokenizer
