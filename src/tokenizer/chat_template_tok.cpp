// Glue between the template (EncodeFn) and the BPE Tokenizer; compiled only when the
// tokenizer implementation is part of the build (see src/CMakeLists.txt).
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

namespace pdsd::tokenizer {

EncodeFn encoder_of(const Tokenizer& tok) {
    return [&tok](std::string_view text) { return tok.encode(text); };
}

}  // namespace pdsd::tokenizer
