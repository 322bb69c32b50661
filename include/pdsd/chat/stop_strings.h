// Stop strings over streamed text, shared by the chat session and the server's stream.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace pdsd::chat {

// Length of the longest suffix of `text` that is a proper prefix of a (non-empty) stop
// string: those bytes are held back, since the next token may complete the stop string.
size_t stop_prefix_suffix(const std::string& text, const std::vector<std::string>& stops);

// Byte offset of the earliest occurrence of any non-empty stop string; npos when none.
size_t find_stop(const std::string& text, const std::vector<std::string>& stops);

}  // namespace pdsd::chat
