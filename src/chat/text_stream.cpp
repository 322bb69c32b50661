#include "pdsd/chat/text_stream.h"

#include "pdsd/core/error.h"
#include "pdsd/tokenizer/unicode.h"

#include <algorithm>
#include <string_view>

namespace pdsd::chat {

namespace {
// Length of the longest suffix of `text` that is a proper prefix of a stop string: the next
// token may complete that stop string, so those bytes are held back.
size_t stop_prefix_suffix(const std::string& text, const std::vector<std::string>& stops) {
    size_t best = 0;
    for (const auto& s : stops) {
        for (size_t n = std::min(s.size() - 1, text.size()); n > best; --n) {
            if (text.compare(text.size() - n, n, s, 0, n) == 0) {
                best = n;
                break;
            }
        }
    }
    return best;
}

// Byte offset of the earliest occurrence of any stop string at or after `from`; npos when none.
size_t find_stop(const std::string& text, const std::vector<std::string>& stops, size_t from = 0) {
    size_t first = std::string::npos;
    for (const auto& s : stops) first = std::min(first, text.find(s, from));
    return first;
}
}  // namespace

TextStream::TextStream(const tokenizer::Tokenizer& tokenizer, std::vector<std::string> stops)
    : tokenizer_(&tokenizer), stops_(std::move(stops)) {
    // Repaired like the text, a stop string matches only whole characters: no cut falls inside
    // one, so every piece and the final text stay valid UTF-8.
    for (auto& s : stops_) s = tokenizer::utf8_replace_invalid(s);
    stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

StreamStep TextStream::push(int64_t token) {
    StreamStep step;
    const auto id = static_cast<tokenizer::TokenId>(token);
    if (tokenizer_->is_special(id)) return step;  // decode(skip_special_tokens) drops them too
    bytes_ += tokenizer_->token_bytes(id);
    // Whole characters move to text_; an unfinished one waits in bytes_ for its last byte. Cut
    // there, repairing piece by piece gives what repairing the whole answer gives.
    const size_t whole = tokenizer::complete_utf8_prefix(bytes_);
    text_ += tokenizer::utf8_replace_invalid(std::string_view(bytes_).substr(0, whole));
    bytes_.erase(0, whole);

    size_t ready = text_.size();
    if (!stops_.empty()) {
        // No stop string starts before emitted_ (that text was never a held prefix), and a
        // held suffix starts where a stop string's first character would.
        const size_t stop = find_stop(text_, stops_, emitted_);
        step.stopped = stop != std::string::npos;
        ready = step.stopped ? stop : text_.size() - stop_prefix_suffix(text_, stops_);
    }
    step.piece = text_.substr(emitted_, ready - emitted_);
    emitted_ = ready;
    return step;
}

StreamEnd TextStream::finish(const std::vector<int64_t>& generated) const {
    StreamEnd end;
    const std::vector<tokenizer::TokenId> ids(generated.begin(), generated.end());
    end.text = tokenizer_->decode(ids, /*skip_special_tokens=*/true);
    const size_t stop = find_stop(end.text, stops_);
    if (stop != std::string::npos) end.text.resize(stop);
    if (end.text.compare(0, emitted_, text_, 0, emitted_) != 0) {
        throw InternalError("TextStream: the streamed text is not a prefix of the decoded answer "
                            "(were ids pushed that the generator did not return?)");
    }
    end.tail = end.text.substr(emitted_);
    return end;
}

}  // namespace pdsd::chat
