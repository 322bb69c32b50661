// Glue between the template (EncodeFn) and the BPE Tokenizer; compiled only when the
// tokenizer implementation is part of the build (see src/CMakeLists.txt).
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

#include "pdsd/core/error.h"

namespace pdsd::tokenizer {

EncodeFn encoder_of(const Tokenizer& tok) {
    // The Qwen template's markers must each be one special token: without them
    // "<|im_end|>" encodes as six plain tokens and every prompt is silently wrong.
    for (const char* t : {"<|im_start|>", "<|im_end|>"}) {
        auto id = tok.token_to_id(t);
        if (!id || !tok.is_special(*id))
            throw FormatError(ErrorInfo{}.at("tokenizer added_tokens").msg(std::string("missing special token ") + t)
                                  .expected("<|im_start|> and <|im_end|> as special added tokens (the Qwen chat template)")
                                  .found(id ? "a plain vocabulary entry" : "no such token")
                                  .hint("use the model's own tokenizer.json / tokenizer_config.json"));
    }
    return [&tok](std::string_view text) { return tok.encode(text); };
}

}  // namespace pdsd::tokenizer
