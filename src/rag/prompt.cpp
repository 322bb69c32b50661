#include "pdsd/rag/prompt.h"

namespace pdsd::rag {

namespace {
// Calls on_var(begin, end, name) for each "{{ name }}" of `tpl` (name: letters, digits, '_').
template <class F>
void scan_variables(const std::string& tpl, F on_var) {
    for (size_t pos = tpl.find("{{"); pos != std::string::npos; pos = tpl.find("{{", pos + 2)) {
        const size_t close = tpl.find("}}", pos + 2);
        if (close == std::string::npos) return;
        const std::string inner = tpl.substr(pos + 2, close - pos - 2);
        const size_t b = inner.find_first_not_of(" \t"), e = inner.find_last_not_of(" \t");
        if (b == std::string::npos) continue;
        const std::string name = inner.substr(b, e - b + 1);
        if (name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != std::string::npos) continue;
        on_var(pos, close + 2, name);
    }
}

std::string fill(const std::string& tpl, const std::string& context, const std::string& question) {
    return render_template(tpl, {{"context", context}, {"question", question}});
}
}  // namespace

std::vector<std::string> template_variables(const std::string& tpl) {
    std::vector<std::string> out;
    scan_variables(tpl, [&](size_t, size_t, const std::string& name) { out.push_back(name); });
    return out;
}

std::string render_template(const std::string& tpl, const std::map<std::string, std::string>& vars) {
    std::string out;
    size_t done = 0;   // tpl[0, done) is in `out`
    scan_variables(tpl, [&](size_t begin, size_t end, const std::string& name) {
        auto it = vars.find(name);
        if (it == vars.end()) return;
        out.append(tpl, done, begin - done);
        out += it->second;
        done = end;
    });
    return out.append(tpl, done, std::string::npos);
}

std::string build_user_message(const std::string& question, const std::vector<kb::SearchHit>& hits,
                               const PromptTemplates& templates) {
    std::string context;
    int n = 0;
    for (const auto& h : hits) {
        if (!h.kept) continue;
        if (!context.empty()) context += "\n\n";
        context += "[" + std::to_string(++n) + "] " + h.text;
    }
    if (n == 0) return fill(templates.without_context, "", question);
    return fill(templates.with_context, context, question);
}

RagTurn retrieve(const kb::KnowledgeBase& kb, const std::string& question, const kb::SearchOptions& search,
                 const PromptTemplates& templates) {
    RagTurn turn;
    for (auto& h : kb.search(question, search)) {
        if (h.kept) turn.sources.push_back(std::move(h));
    }
    turn.user_message = build_user_message(question, turn.sources, templates);
    return turn;
}

namespace {
// Python's urllib.parse.quote_plus, which urlencode applies to keys and values: ASCII letters,
// digits and "_.-~" stay, a space becomes "+", every other byte %XX (upper-case hex).
std::string quote_plus(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        const bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (alnum || c == '_' || c == '.' || c == '-' || c == '~') {
            out += static_cast<char>(c);
        } else if (c == ' ') {
            out += '+';
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// Python's str.strip(" /").
std::string strip_slashes(const std::string& s) {
    const size_t b = s.find_first_not_of(" /");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" /") - b + 1);
}

std::string download_url(const ReferenceLink& link, const std::string& file_name) {
    return strip_slashes(link.api_base) + "/knowledge_base/download_doc?knowledge_base_name=" + quote_plus(link.kb_name) +
           "&file_name=" + quote_plus(file_name);
}
}  // namespace

std::vector<std::string> format_reference(const std::vector<kb::SearchHit>& hits, const std::optional<ReferenceLink>& link,
                                          bool with_text) {
    std::vector<std::string> refs;
    for (const auto& h : hits) {
        if (!h.kept) continue;
        std::string ref = "出处 [" + std::to_string(refs.size() + 1) + "] [" + h.file_name + "]";
        if (link) ref += "(" + download_url(*link, h.file_name) + ")";
        if (with_text) ref += " \n\n" + h.text + "\n\n";
        refs.push_back(std::move(ref));
    }
    return refs;
}

std::string reference_text(const std::vector<kb::SearchHit>& hits, bool with_text) {
    std::string out;
    for (const auto& ref : format_reference(hits, std::nullopt, with_text)) out += with_text ? ref : ref + "\n";
    return out.empty() ? std::string(kNoReference) + "\n" : out;
}

}  // namespace pdsd::rag
