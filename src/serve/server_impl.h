// Private to src/serve: the server's shared state and the helpers its route sets use
// (server.cpp: setup, operations, metrics, the Server class; openai_routes.cpp: /v1/*;
// chatchat_routes.cpp: Chatchat's knowledge-base and chat API).
#pragma once

#include "pdsd/serve/server.h"

#include "generation_queue.h"
#include "http_front.h"
#include "model_routes.h"
#include "rerank_route.h"
#include "serve_util.h"
#include "train_routes.h"
#include "web_app_routes.h"

#include "pdsd/chat/model_loader.h"
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/embedder.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt.h"
#include "pdsd/rag/prompt_settings.h"
#include "pdsd/rag/retriever.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::serve {


struct Server::Impl {
    ServeOptions o;
    std::string root;
    std::unique_ptr<ModelRoutes> models;      // the chat model now (current()), /pdsd/models and its load route
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
    // <root>/prompt_settings.yaml, re-read when it changes (made in setup_chatchat: needs root).
    std::unique_ptr<rag::PromptSettingsCache> prompts;

    explicit Impl(ServeOptions opts) : o(std::move(opts)) {
        root = kb::resolve_root(o.root);
        // The model `pdsd chat` would load, by the same loader (checks included); none: retrieval
        // only until POST /pdsd/models/load loads one.
        const chat::ChatModelOptions load{root, o.model_dir, o.adapter_dir, o.device, o.dtype, o.quant};
        models = std::make_unique<ModelRoutes>(load, load_served_model(load, o.model_name));
        queue = std::make_unique<GenerationQueue>(o.queue_size, o.max_batch, &stats);
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
    using Fn = RouteFn;   // route_set.h
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
    void setup_openai();     // openai_routes.cpp: /v1/models, chat completions, completions, embeddings, rerank
    void setup_kb();         // chatchat_routes.cpp: Chatchat's knowledge-base API
    void setup_chatchat();   // Chatchat's web-UI routes beyond the KB API (chat, temp KBs, server info)
    void chat_completions(const httplib::Request& req, httplib::Response& res, bool chatchat = false);
    void completions(const httplib::Request& req, httplib::Response& res);   // /v1/completions
    void kb_chat(const httplib::Request& req, httplib::Response& res);
    void kb_chat_run(json body, httplib::Response& res, const std::string& base);
    void kb_chat_openai(const httplib::Request& req, httplib::Response& res);
    void upload_temp_docs(const httplib::Request& req, httplib::Response& res);
    void file_chat(const httplib::Request& req, httplib::Response& res);
    void update_docs(const httplib::Request& req, httplib::Response& res);
    void embeddings(const httplib::Request& req, httplib::Response& res);
    void upload_docs(const httplib::Request& req, httplib::Response& res);
    std::string metrics_text();
    // The prompt templates now (a broken prompt_settings.yaml: 500 naming its file and line).
    rag::PromptSettings prompt_settings();
    // The rag templates a chat body's prompt_name picks ("default" when absent); 400 naming
    // the field, the known names and the file for an unknown one.
    rag::PromptTemplates rag_templates(const json& body);

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

    // `m`: the request's snapshot of models->current(), which it keeps to its end.
    static void require_model(const std::shared_ptr<ServedModel>& m) {
        if (!m) throw HttpError{503, "no chat model is loaded (start pdsd serve with --model DIR, or load one: POST /pdsd/models/load)",
                                "service_unavailable", "model", "model_not_loaded"};
    }

    // Knowledge base `name` under data root `kb_root` (the server's root or a temp KB's),
    // from the Retriever; 404 when info.db does not know it. Call under kb_mu (shared).
    std::shared_ptr<const kb::KnowledgeBase> open_kb(const std::string& kb_root, const std::string& name, const char* param) {
        try {
            return retriever.get(kb_root, name);
        } catch (const DataError&) {   // KnowledgeBase: "not in the database"
            throw kb_not_found(name, param);
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

    // Submit (job->model set), or throw 429 when the queue is full.
    void submit(const std::shared_ptr<GenJob>& job) {
        if (!queue->try_submit(job))
            throw HttpError{429, "the server is busy: " + std::to_string(o.queue_size) + " generation requests are queued; retry later",
                            "rate_limit_error", "", "queue_full"};
    }

    // A RAG turn's generation (kb_chat, file_chat): the history, then the templated question.
    void submit_turn(const std::shared_ptr<GenJob>& job, std::vector<tokenizer::ChatMessage> history, const std::string& user_message,
                     bool stream) {
        job->messages = std::move(history);
        job->messages.push_back({"user", user_message});
        job->stream = stream;
        submit(job);
    }
    // A non-streamed job, finished; its error becomes the HTTP error.
    void wait_for(GenJob& job) {
        job.wait();
        observe_ttft(job);
        if (!job.error.empty()) throw HttpError{job.error_status, job.error, error_type(job.error_status), "", job.error_code};
    }
    static json usage_json(const GenJob& j) {
        return json{{"prompt_tokens", j.prompt_tokens}, {"completion_tokens", j.completion_tokens},
                    {"total_tokens", j.prompt_tokens + j.completion_tokens}};
    }

    void observe_ttft(const GenJob& job) {
        if (!job.has_first_token) return;
        std::lock_guard<std::mutex> lk(metrics.mu);
        metrics.ttft.observe(std::chrono::duration<double>(job.first_token - job.submitted).count());
    }

    // stream_job's on_stop for a recorded turn (`msg_id` from begin_turn): the text shown
    // becomes its answer.
    std::function<void(const std::string&)> keep_shown(std::string msg_id) {
        return [this, msg_id = std::move(msg_id)](const std::string& shown) { web->end_turn(msg_id, shown); };
    }

    // Streams `job` as SSE: `head` frames first, then one frame per piece (`piece_frame`),
    // then `tail` (called after the job finished; returns the closing frames). `on_stop`
    // (optional) gets the text of the pieces sent when the stream ends early (the client
    // stopped it or went away, the server is stopping): what the client was shown, which
    // Chatchat keeps as the answer of a stopped turn.
    void stream_job(httplib::Response& res, std::shared_ptr<GenJob> job, std::string head,
                    std::function<std::string(const std::string&)> piece_frame, std::function<std::string(const GenJob&)> tail,
                    std::function<void(const std::string& shown)> on_stop = {}) {
        res.set_header("Cache-Control", "no-cache");
        res.set_header("X-Accel-Buffering", "no");
        auto provide = [this, job, head = std::move(head), piece_frame, tail, on_stop](httplib::DataSink& sink) {
            auto last_write = std::chrono::steady_clock::now();
            std::string shown;   // the pieces written so far
            auto stop = [&] {
                job->cancelled = true;   // the client went away: stop generating
                if (on_stop && !shown.empty()) on_stop(shown);
                return false;
            };
            // One write per SSE event: clients that read one event per chunk see every frame.
            auto write = [&](const std::string& s) {
                for (auto& e : split_events(s))
                    if (!sink.write(e.data(), e.size())) return false;
                last_write = std::chrono::steady_clock::now();
                return true;
            };
            if (!write(head)) return stop();
            std::string piece;
            while (true) {
                bool timed_out = false;
                if (job->next_piece(piece, std::chrono::milliseconds(200), timed_out)) {
                    if (!write(piece_frame(piece))) return stop();
                    shown += piece;
                    continue;
                }
                if (timed_out) {
                    if (stopping || !sink.is_writable()) return stop();
                    // keep-alive while queued or prefilling, as sse_starlette does
                    if (std::chrono::steady_clock::now() - last_write >= std::chrono::seconds(kPingSeconds) && !write(sse_ping()))
                        return stop();
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

}  // namespace pdsd::serve
