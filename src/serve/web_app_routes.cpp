// The web page's routes: conversations, feedback, vendored files (web_app_routes.h).
#include "web_app_routes.h"

#include "serve_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <cstddef>
#include <optional>

// share/web/vendor/*, embedded at build time (cmake/embed_file.cmake; symbol names made by
// CMake's string(MAKE_C_IDENTIFIER) from "pdsd_web_vendor_<file>").
extern "C" const unsigned char pdsd_web_vendor_marked_min_js[];
extern "C" const size_t pdsd_web_vendor_marked_min_js_size;
extern "C" const unsigned char pdsd_web_vendor_purify_min_js[];
extern "C" const size_t pdsd_web_vendor_purify_min_js_size;
extern "C" const unsigned char pdsd_web_vendor_highlight_min_js[];
extern "C" const size_t pdsd_web_vendor_highlight_min_js_size;
extern "C" const unsigned char pdsd_web_vendor_highlight_github_css[];
extern "C" const size_t pdsd_web_vendor_highlight_github_css_size;

namespace pdsd::serve {

using json = nlohmann::json;

namespace {

struct VendorFile {
    const char* path;
    const char* content_type;
    const unsigned char* data;
    const size_t& size;
};
const VendorFile kVendor[] = {
    {"/vendor/marked.min.js", "application/javascript; charset=utf-8", pdsd_web_vendor_marked_min_js, pdsd_web_vendor_marked_min_js_size},
    {"/vendor/purify.min.js", "application/javascript; charset=utf-8", pdsd_web_vendor_purify_min_js, pdsd_web_vendor_purify_min_js_size},
    {"/vendor/highlight.min.js", "application/javascript; charset=utf-8", pdsd_web_vendor_highlight_min_js, pdsd_web_vendor_highlight_min_js_size},
    {"/vendor/highlight-github.css", "text/css; charset=utf-8", pdsd_web_vendor_highlight_github_css, pdsd_web_vendor_highlight_github_css_size},
};

// A string field; nullopt when absent or null, UsageError naming it when it is not a string.
std::optional<std::string> opt_string(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw UsageError(ErrorInfo{}.at(key).msg("wrong type").expected("a string").found(it->type_name()));
    return it->get<std::string>();
}
std::string need_string(const json& body, const char* key) {
    auto v = opt_string(body, key);
    if (!v || v->empty()) throw UsageError(ErrorInfo{}.at(key).msg("'" + std::string(key) + "' is required"));
    return *v;
}
std::string need_param(const httplib::Request& req, const char* key) {
    std::string v = req.get_param_value(key);
    if (v.empty()) throw UsageError(ErrorInfo{}.at(key).msg("query parameter '" + std::string(key) + "' is required"));
    return v;
}

// A file name for Content-Disposition: the conversation name without quotes or controls.
std::string download_name(const std::string& name) {
    std::string out;
    for (char c : name) out += (c == '"' || c == '\\' || c == '/' || static_cast<unsigned char>(c) < 0x20) ? '_' : c;
    return (out.empty() ? std::string("conversation") : out) + ".md";
}

// The name of a conversation its first query starts: that query's first 20 characters on one line.
std::string title_of(const std::string& query) {
    constexpr size_t kChars = 20;
    std::string out;
    size_t chars = 0;
    for (unsigned char c : query) {
        if ((c & 0xC0) != 0x80 && ++chars > kChars) break;   // a byte that starts a code point
        out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : static_cast<char>(c);
    }
    return out.find_first_not_of(' ') == std::string::npos ? std::string("新对话") : out;
}

}  // namespace

ConversationStore& WebApp::store() {
    std::lock_guard<std::mutex> lk(open_mu_);
    if (!store_) store_ = std::make_unique<ConversationStore>(root_);
    return *store_;
}

bool WebApp::is_public_path(const std::string& path) {
    for (auto& f : kVendor)
        if (path == f.path) return true;
    return false;
}

std::string WebApp::begin_turn(const json& body, const std::string& chat_type, const std::string& query, const json& meta_data) {
    std::optional<std::string> cid = opt_string(body, "conversation_id");
    if (!cid || cid->empty()) return "";
    store().adopt(*cid, title_of(query), chat_type);   // a Chatchat client's own id starts a conversation
    return store().add_message(*cid, chat_type, query, meta_data).id;
}

void WebApp::end_turn(const std::string& message_id, const std::string& response) {
    if (message_id.empty()) return;
    try {
        store().set_response(message_id, response);
    } catch (const std::exception& e) {
        log::warn(kComp, "answer not stored: " + std::string(e.what()));
    }
}

void WebApp::add_routes(const AddRoute& get, const AddRoute& post) {
    for (auto& f : kVendor) {
        get(f.path, [&f](const httplib::Request&, httplib::Response& res) {
            res.set_header("Cache-Control", "max-age=86400");
            res.set_content(reinterpret_cast<const char*>(f.data), f.size, f.content_type);
        });
    }
    get("/chat/conversations", [this](const httplib::Request&, httplib::Response& res) {
        json data = json::array();
        for (auto& c : store().list()) data.push_back(to_json(c));
        page_reply(res, "success", data);
    });
    post("/chat/conversations/create", [this](const httplib::Request& req, httplib::Response& res) {
        json body = page_body(req);
        std::string chat_type = opt_string(body, "chat_type").value_or("llm_chat");
        if (chat_type.empty() || utf8_chars(chat_type) > 50)
            throw UsageError(ErrorInfo{}.at("chat_type").msg("bad chat_type").expected("1..50 characters, e.g. llm_chat, kb_chat, file_chat"));
        page_reply(res, "已新建对话", to_json(store().create(opt_string(body, "name").value_or("新对话"), chat_type)));
    });
    post("/chat/conversations/rename", [this](const httplib::Request& req, httplib::Response& res) {
        json body = page_body(req);
        std::string id = need_string(body, "conversation_id");
        store().rename(id, need_string(body, "name"));
        page_reply(res, "已重命名对话 " + id, to_json(*store().get(id)));
    });
    post("/chat/conversations/delete", [this](const httplib::Request& req, httplib::Response& res) {
        std::string id = need_string(page_body(req), "conversation_id");
        store().remove(id);
        page_reply(res, "已删除对话 " + id, nullptr);
    });
    get("/chat/conversations/messages", [this](const httplib::Request& req, httplib::Response& res) {
        std::string id = need_param(req, "conversation_id");
        if (!store().get(id)) throw IoError(ErrorInfo{}.at("conversation_id").msg("no conversation '" + id + "'"));
        json data = json::array();
        for (auto& m : store().messages(id)) data.push_back(to_json(m));
        page_reply(res, "success", data);
    });
    post("/chat/conversations/truncate", [this](const httplib::Request& req, httplib::Response& res) {
        json body = page_body(req);
        size_t n = store().truncate_from(need_string(body, "conversation_id"), need_string(body, "message_id"));
        page_reply(res, "已删除 " + std::to_string(n) + " 条记录", {{"deleted", n}});
    });
    get("/chat/conversations/export", [this](const httplib::Request& req, httplib::Response& res) {
        std::string id = need_param(req, "conversation_id");
        std::string md = store().export_markdown(id);
        res.set_header("Content-Disposition", "attachment; filename=\"" + download_name(store().get(id)->name) + "\"");
        res.set_content(md, "text/markdown; charset=utf-8");
    });
    // Chatchat's chat_feedback: message_id (max 32), score (max 100), reason.
    post("/chat/feedback", [this](const httplib::Request& req, httplib::Response& res) {
        json body = page_body(req);
        std::string id = need_string(body, "message_id");
        auto s = body.find("score");
        if (s == body.end() || !s->is_number_integer())
            throw UsageError(ErrorInfo{}.at("score").msg("'score' is required").expected("an integer 0..100")
                                 .found(s == body.end() ? "nothing" : s->dump()));
        int64_t score = s->get<int64_t>();
        if (score < 0 || score > 100)
            throw UsageError(ErrorInfo{}.at("score").msg("feedback score out of range").expected("0..100").found(std::to_string(score)));
        store().feedback(id, static_cast<int>(score), opt_string(body, "reason").value_or(""));
        page_reply(res, "已反馈聊天记录 " + id, nullptr);
    });
}

}  // namespace pdsd::serve
