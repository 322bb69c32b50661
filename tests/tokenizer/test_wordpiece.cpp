// WordPiece (BERT) tokenizer: ids exactly as HF BertTokenizer (golden cases made by
// scripts/oracle/wordpiece_diff.py --write-golden), plus the rules one by one.
#include "pdsd/core/error.h"
#include "pdsd/core/json_io.h"
#include "pdsd/tokenizer/wordpiece.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <fstream>

using namespace pdsd;
using namespace pdsd::tokenizer;

namespace {
std::string fixture(const std::string& name) { return test::source_dir() + "/tests/tokenizer/fixtures/" + name; }

WordPieceTokenizer small(WordPieceOptions o = {}) {
    return WordPieceTokenizer({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##lo", "hel", "中", "文", "cafe",
                               "café", ",", "!", "un", "##able", "a", "##a", "i"},
                              o);
}
}  // namespace

TEST(WordPiece, GoldenIdsMatchHfBertTokenizer) {
    auto tok = WordPieceTokenizer::load(fixture("wordpiece"));
    EXPECT_EQ(tok.vocab_size(), 2961u);
    nlohmann::json cases = read_json_file(fixture("wordpiece/cases.json"));
    ASSERT_EQ(cases.size(), 300u);
    size_t bad = 0;
    for (auto& c : cases) {
        auto got = tok.encode(c["text"].get<std::string>()).ids;
        auto want = c["ids"].get<std::vector<int32_t>>();
        if (got != want && ++bad <= 3) ADD_FAILURE() << "text: " << c["text"].dump();
    }
    EXPECT_EQ(bad, 0u);
}

TEST(WordPiece, TokenizerJsonFormGivesTheSameIds) {
    auto a = WordPieceTokenizer::load(fixture("wordpiece"));
    auto b = WordPieceTokenizer::load(fixture("wordpiece-json"));
    EXPECT_EQ(a.vocab_size(), b.vocab_size());
    nlohmann::json cases = read_json_file(fixture("wordpiece/cases.json"));
    for (size_t i = 0; i < 50; ++i) EXPECT_EQ(b.encode(cases[i]["text"].get<std::string>()).ids, cases[i]["ids"].get<std::vector<int32_t>>());
}

TEST(WordPiece, ChineseCharactersAreSingleTokens) {
    auto t = small();
    EXPECT_EQ(t.tokenize("中文hello"), (std::vector<std::string>{"中", "文", "hello"}));
}

TEST(WordPiece, ContinuationPiecesAndUnknownWords) {
    auto t = small();
    EXPECT_EQ(t.tokenize("unable hellolo xyz"), (std::vector<std::string>{"un", "##able", "hello", "##lo", "[UNK]"}));
    // a word that cannot be covered completely is one [UNK], not a partial match
    EXPECT_EQ(t.tokenize("helo"), (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPiece, LongWordsBecomeUnknown) {
    auto t = small();
    EXPECT_EQ(t.tokenize(std::string(100, 'a')).size(), 100u);    // a ##a ##a ...
    EXPECT_EQ(t.tokenize(std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
}

TEST(WordPiece, LowercaseAndAccents) {
    auto t = small();
    EXPECT_EQ(t.tokenize("CAFÉ Hello"), (std::vector<std::string>{"cafe", "hello"}));   // strip_accents follows lowercase
    WordPieceOptions keep;
    keep.strip_accents = false;
    EXPECT_EQ(small(keep).tokenize("CAFÉ"), (std::vector<std::string>{"café"}));
    WordPieceOptions cased;
    cased.do_lower_case = false;
    EXPECT_EQ(small(cased).tokenize("Hello hello"), (std::vector<std::string>{"[UNK]", "hello"}));
}

TEST(WordPiece, PunctuationControlAndWhitespace) {
    auto t = small();
    EXPECT_EQ(t.tokenize("hello,hello!\x01\t\u3000中"), (std::vector<std::string>{"hello", ",", "hello", "!", "中"}));
    EXPECT_EQ(t.tokenize("hel\xe2\x80\x8blo"), (std::vector<std::string>{"hello"}));   // U+200B (Cf) removed
    EXPECT_TRUE(t.tokenize(" \n\r\t").empty());
    EXPECT_EQ(t.tokenize("hel\xff"), (std::vector<std::string>{"hel"}));   // invalid UTF-8 -> U+FFFD -> dropped
}

TEST(WordPiece, SpecialTokensInTextAndTruncation) {
    auto t = small();
    EXPECT_EQ(t.encode("hello[MASK]中").ids, (std::vector<int32_t>{2, 5, 4, 8, 3}));
    std::string many;
    for (int i = 0; i < 600; ++i) many += "中";
    auto e = t.encode(many, 512);
    EXPECT_EQ(e.ids.size(), 512u);
    EXPECT_EQ(e.full_length, 602u);
    EXPECT_TRUE(e.truncated());
    EXPECT_EQ(e.ids.front(), t.cls_id());
    EXPECT_EQ(e.ids.back(), t.sep_id());
    EXPECT_THROW(t.encode("x", 1), UsageError);
}

TEST(WordPiece, MissingSpecialTokensAreAConfigError) {
    EXPECT_THROW(WordPieceTokenizer({"a", "b"}, {}), ConfigError);
    EXPECT_THROW(WordPieceTokenizer::load("/nonexistent-dir"), Error);
}
