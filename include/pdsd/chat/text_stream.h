// Generated token ids -> printable text, the one streaming path of `pdsd chat` (ChatSession)
// and `pdsd serve` (each row of the generation worker).
//
//   TextStream ts(tokenizer, stops);
//   generator.generate(prompt, options, [&](int64_t tok) {
//       StreamStep s = ts.push(tok);
//       print(s.piece);
//       return !s.stopped;                                  // a stop string ends generation
//   });
//   StreamEnd end = ts.finish(result.tokens);
//   print(end.tail);                                        // end.text is the answer
//
// Invariant: the pieces of every push() followed by finish().tail, concatenated, equal
// finish().text = decode(generated ids, skip_special_tokens) cut at the first stop string.
// Each piece is valid UTF-8: special tokens are skipped, bytes that may still start a stop
// string are held back, a character split over byte-level tokens waits for its last byte,
// and ill-formed bytes become U+FFFD exactly as decode() replaces them.
#pragma once

#include "pdsd/tokenizer/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pdsd::chat {

struct StreamStep {
    std::string piece;       // text now safe to print; may be empty
    bool stopped = false;    // a stop string was completed: generation should end here
};

struct StreamEnd {
    std::string text;        // the answer: decode(skip_special_tokens) cut at the first stop
    std::string tail;        // what the pieces have not printed yet (held bytes, U+FFFD of a cut character)
};

class TextStream {
public:
    // `tokenizer` is borrowed. Empty stop strings are ignored.
    TextStream(const tokenizer::Tokenizer& tokenizer, std::vector<std::string> stops);

    StreamStep push(int64_t token);
    // `generated`: every id the generator returned (eos and tokens never pushed included).
    // Throws InternalError when its text does not begin with what the pieces printed.
    StreamEnd finish(const std::vector<int64_t>& generated) const;

private:
    const tokenizer::Tokenizer* tokenizer_;
    std::vector<std::string> stops_;
    std::string bytes_;      // raw bytes of the non-special tokens not yet in text_ (an unfinished character)
    std::string text_;       // valid UTF-8 of the bytes so far, as decode() would give it
    size_t emitted_ = 0;     // bytes of text_ already returned as pieces
};

}  // namespace pdsd::chat
