// chat::TextStream: token ids -> printed pieces, over the real Qwen tokenizer. The generator is
// simulated: a known text is cut into random byte runs, each run one token id (a vocab token
// when the run is one, else its single-byte tokens), so characters and stop strings fall across
// tokens at random places. Checked for every split: the pieces and the tail concatenated equal
// the final text, every piece is valid UTF-8, and the final text is decode() cut at the stop.
#include "test_util.h"

#include "pdsd/chat/text_stream.h"
#include "pdsd/tokenizer/unicode.h"

#include <random>

using namespace pdsd;

namespace {
const tokenizer::Tokenizer& qwen() {
    static const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(test::fixtures() + "/qwen-tokenizer");
    return tok;
}

int64_t id_of(const std::string& bytes) {
    auto id = qwen().token_to_id(tokenizer::Tokenizer::vocab_string(bytes));
    EXPECT_TRUE(id.has_value()) << "no vocab token for these bytes";
    return id.value_or(0);
}

// Token ids whose bytes concatenated are `text`, cut into runs of 1..5 bytes; with
// `specials`, <|im_end|> / <|endoftext|> are scattered between them.
std::vector<int64_t> random_split(const std::string& text, std::mt19937& rng, bool specials) {
    std::vector<int64_t> ids;
    std::uniform_int_distribution<size_t> run(1, 5);
    std::bernoulli_distribution special(0.15);
    for (size_t pos = 0; pos < text.size();) {
        const std::string piece = text.substr(pos, run(rng));
        pos += piece.size();
        auto whole = qwen().token_to_id(tokenizer::Tokenizer::vocab_string(piece));
        if (whole) ids.push_back(*whole);
        else
            for (char c : piece) ids.push_back(id_of(std::string(1, c)));
        if (specials && special(rng)) ids.push_back(*qwen().token_to_id(rng() % 2 ? "<|im_end|>" : "<|endoftext|>"));
    }
    return ids;
}

struct Streamed {
    std::vector<std::string> pieces;
    std::vector<int64_t> generated;   // what the generator returns: up to the token that stopped
    bool stopped = false;
    chat::StreamEnd end;
};

// The generator loop as ChatSession and the server run it.
Streamed stream(const std::vector<int64_t>& ids, const std::vector<std::string>& stops) {
    Streamed r;
    chat::TextStream ts(qwen(), stops);
    for (int64_t id : ids) {
        r.generated.push_back(id);
        chat::StreamStep s = ts.push(id);
        r.pieces.push_back(s.piece);
        if (s.stopped) {
            r.stopped = true;
            break;
        }
    }
    r.end = ts.finish(r.generated);
    return r;
}

// The invariant of the header, and what the final text must be.
void check(const Streamed& r, const std::string& want_text) {
    std::string all;
    for (const auto& p : r.pieces) {
        EXPECT_TRUE(tokenizer::is_valid_utf8(p)) << "piece is not valid UTF-8";
        all += p;
    }
    EXPECT_TRUE(tokenizer::is_valid_utf8(r.end.tail));
    EXPECT_EQ(all + r.end.tail, r.end.text);
    EXPECT_EQ(r.end.text, want_text);
}

const std::string kMixed = "你好，world! 这是一个测试：安装 pdsd 需要 cmake 3.22。🙂 Emoji 和 ASCII 混合。结束";
}  // namespace

TEST(TextStream, NoStopPiecesEqualDecodedText) {
    std::mt19937 rng(1);
    for (int trial = 0; trial < 200; ++trial) {
        Streamed r = stream(random_split(kMixed, rng, /*specials=*/false), {});
        EXPECT_FALSE(r.stopped);
        check(r, kMixed);
    }
}

TEST(TextStream, SpecialTokensAreSkipped) {
    std::mt19937 rng(2);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<int64_t> ids = random_split(kMixed, rng, /*specials=*/true);
        for (const auto& p : stream(ids, {}).pieces) EXPECT_EQ(p.find("<|"), std::string::npos) << p;
        check(stream(ids, {}), kMixed);
    }
}

TEST(TextStream, StopSpanningTokensCutsTheText) {
    // Each stop is cut across tokens by most splits; the answer ends right before its first
    // occurrence, and nothing of the stop string is ever printed.
    const std::vector<std::vector<std::string>> cases = {
        {"cmake"}, {"。🙂"}, {"测试"}, {"world", "你好"}, {"需要 cmake", "pdsd"}, {"结束"}, {"不在文中"}};
    std::mt19937 rng(3);
    for (const auto& stops : cases) {
        size_t first = std::string::npos;
        for (const auto& s : stops) first = std::min(first, kMixed.find(s));
        const std::string want = kMixed.substr(0, first);
        for (int trial = 0; trial < 100; ++trial) {
            Streamed r = stream(random_split(kMixed, rng, /*specials=*/trial % 2 == 1), stops);
            EXPECT_EQ(r.stopped, first != std::string::npos) << stops[0];
            check(r, want);
        }
    }
}

TEST(TextStream, HeldStopPrefixIsReleasedWhenTheStopDoesNotFollow) {
    // "需要 cmake" starts like the stop "需要 cmd": those bytes wait, then print once "a" differs.
    std::mt19937 rng(4);
    for (int trial = 0; trial < 100; ++trial) {
        Streamed r = stream(random_split(kMixed, rng, false), {"需要 cmd"});
        EXPECT_FALSE(r.stopped);
        check(r, kMixed);
    }
}

TEST(TextStream, StopInsideMultiByteCharacterTokens) {
    // "好" is E5 A5 BD: one byte per token, so the stop completes on its last byte's token and
    // the lead byte alone ("\xE5", a prefix of the stop) is never printed.
    std::vector<int64_t> ids = {id_of("x"), id_of("\xE5"), id_of("\xA5"), id_of("\xBD"), id_of("y")};
    Streamed r = stream(ids, {"好"});
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.generated.size(), 4u);
    check(r, "x");
    // A stop that is not UTF-8 (a character's tail bytes) is repaired like the text, so it
    // cannot cut "好" in half: here it never matches.
    check(stream(ids, {"\xA5\xBD"}), "x好y");
}

TEST(TextStream, CutCharacterAndIllFormedBytesBecomeReplacementCharacters) {
    // Generation ending after "\xE5\xA5" (the length limit): the pieces hold those bytes back,
    // and the tail prints decode()'s U+FFFD for them.
    Streamed cut = stream({id_of("a"), id_of("\xE5"), id_of("\xA5")}, {});
    EXPECT_EQ(cut.pieces[0], "a");
    check(cut, "a\xEF\xBF\xBD");
    // A stray continuation byte and a broken sequence mid-answer: U+FFFD as decode() gives.
    std::vector<int64_t> bad = {id_of("\xA5"), id_of("b"), id_of("\xE5"), id_of("c"), id_of("\xE5"), id_of("\xA5"), id_of("\xBD")};
    std::vector<tokenizer::TokenId> bad32(bad.begin(), bad.end());
    check(stream(bad, {}), qwen().decode(bad32));
}
