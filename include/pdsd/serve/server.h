// `pdsd serve`: an HTTP server for the model and the knowledge bases (docs/serve.md).
//
//   OpenAI-compatible      GET /v1/models, POST /v1/chat/completions (JSON or SSE stream),
//                          POST /v1/embeddings, POST /v1/rerank (Xinference / Cohere shape)
//   Chatchat's KB API      /knowledge_base/{list_knowledge_bases, create_knowledge_base,
//                          delete_knowledge_base, list_files, search_docs, upload_docs,
//                          delete_docs, recreate_vector_store, download_doc}, POST /chat/kb_chat
//   Operations             GET /health, GET /metrics (Prometheus text), GET / (the web page)
//
//   Model switching        GET /pdsd/models, POST /pdsd/models/load (model_routes.h)
//
// One model at a time (switchable at runtime), one generation worker: generation requests wait in a bounded FIFO queue
// (ServeOptions::queue_size, counting the running one); when it is full the request gets
// 429 with Retry-After. A streaming client that disconnects stops its generation at the next
// token. Every error is OpenAI's shape {"error":{"message","type","param","code"}} with a
// 4xx/5xx status (KB routes add Chatchat's "code"/"msg" fields beside it).
//
//   serve::Server s(options);       // loads the model (if any) and the embedder
//   int port = s.bind();            // port 0 -> an ephemeral port
//   std::thread t([&] { s.listen(); });  ...  s.stop(); t.join();
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace pdsd::serve {

struct ServeOptions {
    std::string host = "127.0.0.1";
    int port = 7861;                        // 0: any free port (see Server::bind)
    std::string api_key;                    // non-empty: every route but /health (and the page) needs "Bearer <key>"
    std::string model_dir;                  // "" : no chat model (KB routes, embeddings and retrieval-only kb_chat)
    std::string model_name;                 // id shown in /v1/models; "" : the adapter's run name, else the model folder's name
    std::string adapter_dir;                // LoRA adapter applied unmerged at load
    std::string device = "cpu", dtype;
    std::string quant;                      // none | int8 | int4 (model/quant.h); "": model_settings.yaml's quant
    std::string embed_model;                // "" : kb_settings.yaml's embed_model (hash-ngram, bge..., none)
    std::string rerank_model;               // cross-encoder for POST /v1/rerank and the KB routes; "" : kb_settings.yaml's
                                            // (USE_RERANKER + RERANKER_MODEL); "none": off
    std::string root;                       // data root ("" : $PDSD_ROOT, else ./data)
    size_t queue_size = 16;                 // generation requests waiting or running; more -> 429
    // > 1: greedy requests waiting together run as one batch of up to this many rows. Each row
    // gives the tokens it would alone; the KV cache holds max_batch rows (memory!).
    size_t max_batch = 1;
    size_t max_upload_bytes = 64u << 20;    // any request body (multipart uploads)
    size_t max_json_bytes = 1u << 20;       // JSON request bodies
    int threads = 64;                       // HTTP worker threads (each open stream holds one)
    // Slow and hostile clients (src/serve/http_front.h): deadlines for a request's headers
    // and body, for a response the client does not read, and open connections per address.
    double header_timeout_s = 10;
    double body_timeout_s = 60;             // plus 1 s per 64 KiB received
    double write_timeout_s = 30;
    int max_conns_per_client = 128;         // 0: no cap (behind a reverse proxy)
    int retry_after_s = 1;                  // Retry-After of a 429
};

class Server {
public:
    explicit Server(ServeOptions options);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds host:port and returns the bound port; IoError when it cannot.
    int bind();
    // Serves until stop() (blocking). Call after bind().
    void listen();
    // Stops listening, cancels running generations, joins the worker. Thread-safe, idempotent.
    void stop();
    // "http://host:port" after bind().
    std::string url() const;

    // Tests: while paused the worker starts no new generation (queued requests wait), so the
    // queue can be filled deterministically.
    void pause_worker(bool paused);
    // Tests: while paused a model load (POST /pdsd/models/load) finishes loading but waits
    // before it swaps, so "a load is running" lasts as long as the test needs.
    void pause_model_swaps(bool paused);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// `pdsd serve`: bind, print the URL on stderr, serve until SIGINT/SIGTERM.
// Returns true when stopped by SIGINT (the CLI exits 130), false for SIGTERM (exit 0).
bool run_server(const ServeOptions& options);

}  // namespace pdsd::serve
