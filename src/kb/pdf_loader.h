// Private: PDF text extraction (only compiled with poppler-cpp; see src/CMakeLists.txt).
#pragma once

#include <string>
#include <vector>

namespace pdsd::kb::detail {
// Text of every page, pages joined by "\n"; pages without text are listed in `warnings`.
std::string pdf_to_text(const std::string& name, const std::string& bytes, std::vector<std::string>& warnings);
}  // namespace pdsd::kb::detail
