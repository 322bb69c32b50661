// Private: .docx text (Office Open XML: a zip holding word/document.xml), read with
// libzip and libxml2 (see src/CMakeLists.txt).
#pragma once

#include <string>
#include <vector>

namespace pdsd::kb::detail {
// Body text in document order: one line per paragraph (w:p), tabs and line breaks kept;
// a table row becomes one line with its cells joined by " | ". Embedded images are
// reported in `warnings` (their text is not read: pdsd does no OCR).
std::string docx_to_text(const std::string& name, const std::string& bytes, std::vector<std::string>& warnings);
// The same from word/document.xml itself (the fuzz target's entry). A DTD or entity
// declaration, or XML nested deeper than libxml2's 256 levels: DataError.
std::string docx_xml_to_text(const std::string& name, const std::string& xml, std::vector<std::string>& warnings);
}  // namespace pdsd::kb::detail
