// PDF text via poppler-cpp (optional dependency: built when pkg-config finds poppler-cpp).
// Pages without a text layer (scanned images) are reported, never silently empty; OCR
// is not implemented.
#include "pdf_loader.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/loader.h"

#include <poppler/cpp/poppler-document.h>
#include <poppler/cpp/poppler-global.h>
#include <poppler/cpp/poppler-page.h>

#include <memory>

namespace pdsd::kb::detail {

namespace {
// poppler prints every syntax problem of a damaged PDF to stderr (hundreds of lines for
// one broken file); they go to pdsd's debug log instead. The user sees one error or
// warning per file from pdf_to_text.
void poppler_message(const std::string& message, void*) { log::debug("pdf", message); }
}  // namespace

std::string pdf_to_text(const std::string& name, const std::string& bytes, std::vector<std::string>& warnings) {
    static const bool quiet = (poppler::set_debug_error_function(poppler_message, nullptr), true);
    (void)quiet;
    std::unique_ptr<poppler::document> doc(
        poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    if (!doc) throw DataError(ErrorInfo{name}.msg("cannot parse the PDF").hint("is the file complete and not encrypted?"));
    if (doc->is_locked()) throw DataError(ErrorInfo{name}.msg("the PDF is encrypted").hint("remove the password first"));
    std::string out;
    std::string empty_pages;
    int n = doc->pages();
    int n_empty = 0;
    for (int i = 0; i < n; ++i) {
        std::unique_ptr<poppler::page> p(doc->create_page(i));
        std::string t;
        if (p) {
            auto utf8 = p->text().to_utf8();
            t.assign(utf8.begin(), utf8.end());
        }
        bool blank = t.find_first_not_of(" \t\r\n\f\v") == std::string::npos;
        if (blank) {
            ++n_empty;
            if (empty_pages.size() < 80) empty_pages += (empty_pages.empty() ? "" : ",") + std::to_string(i + 1);
            continue;
        }
        if (!out.empty()) out += '\n';
        out += t;
        check_text_budget(name, out.size());   // a small PDF can draw the same text many times
    }
    if (n_empty)
        warnings.push_back(std::to_string(n_empty) + " of " + std::to_string(n) + " pages have no text layer (scanned?): page " +
                           empty_pages + "; OCR is not supported");
    return out;
}

}  // namespace pdsd::kb::detail
