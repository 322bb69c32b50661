// Private to src/serve: what every route set shares: the HTTP error type, typed JSON access
// (wrong types are 400s naming the field), upload-path checks, SSE framing, Chatchat's score
// scale, the metrics records, and the httplib server the routes live on.
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline constexpr const char* kComp = "serve";

// An error answered to the client: status + OpenAI's error object.
struct HttpError {
    int status;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;   // "" -> null
    std::string code;    // "" -> null
};

HttpError bad_request(const std::string& message, const std::string& param = "");
// Chatchat's 404 for an unknown knowledge base `name` (request field `param`).
HttpError kb_not_found(const std::string& name, const std::string& param = "knowledge_base_name");

json error_json(const HttpError& e);

std::string now_id(const std::string& prefix);

int64_t unix_now();

// ---- typed JSON access: wrong types are 400s naming the field --------------------------------

const json* field(const json& body, const char* key);
std::optional<std::string> get_string(const json& body, const char* key);
std::string require_string(const json& body, const char* key);
std::optional<double> get_number(const json& body, const char* key, double lo, double hi);
std::optional<int64_t> get_int(const json& body, const char* key, int64_t lo, int64_t hi);
std::optional<bool> get_bool(const json& body, const char* key);

// "true"/"false"/"1"/"0" form fields (multipart).
bool form_bool(const std::string& v, const char* key);

// A file name relative to a KB's content/ folder: no NUL, no absolute path, no '..' or '.'
// component, no backslash, no empty component. Returns the normalised '/'-separated form.
std::string safe_relative_name(const std::string& name, const char* param);

// `rel` inside `content`: every existing component must be a real directory/file, not a
// symlink (a symlink could point outside the knowledge base).
void check_no_symlinks(const fs::path& content, const std::string& rel);

// `p` is `dir` or below it (both lexically normalised, no file-system access).
bool path_inside(const fs::path& dir, const fs::path& p);
// `p` (relative: from `root`) made absolute with its symlinks resolved; UsageError naming `key`
// when that leaves the root (the training routes' output/data folders, the model load route).
std::string under_root(const std::string& root, const std::string& key, const std::string& p);

// The embed model of knowledge base `name` as recorded in info.db ("none" = BM25 only), or
// nothing when the database does not know it (a bare folder is not a knowledge base here).
std::optional<std::string> db_embed_model(const std::string& root, const std::string& name);

std::string validate_kb(const std::string& kb, const char* param = "knowledge_base_name");

std::string base64(const void* data, size_t n);

std::string sse(const json& j);

// Chatchat's "docs" entry of a kb_chat / file_chat answer that found no source.
std::string no_reference_notice();

// The SSE events of `s` ("...\n\n" each), so each can go out in its own write.
std::vector<std::string> split_events(const std::string& s);

// sse_starlette's keep-alive comment (Chatchat's server sends one every 15 s of silence).
inline constexpr int kPingSeconds = 15;
std::string sse_ping();

// ---- the page's route sets (web app, training, models): Chatchat's {"code","msg","data"} ----

inline constexpr size_t kMaxPageJsonBytes = 1u << 20;   // the page's bodies are small
// The request body as a JSON object; UsageError (400) when it is larger or not `what`, with `hint`.
json page_body(const httplib::Request& req, const std::string& what = "a JSON object",
               const std::string& hint = "send Content-Type: application/json");
// {"code": status, "msg": msg, "data": data} with HTTP status `status`.
void page_reply(httplib::Response& res, const std::string& msg, const json& data, int status = 200);

// ---- Chatchat's score scale ------------------------------------------------------------------
// Chatchat's FAISS store returns the squared L2 distance of unit vectors, 2 - 2*cos (0 = same
// direction, 2 = orthogonal), and keeps hits with distance <= score_threshold (0..2, default
// 2.0). pdsd's scores are higher-is-better (knowledge_base.h). On the Chatchat routes:
//   dense / hybrid   distance = 2 - 2*cos                   threshold t -> cos >= 1 - t/2
//   bm25             distance = 2 / (1 + s), s = -bm25()    threshold t -> s >= 2/t - 1
// so t = 2.0 gives pdsd's default thresholds (cos >= 0, s >= 0): Chatchat's client default
// returns what `pdsd kb search` returns. docs/serve.md has the table.
double chatchat_distance(const kb::SearchHit& h);
double pdsd_threshold(double chatchat_threshold, const std::string& mode);

// ---- metrics ---------------------------------------------------------------------------------

inline const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

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

extern thread_local std::chrono::steady_clock::time_point t_request_start;

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

}  // namespace pdsd::serve
