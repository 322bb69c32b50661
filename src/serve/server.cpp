// `pdsd serve`: setup (auth, errors, logging, operations, the page and the route sets),
// metrics, the Server class; see server.h and docs/serve.md. The route sets are
// openai_routes.cpp and chatchat_routes.cpp; their shared state is server_impl.h.
#include "server_impl.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <sstream>
#include <thread>

// share/web/index.html, embedded at build time (cmake/embed_file.cmake).
extern "C" const unsigned char pdsd_web_index_html[];
extern "C" const size_t pdsd_web_index_html_size;

namespace pdsd::serve {

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
        auto m = models->current();
        reply_json(res, {{"status", "ok"}, {"model", m ? json(m->id) : json(nullptr)}, {"queue_depth", queue->depth()}});
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
    // The page's route sets report errors in Chatchat's shape, as its other routes.
    const AddRoute page_get = [this](const std::string& p, RouteFn fn) { get(p, std::move(fn), true); };
    const AddRoute page_post = [this](const std::string& p, RouteFn fn) { post(p, std::move(fn), true); };
    web->add_routes(page_get, page_post);
    train = std::make_unique<TrainRoutes>(root);
    train->add_routes(page_get, page_post);
    models->add_routes(page_get, page_post);

    setup_openai();
    setup_kb();
    setup_chatchat();
}

// OpenAI's chat completions; `chatchat`: Chatchat's /chat/chat/completions (its LLM chat:

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
      << "pdsd_generation_queue_depth " << queue->depth() << "\n";
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
    im.queue->stop();   // cancels generations so open streams end
    im.http.shutting_down();
    if (im.front) im.front->stop();
}

std::string Server::url() const {
    std::string host = impl_->o.host.find(':') != std::string::npos ? "[" + impl_->o.host + "]" : impl_->o.host;
    return "http://" + host + ":" + std::to_string(impl_->port);
}

void Server::pause_worker(bool paused) { impl_->queue->set_paused(paused); }

void Server::pause_model_swaps(bool paused) { impl_->models->pause_swaps(paused); }

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

