#include "pdsd/kb/loader.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/kb/text.h"
#include "docx_loader.h"
#ifdef PDSD_HAVE_POPPLER
#include "pdf_loader.h"
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

namespace pdsd::kb {

namespace fs = std::filesystem;

std::string file_extension(const std::string& path) {
    std::string ext = fs::path(path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return ext;
}

std::vector<std::string> supported_extensions() {
    return {".txt", ".md", ".json", ".jsonl", ".csv", ".html", ".htm", ".docx"
#ifdef PDSD_HAVE_POPPLER
            , ".pdf"
#endif
    };
}

bool is_supported_extension(const std::string& ext) {
    auto v = supported_extensions();
    return std::find(v.begin(), v.end(), ext) != v.end();
}

void check_file_size(const std::string& name, uint64_t size) {
    if (size > kMaxFileBytes)
        throw DataError(ErrorInfo{name}.msg("file too large for the knowledge base")
                            .expected("at most " + std::to_string(kMaxFileBytes >> 20) + " MiB")
                            .found(std::to_string(size) + " bytes").hint("split the document into smaller files"));
}

void check_text_budget(const std::string& name, size_t text_bytes) {
    if (text_bytes > kMaxTextBytes)
        throw DataError(ErrorInfo{name}.msg("extracted text too large")
                            .expected("at most " + std::to_string(kMaxTextBytes >> 20) + " MiB of text per file")
                            .found("more (the file expands when read: repeated keys, columns or entities)")
                            .hint("split the document into smaller files"));
}

bool is_skipped_name(const std::string& b) {
    auto starts = [&](const char* p) { return b.rfind(p, 0) == 0; };
    return starts("temp") || starts("tmp") || starts(".") || starts("~$");
}

// ---- HTML --------------------------------------------------------------------
namespace {
std::string lower_ascii(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

void append_cp(std::string& out, unsigned long cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
    char32_t c = static_cast<char32_t>(cp);
    out += u32_to_utf8(std::u32string_view(&c, 1));
}

// Decode "&...;" at s[i]; appends the text and returns bytes consumed (0: not an entity).
size_t decode_entity(const std::string& s, size_t i, std::string& out) {
    // Look at most 12 bytes ahead: an unbounded find would make "&&&&..." quadratic.
    size_t semi = std::string_view(s).substr(i, 13).find(';');
    if (semi == std::string::npos || semi > 12) return 0;
    semi += i;
    std::string name = s.substr(i + 1, semi - i - 1);
    if (name.empty()) return 0;
    if (name[0] == '#') {
        unsigned long cp = 0;
        try {
            if (name.size() > 1 && (name[1] == 'x' || name[1] == 'X')) cp = std::stoul(name.substr(2), nullptr, 16);
            else cp = std::stoul(name.substr(1));
        } catch (...) {
            return 0;
        }
        append_cp(out, cp);
        return semi - i + 1;
    }
    static const std::pair<const char*, const char*> named[] = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"},
        {"copy", "\xC2\xA9"}, {"reg", "\xC2\xAE"}, {"mdash", "\xE2\x80\x94"}, {"ndash", "\xE2\x80\x93"},
        {"hellip", "\xE2\x80\xA6"}, {"middot", "\xC2\xB7"}, {"ldquo", "\xE2\x80\x9C"}, {"rdquo", "\xE2\x80\x9D"},
        {"lsquo", "\xE2\x80\x98"}, {"rsquo", "\xE2\x80\x99"}, {"times", "\xC3\x97"}, {"yen", "\xC2\xA5"},
        {"deg", "\xC2\xB0"}, {"trade", "\xE2\x84\xA2"}, {"laquo", "\xC2\xAB"}, {"raquo", "\xC2\xBB"}};
    for (auto& [n, v] : named)
        if (name == n) { out += v; return semi - i + 1; }
    return 0;
}

// Position of `needle` (lowercase ASCII) in `h` from `from`, ignoring ASCII case; npos if
// absent. No copy of the rest of the document per <script> (that was quadratic).
size_t find_ascii_ci(const std::string& h, const std::string& needle, size_t from) {
    if (needle.empty() || h.size() < needle.size()) return std::string::npos;
    for (size_t i = from; i + needle.size() <= h.size(); ++i) {
        size_t k = 0;
        while (k < needle.size() && std::tolower(static_cast<unsigned char>(h[i + k])) == needle[k]) ++k;
        if (k == needle.size()) return i;
    }
    return std::string::npos;
}

bool is_block_tag(const std::string& t) {
    static const char* blocks[] = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
                                   "table", "section", "article", "header", "footer", "pre", "blockquote", "dt",
                                   "dd", "title", "hr", "nav", "main", "aside", "figure", "figcaption"};
    for (auto* b : blocks) if (t == b) return true;
    return false;
}
}  // namespace

std::string html_to_text(const std::string& h) {
    std::string out;
    size_t i = 0;
    while (i < h.size()) {
        char c = h[i];
        if (c == '<') {
            if (h.compare(i, 4, "<!--") == 0) {
                size_t e = h.find("-->", i + 4);
                i = e == std::string::npos ? h.size() : e + 3;
                continue;
            }
            size_t e = h.find('>', i);
            if (e == std::string::npos) { out += h.substr(i); break; }
            std::string tag = h.substr(i + 1, e - i - 1);
            bool closing = !tag.empty() && tag[0] == '/';
            size_t p = closing ? 1 : 0;
            size_t q = p;
            while (q < tag.size() && (std::isalnum(static_cast<unsigned char>(tag[q])) || tag[q] == '-')) ++q;
            std::string name = lower_ascii(tag.substr(p, q - p));
            i = e + 1;
            if (!closing && (name == "script" || name == "style" || name == "noscript" || name == "template")) {
                size_t end = find_ascii_ci(h, "</" + name, i);
                if (end == std::string::npos) { i = h.size(); break; }
                size_t close = h.find('>', end);
                i = close == std::string::npos ? h.size() : close + 1;
                continue;
            }
            if (is_block_tag(name)) out += '\n';
            else if (name == "td" || name == "th") out += ' ';
            continue;
        }
        if (c == '&') {
            size_t n = decode_entity(h, i, out);
            if (n) { i += n; continue; }
        }
        out += c;
        ++i;
    }
    // Collapse whitespace: runs of spaces/tabs inside a line -> one space, lines
    // trimmed, more than one blank line -> one blank line.
    std::istringstream in(out);
    std::string line, res;
    int blank = 0;
    while (std::getline(in, line)) {
        std::string l;
        bool sp = false;
        for (char ch : line) {
            if (ch == ' ' || ch == '\t' || ch == '\r') { sp = true; continue; }
            if (sp && !l.empty()) l += ' ';
            sp = false;
            l += ch;
        }
        // NBSP-only lines count as blank
        if (l.empty() || l == "\xC2\xA0") { if (!res.empty()) ++blank; continue; }
        if (!res.empty()) res += blank ? "\n\n" : "\n";
        blank = 0;
        res += l;
    }
    return res;
}

// ---- CSV ---------------------------------------------------------------------
std::vector<std::vector<std::string>> parse_csv(const std::string& t) {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> row;
    std::string field;
    bool quoted = false, any = false;
    for (size_t i = 0; i < t.size(); ++i) {
        char c = t[i];
        if (quoted) {
            if (c == '"') {
                if (i + 1 < t.size() && t[i + 1] == '"') { field += '"'; ++i; }
                else quoted = false;
            } else {
                field += c;
            }
            continue;
        }
        if (c == '"') { quoted = true; any = true; }
        else if (c == ',') { row.push_back(field); field.clear(); any = true; }
        else if (c == '\r') continue;
        else if (c == '\n') {
            row.push_back(field);
            field.clear();
            if (any || row.size() > 1 || !row[0].empty()) rows.push_back(row);
            row.clear();
            any = false;
        } else { field += c; any = true; }
    }
    if (any || !field.empty()) { row.push_back(field); rows.push_back(row); }
    return rows;
}

namespace {
std::string strip_ws(const std::string& s) {
    std::u32string u = utf8_to_u32(s);
    size_t b = 0, e = u.size();
    while (b < e && is_py_space(u[b])) ++b;
    while (e > b && is_py_space(u[e - 1])) --e;
    return u32_to_utf8(std::u32string_view(u).substr(b, e - b));
}

// Recursion depth is bounded by parse_json_bounded (512 levels); the output by the text
// budget (a long key over a long array repeats per element).
void json_lines(const nlohmann::json& j, const std::string& key, std::string& out, const std::string& name) {
    if (j.is_object()) {
        for (auto it = j.begin(); it != j.end(); ++it) json_lines(it.value(), it.key(), out, name);
    } else if (j.is_array()) {
        for (const auto& v : j) json_lines(v, key, out, name);
    } else if (!j.is_null()) {
        std::string v = j.is_string() ? j.get<std::string>() : j.dump();
        if (!out.empty()) out += '\n';
        out += key.empty() ? v : key + ": " + v;
        check_text_budget(name, out.size());
    }
}

// A kb document's JSON: the shared bounded parser; its FormatError becomes a DataError
// (the file is marked failed and the rest of the KB is indexed).
nlohmann::json parse_document_json(std::string_view text, const std::string& name) {
    try {
        return parse_json_bounded(text, name);
    } catch (const FormatError& e) {
        throw DataError(e.info());
    }
}
}  // namespace

LoadedFile load_bytes(const std::string& name, const std::string& bytes) {
    check_file_size(name, bytes.size());
    LoadedFile lf;
    std::string ext = file_extension(name);
    if (!is_supported_extension(ext)) {
        std::string list;
        for (auto& e : supported_extensions()) list += (list.empty() ? "" : " ") + e;
        throw DataError(ErrorInfo{name}.msg("unsupported file format").expected(list).found(ext.empty() ? "no extension" : ext)
                            .hint("convert the file to one of the supported formats, or remove it from content/"));
    }
    if (ext == ".docx") {
        lf.loader = "DocxLoader";
        lf.encoding = "docx";
        lf.docs.push_back({detail::docx_to_text(name, bytes, lf.warnings), true});
        if (strip_ws(lf.docs[0].text).empty()) lf.warnings.push_back("no text found");
        return lf;
    }
#ifdef PDSD_HAVE_POPPLER
    if (ext == ".pdf") {
        lf.loader = "PDFLoader";
        lf.encoding = "pdf";
        lf.docs.push_back({detail::pdf_to_text(name, bytes, lf.warnings), true});
        if (lf.docs[0].text.find_first_not_of(" \t\r\n") == std::string::npos) lf.warnings.push_back("no text found");
        return lf;
    }
#endif
    std::string text = decode_text(bytes, &lf.encoding);
    if (lf.encoding != "utf-8") lf.warnings.push_back("decoded as " + lf.encoding);
    if (ext == ".txt" || ext == ".md") {
        lf.loader = "TextLoader";
        lf.docs.push_back({text, true});
    } else if (ext == ".html" || ext == ".htm") {
        lf.loader = "HTMLLoader";
        lf.docs.push_back({html_to_text(text), true});
    } else if (ext == ".json") {
        lf.loader = "JSONLoader";
        nlohmann::json j = parse_document_json(text, name);
        std::string out;
        json_lines(j, "", out, name);
        lf.docs.push_back({out, true});
    } else if (ext == ".jsonl") {
        lf.loader = "JSONLinesLoader";
        std::istringstream in(text);
        std::string line, all;
        size_t lineno = 0;
        while (std::getline(in, line)) {
            ++lineno;
            if (strip_ws(line).empty()) continue;
            nlohmann::json j = parse_document_json(line, name + ":" + std::to_string(lineno));
            std::string rec;
            json_lines(j, "", rec, name);
            if (!all.empty()) all += "\n\n";
            all += rec;
            check_text_budget(name, all.size());
        }
        lf.docs.push_back({all, true});
    } else if (ext == ".csv") {
        lf.loader = "CSVLoader";
        auto rows = parse_csv(text);
        if (!rows.empty()) {
            const auto& header = rows[0];
            size_t total = 0;
            for (size_t r = 1; r < rows.size(); ++r) {
                std::string doc;
                for (size_t c = 0; c < header.size(); ++c) {
                    if (!doc.empty()) doc += '\n';
                    doc += strip_ws(header[c]) + ": " + (c < rows[r].size() ? strip_ws(rows[r][c]) : "None");
                    check_text_budget(name, total + doc.size());   // every row repeats the header's names
                }
                if (rows[r].size() > header.size())
                    lf.warnings.push_back("row " + std::to_string(r + 1) + " has more fields than the header");
                total += doc.size();
                lf.docs.push_back({doc, false});
            }
        }
    }
    bool empty = true;
    for (auto& d : lf.docs) if (!strip_ws(d.text).empty()) { empty = false; break; }
    if (empty) lf.warnings.push_back("no text found");
    return lf;
}

LoadedFile load_file(const std::string& path) {
    std::error_code ec;
    auto size = fs::file_size(path, ec);
    if (!ec) check_file_size(path, size);   // before reading it into memory
    return load_bytes(path, read_file(path));
}

}  // namespace pdsd::kb
