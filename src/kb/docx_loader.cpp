#include "docx_loader.h"

#include "pdsd/core/error.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <zip.h>

#include <algorithm>
#include <memory>

namespace pdsd::kb::detail {
namespace {

// word/document.xml of a 1000-page report is a few MiB; 64 MiB leaves room for huge
// tables while libxml2's tree of it (about 5x) stays small.
constexpr zip_uint64_t kMaxPartBytes = zip_uint64_t{64} << 20;

// Office Open XML never carries a DTD. Without one no entity can be declared, so no
// entity expansion (billion laughs) and no external entity (XXE) can happen; only the
// five predefined entities and character references remain.
void refuse_dtd(const std::string& name, const std::string& xml, const char* entry) {
    for (const char* tag : {"<!DOCTYPE", "<!ENTITY"}) {
        size_t at = xml.find(tag);
        if (at == std::string::npos) continue;
        size_t line = 1 + static_cast<size_t>(std::count(xml.begin(), xml.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
        throw DataError(ErrorInfo{name}.at(std::string(entry) + " line " + std::to_string(line))
                            .msg("document XML declares a DTD or entities (not allowed: an entity bomb or external entity)")
                            .expected("Office Open XML without <!DOCTYPE>").found(tag)
                            .hint("re-save the document from Word/WPS/LibreOffice"));
    }
}

// The zip entry `entry` of the archive in `bytes`; throws DataError when the archive is
// not a zip or lacks the entry.
std::string read_zip_entry(const std::string& name, const std::string& bytes, const char* entry) {
    zip_error_t err;
    zip_error_init(&err);
    // libzip reads from our buffer without copying; freep=0: we keep ownership.
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &err);
    if (!src) throw InternalError(ErrorInfo{name}.msg("libzip: cannot create a buffer source"));
    zip_t* za = zip_open_from_source(src, ZIP_RDONLY, &err);
    if (!za) {
        zip_source_free(src);
        std::string why = zip_error_strerror(&err);
        zip_error_fini(&err);
        throw DataError(ErrorInfo{name}.msg("not a valid .docx file").expected("a zip archive (Office Open XML)")
                            .found(why).hint("re-save the document as .docx from Word/WPS/LibreOffice"));
    }
    std::unique_ptr<zip_t, int (*)(zip_t*)> guard(za, zip_close);
    zip_stat_t st;
    if (zip_stat(za, entry, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        throw DataError(ErrorInfo{name}.msg("not a valid .docx file").expected(std::string("a zip entry ") + entry)
                            .found("none").hint("the file may be a different Office format (.doc, .odt) renamed to .docx"));
    // Zip bombs: the uncompressed size from the zip directory is checked before allocating,
    // and zip_fread below never reads past it (a lying directory gets a short read or a
    // CRC error, not more memory).
    if (st.size > kMaxPartBytes)
        throw DataError(ErrorInfo{name}.at(entry).msg("document part too large (zip bomb?)")
                            .expected("at most " + std::to_string(kMaxPartBytes >> 20) + " MiB uncompressed")
                            .found(std::to_string(st.size) + " bytes").hint("split the document into smaller files"));
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen(za, entry, 0), zip_fclose);
    if (!f) throw DataError(ErrorInfo{name}.at(entry).msg("cannot read zip entry").found(zip_strerror(za)));
    std::string out(st.size, '\0');
    zip_int64_t got = zip_fread(f.get(), out.data(), out.size());
    if (got < 0 || static_cast<zip_uint64_t>(got) != st.size)
        throw DataError(ErrorInfo{name}.at(entry).msg("truncated or corrupt zip entry").found(zip_file_strerror(f.get())));
    return out;
}

bool is_w(const xmlNode* n, const char* local) {
    return n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, reinterpret_cast<const xmlChar*>(local)) == 0;
}

struct Walker {
    std::string text;     // finished lines
    std::string line;     // the paragraph being built
    int images = 0;

    void end_line() {
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
        if (!line.empty()) {
            text += line;
            text += '\n';
        }
        line.clear();
    }

    // Collects the text runs below `n` into `line`.
    void runs(const xmlNode* n) {
        for (const xmlNode* c = n->children; c; c = c->next) {
            if (c->type != XML_ELEMENT_NODE) continue;
            if (is_w(c, "t")) {
                if (xmlChar* s = xmlNodeGetContent(c)) {
                    line += reinterpret_cast<const char*>(s);
                    xmlFree(s);
                }
            } else if (is_w(c, "tab")) {
                line += '\t';
            } else if (is_w(c, "br") || is_w(c, "cr")) {
                line += '\n';
            } else if (is_w(c, "drawing") || is_w(c, "pict")) {
                ++images;
            } else if (is_w(c, "p")) {  // a paragraph nested in a text box
                runs(c);
                line += '\n';
            } else if (!is_w(c, "instrText") && !is_w(c, "delText")) {  // field codes, deleted text
                runs(c);
            }
        }
    }

    void body(const xmlNode* n) {
        for (const xmlNode* c = n->children; c; c = c->next) {
            if (is_w(c, "p")) {
                runs(c);
                end_line();
            } else if (is_w(c, "tbl")) {
                table(c);
            } else if (c->type == XML_ELEMENT_NODE) {
                body(c);  // w:sdt content controls, w:customXml wrappers
            }
        }
    }

    void table(const xmlNode* tbl) {
        for (const xmlNode* tr = tbl->children; tr; tr = tr->next) {
            if (!is_w(tr, "tr")) continue;
            std::string row;
            for (const xmlNode* tc = tr->children; tc; tc = tc->next) {
                if (!is_w(tc, "tc")) continue;
                Walker cell;
                cell.body(tc);
                images += cell.images;
                std::string t = cell.text;
                for (char& ch : t)
                    if (ch == '\n') ch = ' ';
                while (!t.empty() && t.back() == ' ') t.pop_back();
                if (!row.empty()) row += " | ";
                row += t;
            }
            line = row;
            end_line();
        }
    }
};

}  // namespace

std::string docx_to_text(const std::string& name, const std::string& bytes, std::vector<std::string>& warnings) {
    return docx_xml_to_text(name, read_zip_entry(name, bytes, "word/document.xml"), warnings);
}

std::string docx_xml_to_text(const std::string& name, const std::string& xml, std::vector<std::string>& warnings) {
    if (xml.size() > kMaxPartBytes)
        throw DataError(ErrorInfo{name}.at("word/document.xml").msg("document part too large")
                            .expected("at most " + std::to_string(kMaxPartBytes >> 20) + " MiB"));
    refuse_dtd(name, xml, "word/document.xml");
    // No XML_PARSE_NOENT (never substitute entities), XML_PARSE_NONET (never fetch), and no
    // XML_PARSE_HUGE: libxml2 keeps its limits (nesting 256, a text node 10 MB), which also
    // bounds the recursion of the Walker below.
    std::unique_ptr<xmlDoc, void (*)(xmlDocPtr)> doc(
        xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "document.xml", nullptr,
                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
        xmlFreeDoc);
    if (!doc) {
        const xmlError* e = xmlGetLastError();
        throw DataError(ErrorInfo{name}.at(e ? "word/document.xml line " + std::to_string(e->line) : "word/document.xml")
                            .msg("malformed document XML").found(e && e->message ? e->message : "parse error")
                            .hint("open and re-save the document"));
    }
    Walker w;
    w.body(xmlDocGetRootElement(doc.get()));
    w.end_line();
    if (w.images > 0)
        warnings.push_back(std::to_string(w.images) + " embedded image(s) skipped (no OCR; text inside images is not indexed)");
    return w.text;
}

}  // namespace pdsd::kb::detail
