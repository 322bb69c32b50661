// See serve_util.h.
#include "serve_util.h"

#include "pdsd/core/error.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <random>
#include <sstream>

namespace pdsd::serve {

HttpError bad_request(const std::string& message, const std::string& param) { return {400, message, "invalid_request_error", param, ""}; }
HttpError kb_not_found(const std::string& name, const std::string& param) {
    return {404, "未找到知识库 " + name, "not_found_error", param, "kb_not_found"};
}

json error_json(const HttpError& e) {
    return {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

std::string now_id(const std::string& prefix) {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t salt = std::random_device{}();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%016llx%06llx", prefix.c_str(), static_cast<unsigned long long>(salt),
                  static_cast<unsigned long long>(counter++));
    return buf;
}

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const json* field(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
}

std::optional<std::string> get_string(const json& body, const char* key) {
    const json* v = field(body, key);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw bad_request(std::string("'") + key + "' must be a string", key);
    return v->get<std::string>();
}

std::string require_string(const json& body, const char* key) {
    auto v = get_string(body, key);
    if (!v) throw bad_request(std::string("'") + key + "' is required", key);
    return *v;
}

std::optional<double> get_number(const json& body, const char* key, double lo, double hi) {
    const json* v = field(body, key);
    if (!v) return std::nullopt;
    if (!v->is_number()) throw bad_request(std::string("'") + key + "' must be a number", key);
    double d = v->get<double>();
    if (!(d >= lo && d <= hi))
        throw bad_request(std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump(), key);
    return d;
}

std::optional<int64_t> get_int(const json& body, const char* key, int64_t lo, int64_t hi) {
    const json* v = field(body, key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) throw bad_request(std::string("'") + key + "' must be an integer", key);
    // Large unsigned values (e.g. a 64-bit seed) are taken as they are.
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        if (hi == INT64_MAX) return static_cast<int64_t>(v->get<uint64_t>());
        throw bad_request(std::string("'") + key + "' is too large", key);
    }
    int64_t i = v->get<int64_t>();
    if (i < lo || i > hi) throw bad_request(std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi), key);
    return i;
}

std::optional<bool> get_bool(const json& body, const char* key) {
    const json* v = field(body, key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw bad_request(std::string("'") + key + "' must be a boolean", key);
    return v->get<bool>();
}

bool form_bool(const std::string& v, const char* key) {
    if (v == "true" || v == "True" || v == "1") return true;
    if (v == "false" || v == "False" || v == "0" || v.empty()) return false;
    throw bad_request(std::string("'") + key + "' must be true or false", key);
}

std::string safe_relative_name(const std::string& name, const char* param) {
    auto reject = [&](const std::string& why) { return HttpError{400, "invalid file name '" + name + "': " + why, "invalid_request_error", param, "invalid_file_name"}; };
    if (name.empty()) throw reject("empty");
    if (name.size() > 1024) throw reject("too long");
    if (name.find('\0') != std::string::npos) throw reject("contains NUL");
    if (name.find('\\') != std::string::npos) throw reject("contains a backslash");
    if (name.front() == '/' || fs::path(name).is_absolute()) throw reject("absolute path");
    std::string out;
    size_t start = 0;
    while (start <= name.size()) {
        size_t end = name.find('/', start);
        if (end == std::string::npos) end = name.size();
        std::string part = name.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") throw reject("'" + part + "' component");
        // Linux file names are at most 255 bytes: a longer one fails at write time (was a 500).
        if (part.size() > 255) throw reject("a name component longer than 255 bytes");
        for (unsigned char c : part) {
            if (c < 0x20) throw reject("control character");
        }
        out += (out.empty() ? "" : "/") + part;
        start = end + 1;
    }
    return out;
}

void check_no_symlinks(const fs::path& content, const std::string& rel) {
    fs::path p = content;
    if (fs::is_symlink(p)) throw HttpError{400, "the knowledge base folder is a symlink", "invalid_request_error", "", "invalid_file_name"};
    for (auto& part : fs::path(rel)) {
        p /= part;
        std::error_code ec;
        if (fs::is_symlink(fs::symlink_status(p, ec)))
            throw HttpError{400, "invalid file name '" + rel + "': a path component is a symlink", "invalid_request_error", "", "invalid_file_name"};
    }
}

json page_body(const httplib::Request& req, const std::string& what, const std::string& hint) {
    if (req.body.size() > kMaxPageJsonBytes)
        throw UsageError(ErrorInfo{}.msg("request body too large").expected("at most " + std::to_string(kMaxPageJsonBytes) + " bytes")
                             .found(std::to_string(req.body.size()) + " bytes"));
    json j = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) throw UsageError(ErrorInfo{}.msg("the request body must be " + what).hint(hint));
    return j;
}

void page_reply(httplib::Response& res, const std::string& msg, const json& data, int status) {
    res.status = status;
    json j{{"code", status}, {"msg", msg}, {"data", data}};
    res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

bool path_inside(const fs::path& dir, const fs::path& p) {
    auto d = dir.lexically_normal().string(), q = p.lexically_normal().string();
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    return q == d || q.rfind(d + "/", 0) == 0;
}

std::string under_root(const std::string& root, const std::string& key, const std::string& p) {
    fs::path abs = fs::weakly_canonical(fs::path(p).is_absolute() ? fs::path(p) : fs::path(root) / p);
    if (!path_inside(fs::weakly_canonical(root), abs))
        throw UsageError(ErrorInfo{}.at(key).msg("path outside the server root").expected("a folder under " + root).found(p)
                             .hint("give a path relative to the server root (--root / $PDSD_ROOT)"));
    return abs.string();
}

std::optional<std::string> db_embed_model(const std::string& root, const std::string& name) {
    for (auto& k : kb::list_knowledge_bases(root)) {
        if (k.name == name && k.in_db) return k.embed_model.empty() ? std::string("none") : k.embed_model;
    }
    return std::nullopt;
}

std::string validate_kb(const std::string& kb, const char* param) {
    if (kb.empty() || kb == "." || kb == ".." || kb.find('/') != std::string::npos || kb.find('\\') != std::string::npos ||
        kb.find('\0') != std::string::npos || kb.size() > 255)
        throw HttpError{403, "Don't attack me: invalid knowledge base name '" + kb + "'", "permission_error", param, "invalid_kb_name"};
    return kb;
}

std::string base64(const void* data, size_t n) {
    static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const auto* p = static_cast<const unsigned char*>(data);
    std::string out;
    out.reserve((n + 2) / 3 * 4);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = static_cast<uint32_t>(p[i]) << 16;
        if (i + 1 < n) v |= static_cast<uint32_t>(p[i + 1]) << 8;
        if (i + 2 < n) v |= p[i + 2];
        out += tbl[(v >> 18) & 63];
        out += tbl[(v >> 12) & 63];
        out += i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out += i + 2 < n ? tbl[v & 63] : '=';
    }
    return out;
}

std::string sse(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

std::string no_reference_notice() { return std::string("<span style='color:red'>") + rag::kNoReference + "</span>"; }

std::vector<std::string> split_events(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < s.size()) {
        size_t end = s.find("\n\n", start);
        end = end == std::string::npos ? s.size() : end + 2;
        out.push_back(s.substr(start, end - start));
        start = end;
    }
    return out;
}

std::string sse_ping() {
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
    return std::string(": ping - ") + buf + "\r\n\r\n";
}

double chatchat_distance(const kb::SearchHit& h) {
    if (h.cosine) return 2.0 - 2.0 * *h.cosine;
    return 2.0 / (1.0 + std::max(0.0, h.bm25.value_or(h.score)));
}

double pdsd_threshold(double chatchat_threshold, const std::string& mode) {
    if (mode == "bm25") return chatchat_threshold <= 0 ? std::numeric_limits<double>::max() : 2.0 / chatchat_threshold - 1.0;
    return 1.0 - chatchat_threshold / 2.0;
}

thread_local std::chrono::steady_clock::time_point t_request_start;

}  // namespace pdsd::serve
