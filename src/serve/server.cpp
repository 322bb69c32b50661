// `pdsd serve`: routes, auth, errors, metrics; see server.h and docs/serve.md.
#include "pdsd/serve/server.h"

#include "generation_queue.h"
#include "http_front.h"
#include "rerank_route.h"
#include "train_routes.h"
#include "web_app_routes.h"

#include "pdsd/chat/model_loader.h"
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt.h"
#include "pdsd/rag/retriever.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <limits>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <optional>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <thread>


// share/web/index.html, embedded at build time (cmake/embed_file.cmake).
extern "C" const unsigned char pdsd_web_index_html[];
extern "C" const size_t pdsd_web_index_html_size;

namespace pdsd::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kComp = "serve";

// An error answered to the client: status + OpenAI's error object.
struct HttpError {
    int status;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;   // "" -> null
    std::string code;    // "" -> null
};

HttpError bad_request(const std::string& message, const std::string& param = "") { return {400, message, "invalid_request_error", param, ""}; }

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

// ---- typed JSON access: wrong types are 400s naming the field --------------------------------

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

// "true"/"false"/"1"/"0" form fields (multipart).
bool form_bool(const std::string& v, const char* key) {
    if (v == "true" || v == "True" || v == "1") return true;
    if (v == "false" || v == "False" || v == "0" || v.empty()) return false;
    throw bad_request(std::string("'") + key + "' must be true or false", key);
}

// A file name relative to a KB's content/ folder: no NUL, no absolute path, no '..' or '.'
// component, no backslash, no empty component. Returns the normalised '/'-separated form.
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

// `rel` inside `content`: every existing component must be a real directory/file, not a
// symlink (a symlink could point outside the knowledge base).
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

// The embed model of knowledge base `name` as recorded in info.db ("none" = BM25 only), or
// nothing when the database does not know it (a bare folder is not a knowledge base here).
std::optional<std::string> db_embed_model(const std::string& root, const std::string& name) {
    for (auto& k : kb::list_knowledge_bases(root)) {
        if (k.name == name && k.in_db) return k.embed_model.empty() ? std::string("none") : k.embed_model;
    }
    return std::nullopt;
}

std::string validate_kb(const std::string& kb, const char* param = "knowledge_base_name") {
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

// Chatchat's "docs" entry of a kb_chat / file_chat answer that found no source.
std::string no_reference_notice() { return std::string("<span style='color:red'>") + rag::kNoReference + "</span>"; }

// The SSE events of `s` ("...\n\n" each), so each can go out in its own write.
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

// sse_starlette's keep-alive comment (Chatchat's server sends one every 15 s of silence).
constexpr int kPingSeconds = 15;
std::string sse_ping() {
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
    return std::string(": ping - ") + buf + "\r\n\r\n";
}

// ---- Chatchat's score scale ------------------------------------------------------------------
// Chatchat's FAISS store returns the squared L2 distance of unit vectors, 2 - 2*cos (0 = same
// direction, 2 = orthogonal), and keeps hits with distance <= score_threshold (0..2, default
// 2.0). pdsd's scores are higher-is-better (knowledge_base.h). On the Chatchat routes:
//   dense / hybrid   distance = 2 - 2*cos                   threshold t -> cos >= 1 - t/2
//   bm25             distance = 2 / (1 + s), s = -bm25()    threshold t -> s >= 2/t - 1
// so t = 2.0 gives pdsd's default thresholds (cos >= 0, s >= 0): Chatchat's client default
// returns what `pdsd kb search` returns. docs/serve.md has the table.
double chatchat_distance(const kb::SearchHit& h) {
    if (h.cosine) return 2.0 - 2.0 * *h.cosine;
    return 2.0 / (1.0 + std::max(0.0, h.bm25.value_or(h.score)));
}
double pdsd_threshold(double chatchat_threshold, const std::string& mode) {
    if (mode == "bm25") return chatchat_threshold <= 0 ? std::numeric_limits<double>::max() : 2.0 / chatchat_threshold - 1.0;
    return 1.0 - chatchat_threshold / 2.0;
}

// ---- metrics ---------------------------------------------------------------------------------

const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

struct Histogram {
    std::vector<uint64_t> counts = std::vector<uint64_t>(kBuckets.size(), 0);
    uint64_t count = 0;
    double sum = 0;
    void observe(double s) {
        for (size_t i = 0; i < kBuckets.size(); ++i)
            if (s <= kBuckets[i]) counts[i]++;
        count++;
        sum += s;
    }
};

struct Metrics {
    std::mutex mu;
    std::map<std::pair<std::string, int>, uint64_t> requests;
    std::map<std::string, Histogram> latency;
    Histogram ttft;
};

thread_local std::chrono::steady_clock::time_point t_request_start;

// The routes live on httplib; the sockets belong to HttpFront, which hands each complete
// request to process_request through its own Stream.
class HttpServer : public httplib::Server {
public:
    // httplib ends chunked responses (our SSE streams) when its listening socket is invalid;
    // it never listens here, so a placeholder that is never a real descriptor marks "running"
    // until shutting_down().
    HttpServer() { svr_sock_ = std::numeric_limits<int>::max(); }
    void shutting_down() { svr_sock_ = INVALID_SOCKET; }
    bool handle(httplib::Stream& strm, bool close, bool& closed) { return process_request(strm, close, closed, nullptr); }
};

}  // namespace

// ---- the server ------------------------------------------------------------------------------

struct Server::Impl {
    ServeOptions o;
    std::string root;
    std::string model_id;
    std::unique_ptr<tokenizer::Tokenizer> tok;
    std::unique_ptr<model::Generator> gen;
    QueueStats stats;
    std::unique_ptr<GenerationQueue> queue;
    std::shared_ptr<kb::Embedder> embedder;   // /v1/embeddings and dense KB search (thread-safe: the Retriever's wrapper)
    std::shared_ptr<kb::Reranker> reranker;   // /v1/rerank and the KB routes' rerank stage (null: off)
    std::shared_mutex kb_mu;                  // searches shared, KB changes exclusive
    HttpServer http;
    std::unique_ptr<HttpFront> front;         // the public socket (http_front.h)
    std::unique_ptr<WebApp> web;              // the page's conversations, feedback, vendored files
    std::unique_ptr<TrainRoutes> train;       // the page's Training / Export tabs (child pdsd train / export)
    Metrics metrics;
    std::set<std::string> routes;
    int port = 0;
    std::atomic<bool> stopping{false};
    const int64_t created = unix_now();

    std::string embed_spec;                   // the server's embed model ("none": BM25 only)
    std::string embed_spec_path;              // the same, a name under <root>/models made a path
    // Every KB read route gets its KB, embedder and kb_settings.yaml here (opened once,
    // reopened when written; readers do not wait on each other: rag/retriever.h).
    rag::Retriever retriever;
    // File chat (Chatchat's temp_kb): id -> its own data root <root>/temp/<id>, oldest first.
    std::vector<std::pair<std::string, std::string>> temp_kbs;
    static constexpr size_t kMaxTempKbs = 64;

    explicit Impl(ServeOptions opts) : o(std::move(opts)) {
        root = kb::resolve_root(o.root);
        // The model `pdsd chat` would load, by the same loader (checks included).
        chat::ChatModel cm = chat::load_chat_model({root, o.model_dir, o.adapter_dir, o.device, o.dtype, o.quant});
        o.model_dir = cm.dir;
        tok = std::move(cm.tokenizer);
        gen = std::move(cm.generator);
        if (!o.model_dir.empty()) {
            model_id = !o.model_name.empty() ? o.model_name : fs::path(o.model_dir).lexically_normal().filename().string();
            if (model_id.empty()) model_id = fs::path(o.model_dir).lexically_normal().parent_path().filename().string();
            queue = std::make_unique<GenerationQueue>(gen.get(), tok.get(), o.queue_size, o.max_batch, &stats);
        }
        // -e NAME resolves as `kb -r -e NAME` does (a folder, a name under <root>/models, ...).
        embed_spec = !o.embed_model.empty() ? o.embed_model : kb::load_kb_settings(root).embed_model;
        embedder = std::shared_ptr<kb::Embedder>(kb::open_embed_model(root, embed_spec));
        if (!embedder) embed_spec = "none";
        reranker = kb::make_search_options(root, kb::load_kb_settings(root),
                                           {{}, {}, {}, {}, {}, o.rerank_model.empty() ? std::nullopt : std::optional(o.rerank_model)}).reranker;
        // Temp KBs have their own data root: give them the model as a path, not a name.
        std::error_code ec;
        fs::path under_root = fs::path(root) / "models" / embed_spec;
        embed_spec_path = embedder && fs::path(embed_spec).is_relative() && !fs::is_directory(embed_spec, ec) && fs::is_directory(under_root, ec)
                              ? fs::absolute(under_root).lexically_normal().string() : embed_spec;
        // KBs stored with this model (by its spec, path or name) search with the server's copy.
        if (embedder) embedder = retriever.add_embedder({embed_spec, embed_spec_path, embedder->name()}, embedder);
        setup();
    }
    ~Impl() {
        std::error_code ec;
        for (auto& [id, dir] : temp_kbs) fs::remove_all(dir, ec);   // Chatchat's temp KBs live as long as the server
    }

    // ---- plumbing ----

    void reply_error(httplib::Response& res, const HttpError& e, bool chatchat = false) {
        res.status = e.status;
        json j = error_json(e);
        if (chatchat) {  // Chatchat's BaseResponse fields beside OpenAI's error object
            j["code"] = e.status;
            j["msg"] = e.message;
            j["data"] = nullptr;
        }
        if (e.status == 429) res.set_header("Retry-After", std::to_string(o.retry_after_s));
        res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    }

    void reply_json(httplib::Response& res, const json& j, int status = 200) {
        res.status = status;
        res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    }

    json parse_json_body(const httplib::Request& req) {
        if (req.body.size() > o.max_json_bytes)
            throw HttpError{413, "request body of " + std::to_string(req.body.size()) + " bytes exceeds the JSON limit of " +
                                     std::to_string(o.max_json_bytes), "request_too_large", "", ""};
        json j = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) throw bad_request("the request body is not valid JSON");
        return j;
    }
    json parse_json_object(const httplib::Request& req) {
        json j = parse_json_body(req);
        if (!j.is_object()) throw bad_request("the request body must be a JSON object");
        return j;
    }

    // Wraps a handler: HttpError and pdsd errors become JSON errors, nothing escapes.
    using Fn = std::function<void(const httplib::Request&, httplib::Response&)>;
    httplib::Server::Handler wrap(Fn fn, bool chatchat = false) {
        return [this, fn = std::move(fn), chatchat](const httplib::Request& req, httplib::Response& res) {
            try {
                fn(req, res);
            } catch (const HttpError& e) {
                reply_error(res, e, chatchat);
            } catch (const UsageError& e) {
                reply_error(res, HttpError{400, e.what(), "invalid_request_error", "", ""}, chatchat);
            } catch (const IoError& e) {
                reply_error(res, HttpError{404, e.what(), "not_found_error", "", ""}, chatchat);
            } catch (const InternalError& e) {
                reply_error(res, HttpError{500, e.what(), "server_error", "", ""}, chatchat);
            } catch (const Error& e) {
                reply_error(res, HttpError{400, e.what(), "invalid_request_error", "", ""}, chatchat);
            } catch (const std::exception& e) {
                log::error(kComp, log::cat(req.method, " ", req.path, ": ", e.what()));
                reply_error(res, HttpError{500, std::string("internal error: ") + e.what(), "server_error", "", ""}, chatchat);
            }
        };
    }
    void get(const std::string& path, Fn fn, bool chatchat = false) {
        routes.insert(path);
        http.Get(path, wrap(std::move(fn), chatchat));
    }
    void post(const std::string& path, Fn fn, bool chatchat = false) {
        routes.insert(path);
        http.Post(path, wrap(std::move(fn), chatchat));
    }

    void setup();
    void setup_chatchat();   // Chatchat's web-UI routes beyond the KB API (chat, temp KBs, server info)
    void chat_completions(const httplib::Request& req, httplib::Response& res, bool chatchat = false);
    void kb_chat(const httplib::Request& req, httplib::Response& res);
    void kb_chat_run(json body, httplib::Response& res, const std::string& base);
    void kb_chat_openai(const httplib::Request& req, httplib::Response& res);
    void upload_temp_docs(const httplib::Request& req, httplib::Response& res);
    void file_chat(const httplib::Request& req, httplib::Response& res);
    void update_docs(const httplib::Request& req, httplib::Response& res);
    void embeddings(const httplib::Request& req, httplib::Response& res);
    void upload_docs(const httplib::Request& req, httplib::Response& res);
    std::string metrics_text();

    // Search options of a Chatchat route: top_k, search_mode, and score_threshold on Chatchat's
    // 0..2 scale (see chatchat_distance); pdsd_score_threshold gives pdsd's own instead.
    kb::SearchOptions chatchat_search_options(const json& body, const std::string& settings_root) {
        kb::KbSettings st = retriever.settings(settings_root);
        kb::SearchOverrides ov{get_int(body, "top_k", 1, 1000), {}, {}, get_string(body, "search_mode"), {}, std::string("none")};
        if (auto p = get_number(body, "pdsd_score_threshold", -1e9, 1e9)) ov.score_threshold = *p;
        else if (auto t = get_number(body, "score_threshold", 0.0, 2.0)) ov.score_threshold = pdsd_threshold(*t, ov.mode.value_or(st.search_mode));
        kb::SearchOptions so = kb::make_search_options(settings_root, st, ov);
        so.reranker = reranker;   // the server's (--rerank-model, else the root's kb_settings.yaml)
        return so;
    }

    // "http://host:port" as the client addressed us (Chatchat's api_address for links).
    std::string base_url(const httplib::Request& req) const {
        std::string host = req.get_header_value("Host");
        if (host.empty() || host.find_first_of(" /\\\"<>") != std::string::npos) return "http://" + o.host + ":" + std::to_string(port);
        return "http://" + host;
    }

    // SSE body of complete events, each in its own write (one HTTP chunk each): Chatchat's
    // ApiRequest parses one "data: {...}" per read, so frames must never share a chunk.
    void reply_sse(httplib::Response& res, std::vector<std::string> events) {
        res.set_header("Cache-Control", "no-cache");
        res.set_header("X-Accel-Buffering", "no");
        auto ev = std::make_shared<std::vector<std::string>>(std::move(events));
        res.set_chunked_content_provider("text/event-stream", [ev](size_t, httplib::DataSink& sink) {
            for (auto& e : *ev)
                if (!sink.write(e.data(), e.size())) return false;
            sink.done();
            return true;
        });
    }

    // The data root of temp KB `id` (Chatchat's knowledge_id); 404 when unknown.
    std::string temp_root(const std::string& id) {
        for (auto& [k, dir] : temp_kbs)
            if (k == id) return dir;
        throw HttpError{404, "未找到临时知识库 " + id + "，请先上传文件 (upload_temp_docs)", "not_found_error", "knowledge_id", "kb_not_found"};
    }

    void require_model() {
        if (!gen) throw HttpError{503, "no chat model is loaded (start pdsd serve with --model DIR)", "service_unavailable", "model", "model_not_loaded"};
    }

    // Knowledge base `name` under data root `kb_root` (the server's root or a temp KB's),
    // from the Retriever; 404 when info.db does not know it. Call under kb_mu (shared).
    std::shared_ptr<const kb::KnowledgeBase> open_kb(const std::string& kb_root, const std::string& name, const char* param) {
        try {
            return retriever.get(kb_root, name);
        } catch (const DataError&) {   // KnowledgeBase: "not in the database"
            throw HttpError{404, "未找到知识库 " + name, "not_found_error", param, "kb_not_found"};
        }
    }
    // The embed model to build a KB with: the request's, else the server's.
    std::string embed_for_new_kb(const std::string& requested) const { return !requested.empty() ? requested : embed_spec; }

    // Sampling options of a chat request (OpenAI's fields).
    void parse_sampling(const json& body, GenJob& job) {
        auto& g = job.options;
        if (auto t = get_number(body, "temperature", 0.0, 2.0)) {
            if (*t == 0.0) g.do_sample = false;   // temperature 0 = greedy
            else {
                g.do_sample = true;
                g.temperature = *t;
            }
        }
        if (auto p = get_number(body, "top_p", 0.0, 1.0)) {
            if (*p <= 0.0) throw bad_request("'top_p' must be greater than 0", "top_p");
            g.top_p = *p;
        }
        std::optional<int64_t> max = get_int(body, "max_tokens", 1, 1 << 20);
        if (auto m2 = get_int(body, "max_completion_tokens", 1, 1 << 20)) max = m2;
        if (max) g.max_new_tokens = *max;
        if (auto s = get_int(body, "seed", INT64_MIN, INT64_MAX)) g.seed = static_cast<uint64_t>(*s);
        if (auto n = get_int(body, "n", 1, 1); n && *n != 1) throw bad_request("only n = 1 is supported", "n");
        if (const json* s = field(body, "stop")) {
            if (s->is_string()) job.stop.push_back(s->get<std::string>());
            else if (s->is_array()) {
                if (s->size() > 16) throw bad_request("'stop' has more than 16 strings", "stop");
                for (auto& x : *s) {
                    if (!x.is_string()) throw bad_request("'stop' must be a string or an array of strings", "stop");
                    job.stop.push_back(x.get<std::string>());
                }
            } else throw bad_request("'stop' must be a string or an array of strings", "stop");
            job.stop.erase(std::remove(job.stop.begin(), job.stop.end(), std::string()), job.stop.end());
        }
    }

    static std::string message_content(const json& m, size_t i, const std::string& role) {
        const std::string where = "messages[" + std::to_string(i) + "].content";
        auto it = m.find("content");
        // OpenAI allows a null content only on assistant turns (tool calls); a user or system
        // turn without text is a client bug, not an empty prompt.
        if (it == m.end() || it->is_null()) {
            if (role == "assistant") return "";
            throw bad_request("'" + where + "' is missing or null (a " + role + " message needs text)", where);
        }
        if (it->is_string()) return it->get<std::string>();
        if (it->is_array()) {  // [{"type":"text","text":"..."}]
            std::string s;
            for (auto& part : *it) {
                if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
                    throw bad_request("only text content parts are supported", where);
                s += part["text"].get<std::string>();
            }
            return s;
        }
        throw bad_request("'" + where + "' must be a string or an array of text parts", where);
    }

    std::vector<tokenizer::ChatMessage> parse_messages(const json& arr, const char* key, bool need_user_last) {
        if (!arr.is_array()) throw bad_request(std::string("'") + key + "' must be an array", key);
        std::vector<tokenizer::ChatMessage> out;
        for (size_t i = 0; i < arr.size(); ++i) {
            const json& m = arr[i];
            if (!m.is_object()) throw bad_request(std::string("'") + key + "[" + std::to_string(i) + "]' must be an object", key);
            auto role = m.find("role");
            if (role == m.end() || !role->is_string()) throw bad_request(std::string("'") + key + "[" + std::to_string(i) + "].role' must be a string", key);
            std::string r = role->get<std::string>();
            if (r != "system" && r != "user" && r != "assistant")
                throw bad_request("unsupported role '" + r + "' (system, user, assistant)", key);
            out.push_back({r, message_content(m, i, r)});
        }
        if (need_user_last && (out.empty() || out.back().role != "user"))
            throw bad_request(std::string("'") + key + "' must end with a user message", key);
        return out;
    }

    // Submit, or throw 429 when the queue is full.
    void submit(const std::shared_ptr<GenJob>& job) {
        if (!queue->try_submit(job))
            throw HttpError{429, "the server is busy: " + std::to_string(o.queue_size) + " generation requests are queued; retry later",
                            "rate_limit_error", "", "queue_full"};
    }

    void observe_ttft(const GenJob& job) {
        if (!job.has_first_token) return;
        std::lock_guard<std::mutex> lk(metrics.mu);
        metrics.ttft.observe(std::chrono::duration<double>(job.first_token - job.submitted).count());
    }

    // Streams `job` as SSE: `head` frames first, then one frame per piece (`piece_frame`),
    // then `tail` (called after the job finished; returns the closing frames).
    void stream_job(httplib::Response& res, std::shared_ptr<GenJob> job, std::string head,
                    std::function<std::string(const std::string&)> piece_frame, std::function<std::string(const GenJob&)> tail) {
        res.set_header("Cache-Control", "no-cache");
        res.set_header("X-Accel-Buffering", "no");
        auto provide = [this, job, head = std::move(head), piece_frame, tail](httplib::DataSink& sink) {
            auto last_write = std::chrono::steady_clock::now();
            // One write per SSE event: clients that read one event per chunk see every frame.
            auto write = [&](const std::string& s) {
                for (auto& e : split_events(s)) {
                    if (!sink.write(e.data(), e.size())) {
                        job->cancelled = true;   // the client went away: stop generating
                        return false;
                    }
                }
                last_write = std::chrono::steady_clock::now();
                return true;
            };
            if (!write(head)) return false;
            std::string piece;
            while (true) {
                bool timed_out = false;
                if (job->next_piece(piece, std::chrono::milliseconds(200), timed_out)) {
                    if (!write(piece_frame(piece))) return false;
                    continue;
                }
                if (timed_out) {
                    if (stopping || !sink.is_writable()) {
                        job->cancelled = true;
                        return false;
                    }
                    // keep-alive while queued or prefilling, as sse_starlette does
                    if (std::chrono::steady_clock::now() - last_write >= std::chrono::seconds(kPingSeconds) && !write(sse_ping()))
                        return false;
                    continue;
                }
                break;  // finished, no piece left
            }
            observe_ttft(*job);
            if (!write(tail(*job))) return false;
            sink.done();
            return true;
        };
        res.set_chunked_content_provider(
            "text/event-stream",
            [job, provide](size_t, httplib::DataSink& sink) {
                // Nothing may escape a content provider (httplib would not catch it).
                try {
                    return provide(sink);
                } catch (const std::exception& e) {
                    log::error(kComp, std::string("stream failed: ") + e.what());
                    job->cancelled = true;
                    return false;
                }
            },
            [job](bool) { job->cancelled = true; });   // released (also on success: the job is done then)
    }
};

void Server::Impl::setup() {
    // Timeouts, connection caps and the body limit of every transfer encoding are HttpFront's;
    // these keep httplib's own checks and its Keep-Alive header in line with it.
    http.set_payload_max_length(o.max_upload_bytes);
    http.set_keep_alive_timeout(5);
    http.set_keep_alive_max_count(100);

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
        t_request_start = std::chrono::steady_clock::now();
        if (o.api_key.empty() || req.path == "/health" || req.path == "/" || req.path == "/index.html" || WebApp::is_public_path(req.path))
            return httplib::Server::HandlerResponse::Unhandled;
        const std::string want = "Bearer " + o.api_key;
        std::string got = req.get_header_value("Authorization");
        // Constant-time compare (length leaks, content does not).
        bool ok = got.size() == want.size();
        unsigned char diff = 0;
        for (size_t i = 0; ok && i < want.size(); ++i) diff |= static_cast<unsigned char>(got[i] ^ want[i]);
        if (ok && diff == 0) return httplib::Server::HandlerResponse::Unhandled;
        reply_error(res, HttpError{401, got.empty() ? "missing API key: send 'Authorization: Bearer <key>'" : "incorrect API key provided",
                                   "authentication_error", "", "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
    });
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg = res.status == 404 ? "no route " + req.method + " " + req.path
                          : res.status == 413 ? "request body exceeds the limit of " + std::to_string(o.max_upload_bytes) + " bytes"
                          : res.status == 405 ? "method not allowed"
                                              : "request failed";
        reply_error(res, HttpError{res.status, msg, error_type(res.status), "", ""});
        return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        reply_error(res, HttpError{500, "internal error: " + what, "server_error", "", ""});
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
        // Requests refused before routing (413, malformed request line) never set the start time.
        const auto now = std::chrono::steady_clock::now();
        double s = t_request_start.time_since_epoch().count() == 0 ? 0.0 : std::chrono::duration<double>(now - t_request_start).count();
        t_request_start = {};
        std::string route = routes.count(req.path) ? req.path : "other";
        {
            std::lock_guard<std::mutex> lk(metrics.mu);
            metrics.requests[{route, res.status}]++;
            metrics.latency[route].observe(s);
        }
        log::debug(kComp, log::cat(req.remote_addr, " ", req.method, " ", req.path, " ", res.status, " ", static_cast<int64_t>(s * 1000), " ms"));
    });

    // ---- operations ----
    get("/health", [this](const httplib::Request&, httplib::Response& res) {
        reply_json(res, {{"status", "ok"}, {"model", gen ? json(model_id) : json(nullptr)},
                         {"queue_depth", queue ? queue->depth() : 0}});
    });
    get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    auto page = [](const httplib::Request&, httplib::Response& res) {
        res.set_content(reinterpret_cast<const char*>(pdsd_web_index_html), pdsd_web_index_html_size, "text/html; charset=utf-8");
    };
    get("/", page);
    get("/index.html", page);
    web = std::make_unique<WebApp>(root);
    web->add_routes([this](const std::string& p, WebApp::Fn fn) { get(p, std::move(fn), true); },
                    [this](const std::string& p, WebApp::Fn fn) { post(p, std::move(fn), true); });
    train = std::make_unique<TrainRoutes>(root);
    train->add_routes([this](const std::string& p, TrainRoutes::Fn fn) { get(p, std::move(fn), true); },
                      [this](const std::string& p, TrainRoutes::Fn fn) { post(p, std::move(fn), true); });

    // ---- OpenAI ----
    get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
        json data = json::array();
        if (gen) data.push_back({{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "pdsd"}});
        if (embedder) data.push_back({{"id", embedder->name()}, {"object", "model"}, {"created", created}, {"owned_by", "pdsd"}});
        reply_json(res, {{"object", "list"}, {"data", data}});
    });
    post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat_completions(req, res); });
    post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
    for (const char* path : {"/v1/rerank", "/rerank", "/v2/rerank"})   // Xinference / llama-server / Cohere (rerank_route.h)
        post(path, [this](const httplib::Request& req, httplib::Response& res) { reply_json(res, rerank_response(parse_json_object(req), reranker.get(), now_id("rerank-"))); });

    // ---- Chatchat knowledge-base API ----
    get("/knowledge_base/list_knowledge_bases", [this](const httplib::Request&, httplib::Response& res) {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        json data = json::array();
        int64_t id = 0;
        for (auto& k : kb::list_knowledge_bases(root)) {
            ++id;
            if (!k.in_db) continue;
            data.push_back({{"id", id}, {"kb_name", k.name}, {"kb_info", k.info}, {"vs_type", k.vs_type},
                            {"embed_model", k.embed_model}, {"file_count", k.file_count}, {"create_time", k.create_time},
                            {"chunk_count", k.chunk_count}});
        }
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", data}});
    }, true);
    post("/knowledge_base/create_knowledge_base", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string vs = get_string(body, "vector_store_type").value_or("faiss");
        if (vs != "faiss") throw bad_request("only vector_store_type 'faiss' is supported", "vector_store_type");
        std::string embed = get_string(body, "embed_model").value_or("");
        std::optional<std::string> info = get_string(body, "kb_info");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (db_embed_model(root, name)) throw HttpError{409, "已存在同名知识库 " + name, "invalid_request_error", "knowledge_base_name", "kb_exists"};
        kb::KbPaths paths{root};
        const bool existed = fs::exists(paths.kb_dir(name));
        try {
            fs::create_directories(paths.content_dir(name));
            kb::UpdateOptions u;
            u.kb_names = {name};
            u.mode = kb::UpdateMode::increment;
            u.embed_model = embed_for_new_kb(embed);
            u.progress = false;
            kb::update_knowledge_bases(root, u);
            if (info) kb::set_kb_info(root, name, *info);
        } catch (...) {
            // A failed create leaves nothing behind (a half-made folder would block the retry).
            std::error_code ec;
            if (!existed) fs::remove_all(paths.kb_dir(name), ec);
            throw;
        }
        reply_json(res, {{"code", 200}, {"msg", "已新增知识库 " + name}, {"data", nullptr}});
    }, true);
    post("/knowledge_base/delete_knowledge_base", [this](const httplib::Request& req, httplib::Response& res) {
        // Chatchat's body is the bare JSON string ("samples"); an object is accepted too.
        json body = parse_json_body(req);
        std::string name;
        if (body.is_string()) name = body.get<std::string>();
        else if (body.is_object()) name = require_string(body, "knowledge_base_name");
        else throw bad_request("the body must be the knowledge base name as a JSON string", "knowledge_base_name");
        validate_kb(name);
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (!kb::delete_knowledge_base(root, name)) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
        reply_json(res, {{"code", 200}, {"msg", "成功删除知识库 " + name}, {"data", nullptr}});
    }, true);
    get("/knowledge_base/list_files", [this](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("knowledge_base_name")) throw bad_request("'knowledge_base_name' is required", "knowledge_base_name");
        std::string name = validate_kb(req.get_param_value("knowledge_base_name"));
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        if (!db_embed_model(root, name)) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
        json data = json::array();
        int64_t no = 0;
        for (auto& f : kb::list_kb_files(root, name)) {
            data.push_back({{"No", ++no}, {"kb_name", name}, {"file_name", f.file_name}, {"file_ext", f.file_ext},
                            {"file_version", f.file_version}, {"document_loader", f.document_loader}, {"docs_count", f.docs_count},
                            {"text_splitter", f.text_splitter}, {"create_time", f.create_time.empty() ? json(nullptr) : json(f.create_time)},
                            {"in_folder", f.in_folder}, {"in_db", f.in_db}});
        }
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", data}});
    }, true);
    post("/knowledge_base/search_docs", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string query = get_string(body, "query").value_or("");
        kb::SearchOptions so = chatchat_search_options(body, root);
        get_string(body, "file_name");
        json data = json::array();
        if (!query.empty()) {
            std::shared_lock<std::shared_mutex> lk(kb_mu);
            std::vector<kb::SearchHit> hits = open_kb(root, name, "knowledge_base_name")->search(query, so);
            for (auto& h : hits) {
                if (!h.kept) continue;
                // "score": Chatchat's distance (lower is better); metadata.pdsd: pdsd's own scores.
                json own{{"score", h.score}, {"search_mode", so.mode}};
                if (h.bm25) own["bm25"] = *h.bm25;
                if (h.cosine) own["cosine"] = *h.cosine;
                if (h.rerank) own["rerank"] = *h.rerank;   // cross-encoder relevance (the hits are in its order)
                data.push_back({{"id", std::to_string(h.chunk_id)}, {"page_content", h.text}, {"type", "Document"},
                                {"metadata", {{"source", h.file_name}, {"chunk_index", h.chunk_index},
                                              {"start_char", h.start_char}, {"end_char", h.end_char}, {"pdsd", own}}},
                                {"score", chatchat_distance(h)}});
            }
        }
        reply_json(res, data);
    }, true);
    post("/knowledge_base/upload_docs", [this](const httplib::Request& req, httplib::Response& res) { upload_docs(req, res); }, true);
    post("/knowledge_base/delete_docs", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        const json* names = field(body, "file_names");
        if (!names || !names->is_array()) throw bad_request("'file_names' must be an array of strings", "file_names");
        std::vector<std::string> files;
        for (auto& n : *names) {
            if (!n.is_string()) throw bad_request("'file_names' must be an array of strings", "file_names");
            files.push_back(safe_relative_name(n.get<std::string>(), "file_names"));
        }
        get_bool(body, "delete_content");
        get_bool(body, "not_refresh_vs_cache");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        if (!fs::is_directory(paths.kb_dir(name))) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
        json failed = json::object();
        std::vector<std::string> existing;
        std::set<std::string> in_db;
        for (auto& f : kb::list_kb_files(root, name)) if (f.in_db || f.in_folder) in_db.insert(f.file_name);
        for (auto& f : files) {
            check_no_symlinks(paths.content_dir(name), f);
            if (!in_db.count(f)) failed[f] = "未找到文件 " + f;
            else existing.push_back(f);
        }
        if (!existing.empty()) {
            kb::UpdateOptions u;
            u.progress = false;
            for (auto& c : kb::remove_files(root, name, existing, u).files)
                if (c.action == "failed") failed[c.file] = c.note;
        }
        reply_json(res, {{"code", 200}, {"msg", "文件删除完成"}, {"data", {{"failed_files", failed}}}});
    }, true);
    post("/knowledge_base/recreate_vector_store", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        bool allow_empty = get_bool(body, "allow_empty_kb").value_or(true);
        std::string embed = get_string(body, "embed_model").value_or("");
        auto cs = get_int(body, "chunk_size", 1, 1 << 20);
        auto co = get_int(body, "chunk_overlap", 0, 1 << 20);
        get_string(body, "vs_type");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        if (!fs::is_directory(paths.content_dir(name))) {
            if (!allow_empty) throw HttpError{404, "未找到知识库 '" + name + "'", "not_found_error", "knowledge_base_name", "kb_not_found"};
            fs::create_directories(paths.content_dir(name));
        }
        kb::UpdateOptions u;
        u.kb_names = {name};
        u.mode = kb::UpdateMode::recreate;
        u.embed_model = embed_for_new_kb(embed);
        if (cs) u.chunk_size = *cs;
        if (co) u.chunk_overlap = *co;
        u.progress = false;
        kb::UpdateReport r = kb::update_knowledge_bases(root, u);
        // Chatchat streams one progress frame per file (sse_starlette); the work is done here
        // before the first frame, so the frames are a summary, one write each.
        std::vector<std::string> out;
        size_t n = 0, i = 0;
        for (auto& f : r.files) n += f.action != "removed";
        for (auto& f : r.files) {
            if (f.action == "removed") continue;
            ++i;
            if (f.action == "failed" || f.action == "skipped")
                out.push_back(sse({{"code", 500}, {"msg", "添加文件‘" + f.file + "’到知识库‘" + name + "’时出错：" + f.note + "。已跳过。"}}));
            else
                out.push_back(sse({{"code", 200}, {"msg", "(" + std::to_string(i) + " / " + std::to_string(n) + "): " + f.file},
                                   {"total", n}, {"finished", i}, {"doc", f.file}}));
        }
        reply_sse(res, std::move(out));
    }, true);
    get("/knowledge_base/download_doc", [this](const httplib::Request& req, httplib::Response& res) {
        std::string name = validate_kb(req.get_param_value("knowledge_base_name"));
        std::string file = safe_relative_name(req.get_param_value("file_name"), "file_name");
        bool preview = req.get_param_value("preview") == "true";
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        fs::path p = fs::path(paths.content_dir(name)) / file;
        check_no_symlinks(paths.content_dir(name), file);
        if (!fs::is_regular_file(p)) throw HttpError{404, "未找到文件 " + file, "not_found_error", "file_name", "file_not_found"};
        std::string bytes = read_file(p.string());
        std::string base = fs::path(file).filename().string();
        std::string quoted;
        for (char c : base) quoted += (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) ? '_' : c;
        res.set_header("Content-Disposition", std::string(preview ? "inline" : "attachment") + "; filename=\"" + quoted + "\"");
        res.set_content(bytes, "application/octet-stream");
    }, true);
    post("/chat/kb_chat", [this](const httplib::Request& req, httplib::Response& res) { kb_chat(req, res); }, true);
    setup_chatchat();
}

// OpenAI's chat completions; `chatchat`: Chatchat's /chat/chat/completions (its LLM chat:
// the same answer, each object with Chatchat's message_id/status fields; no tools/agents).
void Server::Impl::chat_completions(const httplib::Request& req, httplib::Response& res, bool chatchat) {
    json body = parse_json_object(req);
    json extra = chatchat ? json{{"message_id", nullptr}, {"status", nullptr}} : json::object();
    if (chatchat) {
        for (const char* k : {"tools", "tool_choice"})
            if (const json* t = field(body, k); t && !(t->is_array() && t->empty()))
                throw bad_request(std::string("'") + k + "' (Chatchat's agent chat) is not supported by pdsd", k);
        if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() == 0) body.erase(mt);
    }
    auto job = std::make_shared<GenJob>();
    const json* msgs = field(body, "messages");
    if (!msgs) throw bad_request("'messages' is required", "messages");
    job->messages = parse_messages(*msgs, "messages", /*need_user_last=*/false);
    if (job->messages.empty()) throw bad_request("'messages' must not be empty", "messages");
    get_string(body, "model");
    parse_sampling(body, *job);
    bool stream = get_bool(body, "stream").value_or(false);
    bool include_usage = false;
    if (const json* so = field(body, "stream_options")) {
        if (!so->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
        include_usage = get_bool(*so, "include_usage").value_or(false);
    }
    require_model();
    const std::string turn = web->begin_turn(body, "llm_chat", job->messages.back().content);   // with a conversation_id
    if (chatchat && !turn.empty()) extra["message_id"] = turn;
    job->stream = stream;
    submit(job);

    const std::string id = now_id("chatcmpl-");
    const int64_t created_at = unix_now();
    auto usage = [](const GenJob& j) {
        return json{{"prompt_tokens", j.prompt_tokens}, {"completion_tokens", j.completion_tokens},
                    {"total_tokens", j.prompt_tokens + j.completion_tokens}};
    };
    if (!stream) {
        job->wait();
        observe_ttft(*job);
        if (!job->error.empty()) throw HttpError{job->error_status, job->error, error_type(job->error_status), "", job->error_code};
        web->end_turn(turn, job->text);
        json out{{"id", id}, {"object", "chat.completion"}, {"created", created_at}, {"model", model_id},
                 {"choices", json::array({{{"index", 0}, {"message", {{"role", "assistant"}, {"content", job->text}}},
                                           {"finish_reason", job->finish_reason}, {"logprobs", nullptr}}})},
                 {"usage", usage(*job)}};
        out.update(extra);
        reply_json(res, out);
        return;
    }
    auto chunk = [id, created_at, extra, this](json delta, json finish) {
        json c{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created_at}, {"model", model_id},
               {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish)},
                                         {"logprobs", nullptr}}})}};
        c.update(extra);
        return c;
    };
    std::string head = sse(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
    stream_job(
        res, job, head, [chunk](const std::string& piece) { return sse(chunk({{"content", piece}}, nullptr)); },
        [chunk, include_usage, usage, id, created_at, this, turn](const GenJob& j) {
            web->end_turn(turn, j.text);
            std::string out;
            if (!j.error.empty()) {
                out += sse(error_json(HttpError{j.error_status, j.error, error_type(j.error_status), "", j.error_code}));
            } else {
                out += sse(chunk(json::object(), j.finish_reason));
                if (include_usage)
                    out += sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created_at}, {"model", model_id},
                                {"choices", json::array()}, {"usage", usage(j)}});
            }
            out += "data: [DONE]\n\n";
            return out;
        });
}

void Server::Impl::kb_chat(const httplib::Request& req, httplib::Response& res) {
    kb_chat_run(parse_json_object(req), res, base_url(req));
}

// Chatchat's kb_chat body: query, mode (local_kb | temp_kb | search_engine), kb_name, top_k,
// score_threshold (Chatchat's scale), history, stream, model, temperature, max_tokens,
// prompt_name, return_direct. `base`: the URL prefix of the download links in "docs".
void Server::Impl::kb_chat_run(json body, httplib::Response& res, const std::string& base) {
    std::string query = require_string(body, "query");
    std::string mode = get_string(body, "mode").value_or("local_kb");
    bool stream = get_bool(body, "stream").value_or(true);
    if (mode == "search_engine") {
        // Chatchat's error frame ({"error": ...} as SSE data; a BaseResponse when not streaming).
        const std::string msg = "search_engine mode is not available offline: pdsd has no internet search engine; "
                                "use local_kb (a knowledge base) or temp_kb (file chat)";
        if (!stream) throw HttpError{501, msg, "invalid_request_error", "mode", "search_engine_unavailable"};
        reply_sse(res, {sse({{"error", msg}})});
        return;
    }
    if (mode != "local_kb" && mode != "temp_kb") throw bad_request("'mode' must be local_kb, temp_kb or search_engine", "mode");
    std::string name = validate_kb(require_string(body, "kb_name"), "kb_name");
    std::string kb_root = root;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        if (mode == "temp_kb") kb_root = temp_root(name);
    }
    kb::SearchOptions so = chatchat_search_options(body, kb_root);
    bool return_direct = get_bool(body, "return_direct").value_or(false) || !gen;
    get_string(body, "model");
    get_string(body, "prompt_name");
    auto job = std::make_shared<GenJob>();
    std::vector<tokenizer::ChatMessage> history;
    if (const json* h = field(body, "history")) history = parse_messages(*h, "history", false);
    // Chatchat sends max_tokens 0 or null for "the default".
    if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() == 0) body.erase(mt);
    parse_sampling(body, *job);

    rag::RagTurn turn;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        turn = rag::retrieve(*open_kb(kb_root, name, "kb_name"), query, so);
    }
    // Chatchat's format_reference: "出处 [i] [file](download url) \n\n<chunk>\n\n".
    json docs = rag::format_reference(turn.sources, rag::ReferenceLink{base, name}, /*with_text=*/true);
    const std::string msg_id = web->begin_turn(body, "kb_chat", query, {{"kb_name", name}, {"docs", docs}});
    const std::string id = now_id("chat");
    const int64_t created_at = unix_now();
    auto frame = [id, created_at, this, msg_id](const std::string& object, const std::string& content, json extra) {
        json j{{"id", id}, {"object", object}, {"model", gen ? json(model_id) : json(nullptr)}, {"created", created_at},
               {"status", nullptr}, {"message_type", 1}, {"message_id", msg_id.empty() ? json(nullptr) : json(msg_id)}, {"is_ref", false}};
        for (auto& [k, v] : extra.items()) j[k] = v;
        if (object == "chat.completion.chunk")
            j["choices"] = json::array({{{"delta", {{"content", content}, {"tool_calls", json::array()}}}, {"role", "assistant"}}});
        else
            j["choices"] = json::array({{{"message", {{"role", "assistant"}, {"content", content}, {"finish_reason", "stop"},
                                                     {"tool_calls", json::array()}}}}});
        return j;
    };
    if (return_direct) {
        // Retrieval-only (Chatchat's return_direct; also when no model is loaded).
        json j = frame("chat.completion", "", {{"docs", docs}});
        if (stream) reply_sse(res, {sse(j)});
        else reply_json(res, j);
        return;
    }
    if (docs.empty()) docs.push_back(no_reference_notice());
    job->messages = history;
    job->messages.push_back({"user", turn.user_message});
    job->stream = stream;
    submit(job);
    if (!stream) {
        job->wait();
        observe_ttft(*job);
        if (!job->error.empty()) throw HttpError{job->error_status, job->error, error_type(job->error_status), "", job->error_code};
        web->end_turn(msg_id, job->text);
        reply_json(res, frame("chat.completion", job->text, {{"docs", docs}, {"finish_reason", job->finish_reason},
                                                             {"usage", {{"prompt_tokens", job->prompt_tokens}, {"completion_tokens", job->completion_tokens},
                                                                        {"total_tokens", job->prompt_tokens + job->completion_tokens}}}}));
        return;
    }
    std::string head = sse(frame("chat.completion.chunk", "", {{"docs", docs}}));
    stream_job(
        res, job, head, [frame](const std::string& piece) { return sse(frame("chat.completion.chunk", piece, json::object())); },
        [frame, msg_id, this](const GenJob& j) {
            web->end_turn(msg_id, j.text);
            if (!j.error.empty()) return sse({{"error", j.error}});
            json f = frame("chat.completion.chunk", "", {{"finish_reason", j.finish_reason}});
            f["choices"][0]["finish_reason"] = j.finish_reason;
            return sse(f) + "data: [DONE]\n\n";
        });
}

void Server::Impl::embeddings(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    if (!embedder) throw HttpError{503, "no embedding model (start pdsd serve with --embed-model NAME)", "service_unavailable", "model", "model_not_loaded"};
    const json* input = field(body, "input");
    if (!input) throw bad_request("'input' is required", "input");
    std::vector<std::string> texts;
    if (input->is_string()) texts.push_back(input->get<std::string>());
    else if (input->is_array()) {
        for (auto& x : *input) {
            if (!x.is_string()) throw bad_request("'input' must be a string or an array of strings (token arrays are not supported)", "input");
            texts.push_back(x.get<std::string>());
        }
    } else throw bad_request("'input' must be a string or an array of strings", "input");
    if (texts.empty() || texts.size() > 2048) throw bad_request("'input' must hold 1 to 2048 strings", "input");
    std::string fmt = get_string(body, "encoding_format").value_or("float");
    if (fmt != "float" && fmt != "base64") throw bad_request("'encoding_format' must be float or base64", "encoding_format");
    get_string(body, "model");
    if (field(body, "dimensions")) throw bad_request("'dimensions' is not supported", "dimensions");
    std::vector<std::vector<float>> vecs = embedder->embed(texts, /*is_query=*/false);   // serialised by the wrapper
    // usage: tokens of the chat model's tokenizer when one is loaded, else UTF-8 bytes.
    int64_t tokens = 0;
    for (auto& t : texts) tokens += tok ? static_cast<int64_t>(tok->encode(t).size()) : static_cast<int64_t>(t.size());
    json data = json::array();
    for (size_t i = 0; i < vecs.size(); ++i) {
        json e{{"object", "embedding"}, {"index", i}};
        if (fmt == "base64") e["embedding"] = base64(vecs[i].data(), vecs[i].size() * sizeof(float));  // little-endian float32
        else e["embedding"] = vecs[i];
        data.push_back(std::move(e));
    }
    reply_json(res, {{"object", "list"}, {"data", data}, {"model", embedder->name()},
                     {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
}

void Server::Impl::upload_docs(const httplib::Request& req, httplib::Response& res) {
    if (!req.is_multipart_form_data()) throw bad_request("upload_docs takes multipart/form-data (files, knowledge_base_name, ...)");
    auto value = [&](const char* key) { return req.has_file(key) ? req.get_file_value(key).content : std::string(); };
    std::string name = validate_kb(value("knowledge_base_name"));
    bool override_files = form_bool(value("override"), "override");
    std::string tvs = value("to_vector_store");
    bool to_vector_store = tvs.empty() ? true : form_bool(tvs, "to_vector_store");
    int64_t chunk_size = -1, chunk_overlap = -1;
    auto to_int = [](const std::string& s, const char* key) -> int64_t {
        if (s.empty()) return -1;
        try {
            size_t pos = 0;
            long long v = std::stoll(s, &pos);
            if (pos != s.size() || v < 0) throw std::invalid_argument(s);
            return v;
        } catch (const std::exception&) {
            throw bad_request(std::string("'") + key + "' must be a non-negative integer", key);
        }
    };
    chunk_size = to_int(value("chunk_size"), "chunk_size");
    chunk_overlap = to_int(value("chunk_overlap"), "chunk_overlap");
    auto range = req.files.equal_range("files");
    if (range.first == range.second) throw bad_request("no 'files' part in the upload", "files");
    // Validate every name before writing anything.
    std::vector<std::pair<std::string, const httplib::MultipartFormData*>> files;
    for (auto it = range.first; it != range.second; ++it) files.emplace_back(safe_relative_name(it->second.filename, "files"), &it->second);

    std::unique_lock<std::shared_mutex> lk(kb_mu);
    kb::KbPaths paths{root};
    if (!db_embed_model(root, name)) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
    const fs::path content = paths.content_dir(name);
    fs::create_directories(content);
    json failed = json::object();
    std::set<std::string> written_new;   // not in content/ before: removed again if it cannot be indexed
    size_t removed = 0;
    for (auto& [rel, part] : files) {
        check_no_symlinks(content, rel);
        fs::path dst = content / rel;
        // Belt and braces: the normalised path stays under content/.
        std::string d = dst.lexically_normal().string(), c = (content / "").lexically_normal().string();
        if (d.compare(0, c.size(), c) != 0) throw HttpError{400, "invalid file name '" + rel + "'", "invalid_request_error", "files", "invalid_file_name"};
        if (fs::exists(dst) && !override_files && fs::file_size(dst) == part->content.size()) {
            failed[rel] = "文件 " + rel + " 已存在。";
            continue;
        }
        if (!fs::exists(dst)) written_new.insert(rel);
        fs::create_directories(dst.parent_path());
        write_file_atomic(dst.string(), part->content);
    }
    if (to_vector_store) {
        kb::UpdateOptions u;
        u.kb_names = {name};
        u.mode = kb::UpdateMode::increment;
        u.chunk_size = chunk_size > 0 ? chunk_size : -1;
        u.chunk_overlap = chunk_overlap;
        u.progress = false;
        for (auto& list_kb : kb::list_knowledge_bases(root))
            if (list_kb.name == name) u.embed_model = list_kb.embed_model;
        kb::UpdateReport r = kb::update_knowledge_bases(root, u);
        for (auto& f : r.files)
            if (f.action == "failed" || f.action == "skipped") {
                for (auto& [rel, part] : files)
                    if (rel == f.file) failed[rel] = f.note.empty() ? f.action : f.note;
                // A hostile or broken upload does not stay in content/ (every later
                // rebuild would fail on it again).
                std::error_code ec;
                if (f.action == "failed" && written_new.count(f.file) && fs::remove(content / f.file, ec)) {
                    failed[f.file] = failed[f.file].get<std::string>() + " (removed from content/)";
                    ++removed;
                }
            }
    }
    if (!written_new.empty() && removed == written_new.size() && removed == files.size()) {
        // Every file was new and none could be indexed: nothing was stored, so a 4xx in
        // Chatchat's body shape (its web UI shows `msg`).
        reply_json(res, {{"code", 400}, {"msg", "文件上传失败: 没有文件可以入库"}, {"data", {{"failed_files", failed}}}}, 400);
        return;
    }
    reply_json(res, {{"code", 200}, {"msg", "文件上传与向量化完成"}, {"data", {{"failed_files", failed}}}});
}

// ---- Chatchat's web UI (webui_pages + ApiRequest) beyond the KB API -------------------------

void Server::Impl::setup_chatchat() {
    // openai.Client(base_url=f"{api}/knowledge_base/{mode}/{name}").chat.completions.create(...)
    post(R"(/knowledge_base/(local_kb|temp_kb|search_engine)/([^/]+)/chat/completions)",
         [this](const httplib::Request& req, httplib::Response& res) { kb_chat_openai(req, res); }, true);
    post("/knowledge_base/upload_temp_docs", [this](const httplib::Request& req, httplib::Response& res) { upload_temp_docs(req, res); }, true);
    post("/knowledge_base/update_docs", [this](const httplib::Request& req, httplib::Response& res) { update_docs(req, res); }, true);
    post("/knowledge_base/update_info", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string info = require_string(body, "kb_info");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (!kb::set_kb_info(root, name, info)) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
        reply_json(res, {{"code", 200}, {"msg", "知识库介绍修改完成"}, {"data", {{"kb_info", info}}}});
    }, true);
    post("/chat/file_chat", [this](const httplib::Request& req, httplib::Response& res) { file_chat(req, res); }, true);
    post("/chat/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat_completions(req, res, true); }, true);
    post("/server/configs", [this](const httplib::Request& req, httplib::Response& res) {
        reply_json(res, {{"api_address", base_url(req)}});
    }, true);
    post("/server/get_prompt_template", [this](const httplib::Request& req, httplib::Response& res) {
        json body = req.body.empty() ? json::object() : parse_json_object(req);
        std::string type = get_string(body, "type").value_or("llm_model"), name = get_string(body, "name").value_or("default");
        const rag::PromptTemplates t;
        // The templates pdsd fills: rag (kb_chat, file chat) and the plain LLM one.
        std::map<std::pair<std::string, std::string>, std::string> known = {
            {{"rag", "default"}, t.with_context}, {{"rag", "empty"}, t.without_context}, {{"llm_model", "default"}, "{{input}}"}};
        auto it = known.find({type, name});
        if (it == known.end())
            throw HttpError{404, "Prompt template not found: " + type + "/" + name + " (pdsd has rag/default, rag/empty, llm_model/default)",
                            "not_found_error", "name", "template_not_found"};
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", it->second}});
    }, true);
}

// The OpenAI-shaped kb chat: the last message is the query, the ones before it the history;
// Chatchat's extra_body (top_k, score_threshold, prompt_name, return_direct) rides along.
void Server::Impl::kb_chat_openai(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    const json* msgs = field(body, "messages");
    if (!msgs) throw bad_request("'messages' is required", "messages");
    std::vector<tokenizer::ChatMessage> messages = parse_messages(*msgs, "messages", /*need_user_last=*/true);
    json chat{{"query", messages.back().content}, {"mode", req.matches[1].str()}, {"kb_name", req.matches[2].str()},
            {"stream", get_bool(body, "stream").value_or(false)}};
    json history = json::array();
    for (size_t i = 0; i + 1 < messages.size(); ++i) history.push_back({{"role", messages[i].role}, {"content", messages[i].content}});
    chat["history"] = history;
    for (const char* k : {"top_k", "score_threshold", "pdsd_score_threshold", "search_mode", "return_direct", "model", "prompt_name",
                          "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop"})
        if (const json* v = field(body, k)) chat[k] = *v;
    kb_chat_run(std::move(chat), res, base_url(req));
}

// Chatchat's upload_temp_docs: files into a temp KB of their own (<root>/temp/<id>, indexed
// with the server's embed model and the root's kb_settings.yaml), answered with its id.
void Server::Impl::upload_temp_docs(const httplib::Request& req, httplib::Response& res) {
    if (!req.is_multipart_form_data()) throw bad_request("upload_temp_docs takes multipart/form-data (files, prev_id, ...)");
    auto value = [&](const char* key) { return req.has_file(key) ? req.get_file_value(key).content : std::string(); };
    auto to_int = [](const std::string& v, const char* key) -> int64_t {
        if (v.empty()) return -1;
        if (v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9)
            throw bad_request(std::string("'") + key + "' must be a non-negative integer", key);
        return std::stoll(v);
    };
    const int64_t chunk_size = to_int(value("chunk_size"), "chunk_size"), chunk_overlap = to_int(value("chunk_overlap"), "chunk_overlap");
    std::string prev = value("prev_id");
    if (prev.empty()) prev = value("knowledge_id");   // ApiRequest's name for it
    auto range = req.files.equal_range("files");
    if (range.first == range.second) throw bad_request("no 'files' part in the upload", "files");
    std::vector<std::pair<std::string, const httplib::MultipartFormData*>> files;
    for (auto it = range.first; it != range.second; ++it)
        files.emplace_back(fs::path(safe_relative_name(it->second.filename, "files")).filename().string(), &it->second);

    std::unique_lock<std::shared_mutex> lk(kb_mu);
    std::string id, dir;
    for (auto& [k, d] : temp_kbs)
        if (!prev.empty() && k == prev) id = k, dir = d;
    if (id.empty()) {
        std::string hex = now_id("");
        id = hex.substr(hex.size() > 32 ? hex.size() - 32 : 0);
        dir = (fs::path(root) / "temp" / id).string();
        if (temp_kbs.size() >= kMaxTempKbs) {   // bounded: the oldest goes
            std::error_code ec;
            fs::remove_all(temp_kbs.front().second, ec);
            retriever.forget(temp_kbs.front().second);
            temp_kbs.erase(temp_kbs.begin());
        }
        temp_kbs.emplace_back(id, dir);
        kb::KbPaths tp{dir};
        fs::create_directories(tp.content_dir(id));
        std::error_code ec;
        fs::path settings = fs::path(root) / "kb_settings.yaml";
        if (fs::exists(settings)) fs::copy_file(settings, fs::path(dir) / "kb_settings.yaml", fs::copy_options::overwrite_existing, ec);
    }
    kb::KbPaths tp{dir};
    for (auto& [name, part] : files) write_file_atomic((fs::path(tp.content_dir(id)) / name).string(), part->content);
    kb::UpdateOptions u;
    u.kb_names = {id};
    u.mode = kb::UpdateMode::increment;
    u.embed_model = embed_spec_path;
    u.chunk_size = chunk_size > 0 ? chunk_size : -1;
    u.chunk_overlap = chunk_overlap;
    u.progress = false;
    json failed = json::array();
    for (auto& f : kb::update_knowledge_bases(dir, u).files)
        if (f.action == "failed" || f.action == "skipped") failed.push_back({{f.file, f.note.empty() ? f.action : f.note}});
    reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", {{"id", id}, {"failed_files", failed}}}});
}

// Chatchat's /chat/file_chat: always SSE; streamed {"answer": piece}... then {"docs": [...]},
// else one {"answer", "docs"} frame. Without a model the answer is empty (retrieval only).
void Server::Impl::file_chat(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    std::string query = require_string(body, "query");
    std::string id = validate_kb(require_string(body, "knowledge_id"), "knowledge_id");
    bool stream = get_bool(body, "stream").value_or(false);
    get_string(body, "model_name");
    get_string(body, "prompt_name");
    auto job = std::make_shared<GenJob>();
    std::vector<tokenizer::ChatMessage> history;
    if (const json* h = field(body, "history")) history = parse_messages(*h, "history", false);
    if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() <= 0) body.erase(mt);
    if (!field(body, "temperature")) body["temperature"] = 0.01;   // Chatchat's file_chat default
    parse_sampling(body, *job);

    rag::RagTurn turn;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        std::string dir = temp_root(id);
        kb::SearchOptions so = chatchat_search_options(body, dir);
        turn = rag::retrieve(*open_kb(dir, id, "knowledge_id"), query, so);
    }
    // Chatchat's file_chat sources: "出处 [i] [file] \n\n<chunk>\n\n" (no link: temp files).
    json docs = rag::format_reference(turn.sources, std::nullopt, /*with_text=*/true);
    if (docs.empty()) docs.push_back(no_reference_notice());
    const std::string msg_id = web->begin_turn(body, "file_chat", query, {{"knowledge_id", id}, {"docs", docs}});
    if (!gen) {
        reply_sse(res, stream ? std::vector<std::string>{sse({{"docs", docs}})} : std::vector<std::string>{sse({{"answer", ""}, {"docs", docs}})});
        return;
    }
    job->messages = history;
    job->messages.push_back({"user", turn.user_message});
    job->stream = stream;
    submit(job);
    if (!stream) {
        job->wait();
        observe_ttft(*job);
        if (!job->error.empty()) throw HttpError{job->error_status, job->error, error_type(job->error_status), "", job->error_code};
        web->end_turn(msg_id, job->text);
        reply_sse(res, {sse({{"answer", job->text}, {"docs", docs}})});
        return;
    }
    stream_job(
        res, job, "", [](const std::string& piece) { return sse({{"answer", piece}}); },
        [docs, msg_id, this](const GenJob& j) { web->end_turn(msg_id, j.text); return j.error.empty() ? sse({{"docs", docs}}) : sse({{"error", j.error}}); });
}

// Chatchat's update_docs: re-index the named files (already in the KB) from content/.
// Custom "docs" (Chatchat's hand-edited chunks) are not supported: those files fail.
void Server::Impl::update_docs(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    std::string name = validate_kb(require_string(body, "knowledge_base_name"));
    const json* names = field(body, "file_names");
    if (!names || !names->is_array()) throw bad_request("'file_names' must be an array of strings", "file_names");
    auto cs = get_int(body, "chunk_size", 1, 1 << 20);
    auto co = get_int(body, "chunk_overlap", 0, 1 << 20);
    get_bool(body, "zh_title_enhance");
    get_bool(body, "override_custom_docs");
    get_bool(body, "not_refresh_vs_cache");
    json custom = json::object();
    if (auto d = get_string(body, "docs"); d && !d->empty()) {
        custom = json::parse(*d, nullptr, false);
        if (!custom.is_object()) throw bad_request("'docs' must be a JSON object (as a string) of file name -> documents", "docs");
    }
    std::unique_lock<std::shared_mutex> lk(kb_mu);
    std::optional<std::string> em = db_embed_model(root, name);
    if (!em) throw HttpError{404, "未找到知识库 " + name, "not_found_error", "knowledge_base_name", "kb_not_found"};
    std::set<std::string> in_db;
    for (auto& f : kb::list_kb_files(root, name))
        if (f.in_db) in_db.insert(f.file_name);
    json failed = json::object();
    std::vector<std::string> todo;
    for (auto& n : *names) {
        if (!n.is_string()) throw bad_request("'file_names' must be an array of strings", "file_names");
        std::string f = safe_relative_name(n.get<std::string>(), "file_names");
        if (!in_db.count(f)) failed[f] = "未找到文件 " + f;
        else todo.push_back(f);
    }
    for (auto& [f, _] : custom.items()) failed[f] = "custom docs are not supported by pdsd (it splits the file itself)";
    if (!todo.empty()) {
        kb::UpdateOptions u;
        u.embed_model = *em;
        if (cs) u.chunk_size = *cs;
        if (co) u.chunk_overlap = *co;
        u.progress = false;
        for (auto& c : kb::update_files(root, name, todo, u).files)
            if (c.action == "failed" || c.action == "skipped") failed[c.file] = c.note.empty() ? c.action : c.note;
    }
    reply_json(res, {{"code", 200}, {"msg", "更新文档完成"}, {"data", {{"failed_files", failed}}}});
}

std::string Server::Impl::metrics_text() {
    std::ostringstream m;
    auto hist = [&](const std::string& name, const std::string& labels, const Histogram& h) {
        std::string sep = labels.empty() ? "" : ",";
        for (size_t i = 0; i < kBuckets.size(); ++i)
            m << name << "_bucket{" << labels << sep << "le=\"" << kBuckets[i] << "\"} " << h.counts[i] << "\n";
        m << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << h.count << "\n";
        m << name << "_sum" << (labels.empty() ? "" : "{" + labels + "}") << " " << h.sum << "\n";
        m << name << "_count" << (labels.empty() ? "" : "{" + labels + "}") << " " << h.count << "\n";
    };
    std::lock_guard<std::mutex> lk(metrics.mu);
    m << "# HELP pdsd_http_requests_total HTTP requests by route and status.\n# TYPE pdsd_http_requests_total counter\n";
    for (auto& [k, v] : metrics.requests) m << "pdsd_http_requests_total{route=\"" << k.first << "\",status=\"" << k.second << "\"} " << v << "\n";
    m << "# HELP pdsd_http_request_duration_seconds Time from request to the end of the response.\n"
         "# TYPE pdsd_http_request_duration_seconds histogram\n";
    for (auto& [route, h] : metrics.latency) hist("pdsd_http_request_duration_seconds", "route=\"" + route + "\"", h);
    m << "# HELP pdsd_time_to_first_token_seconds Queue wait + prefill until the first generated token.\n"
         "# TYPE pdsd_time_to_first_token_seconds histogram\n";
    hist("pdsd_time_to_first_token_seconds", "", metrics.ttft);
    m << "# HELP pdsd_generated_tokens_total Generated tokens (eos included).\n# TYPE pdsd_generated_tokens_total counter\n"
      << "pdsd_generated_tokens_total " << stats.generated_tokens.load() << "\n";
    m << "# HELP pdsd_prompt_tokens_total Prompt tokens of generation requests.\n# TYPE pdsd_prompt_tokens_total counter\n"
      << "pdsd_prompt_tokens_total " << stats.prompt_tokens.load() << "\n";
    m << "# HELP pdsd_generations_total Finished generations by outcome.\n# TYPE pdsd_generations_total counter\n"
      << "pdsd_generations_total{outcome=\"completed\"} " << stats.completed.load() << "\n"
      << "pdsd_generations_total{outcome=\"cancelled\"} " << stats.cancelled.load() << "\n"
      << "pdsd_generations_total{outcome=\"rejected\"} " << stats.rejected.load() << "\n";
    m << "# HELP pdsd_generation_batches_total Model runs (one request, or a batch of greedy requests).\n"
         "# TYPE pdsd_generation_batches_total counter\n"
      << "pdsd_generation_batches_total " << stats.batches.load() << "\n"
      << "# HELP pdsd_generation_batch_rows_total Requests run, summed over model runs.\n# TYPE pdsd_generation_batch_rows_total counter\n"
      << "pdsd_generation_batch_rows_total " << stats.batch_rows.load() << "\n";
    m << "# HELP pdsd_generation_queue_depth Generation requests waiting or running.\n# TYPE pdsd_generation_queue_depth gauge\n"
      << "pdsd_generation_queue_depth " << (queue ? queue->depth() : 0) << "\n";
    if (front) m << front->metrics_text();
    return m.str();
}

// ---- Server ------------------------------------------------------------------------------------

Server::Server(ServeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() { stop(); }

int Server::bind() {
    auto& im = *impl_;
    FrontOptions f;
    f.host = im.o.host;
    f.port = im.o.port;
    f.threads = im.o.threads;
    f.max_body_bytes = im.o.max_upload_bytes;
    f.header_timeout_s = im.o.header_timeout_s;
    f.body_timeout_s = im.o.body_timeout_s;
    f.write_timeout_s = im.o.write_timeout_s;
    f.max_conns_per_client = im.o.max_conns_per_client;
    f.idle_timeout_s = 5;
    f.keep_alive_max = 100;
    im.front = std::make_unique<HttpFront>(f, [&im](httplib::Stream& s, bool close, bool& closed) {
        return im.http.handle(s, close, closed);
    });
    im.port = im.front->bind();
    return im.port;
}

void Server::listen() {
    if (!impl_->stopping) impl_->front->run();
}

void Server::stop() {
    auto& im = *impl_;
    if (im.stopping.exchange(true)) return;
    if (im.queue) im.queue->stop();   // cancels generations so open streams end
    im.http.shutting_down();
    if (im.front) im.front->stop();
}

std::string Server::url() const {
    std::string host = impl_->o.host.find(':') != std::string::npos ? "[" + impl_->o.host + "]" : impl_->o.host;
    return "http://" + host + ":" + std::to_string(impl_->port);
}

void Server::pause_worker(bool paused) {
    if (impl_->queue) impl_->queue->set_paused(paused);
}

namespace {
std::atomic<bool> g_sigterm{false};  // the one piece of state the SIGTERM handler touches
extern "C" void on_sigterm(int) { g_sigterm.store(true); }
}  // namespace

bool run_server(const ServeOptions& options) {
    // Ctrl-C sets pdsd's interrupt flag (main's SIGINT handler); SIGTERM sets g_sigterm. A
    // watcher thread polls both and stops the server (signal handlers may do nothing more).
    install_interrupt_handler();
    struct sigaction sa {};
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);

    Server server(options);
    server.bind();
    log::info(kComp, "listening on " + server.url() + (options.api_key.empty() ? "" : " (API key required)"));
    if (options.api_key.empty() && options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1")
        log::warn(kComp, "listening on " + options.host + " without --api-key: anyone who can reach this address can use the model and change the knowledge bases");
    std::fprintf(stderr, "pdsd serve: %s\n", server.url().c_str());
    std::fflush(stderr);

    std::atomic<bool> done{false}, by_sigint{false};
    std::thread watcher([&] {
        while (!done) {
            if (interrupt_requested() || g_sigterm) {
                by_sigint = interrupt_requested();
                log::info(kComp, by_sigint ? "interrupted: shutting down" : "SIGTERM: shutting down");
                server.stop();
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    server.listen();
    done = true;
    watcher.join();
    server.stop();
    log::info(kComp, "stopped");
    if (by_sigint) clear_interrupt();
    return by_sigint;
}

}  // namespace pdsd::serve
