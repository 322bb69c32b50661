// `pdsd serve`: the OpenAI-compatible + Chatchat knowledge-base HTTP API and the web page.
//   pdsd serve --model models/Qwen2.5-0.5B-Instruct [--port 7861] [--api-key KEY]
// `pdsd start -a | --api | -w`: Chatchat's `chatchat start` spelling of the same server
// (API and page on one port, Chatchat's API default 127.0.0.1:7861).
// Ctrl-C exits 130, SIGTERM exits 0 (both shut down cleanly). docs/serve.md.
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/core/config.h"
#include "pdsd/serve/server.h"

#include <cstdlib>

namespace pdsd::cli {

namespace {

void add_serve_options(CLI::App* cmd, serve::ServeOptions& o) {
    cmd->add_option("--host", o.host, "address to bind (127.0.0.1: this machine only)")->capture_default_str();
    cmd->add_option("--port", o.port, "port (0: any free port)")->capture_default_str();
    cmd->add_option("--api-key", o.api_key, "require 'Authorization: Bearer KEY' on every route but /health (default: $PDSD_API_KEY)");
    cmd->add_option("-m,--model", o.model_dir, "chat model: a Hugging Face folder or its name under <root>/models (default: model_settings.yaml; none: retrieval-only)");
    cmd->add_option("--model-name", o.model_name, "model id in /v1/models and /health (default: the adapter's run name, else the model folder's name)");
    cmd->add_option("--adapter", o.adapter_dir, "LoRA adapter folder applied at load time, without merging");
    cmd->add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
    cmd->add_option("--quant", o.quant, "none | int8 | int4: weight-only quantization at load, CPU (default: model_settings.yaml's quant, else none)");
    cmd->add_option("--dtype", o.dtype, "bf16 | fp16 | fp32 (default: bf16 on CUDA; on CPU bf16 for a bf16 checkpoint when the CPU has native bf16, else fp32)");
    cmd->add_option("-e,--embed-model", o.embed_model, "embedding model for /v1/embeddings and dense search: a folder or a name under <root>/models, as kb -r -e (default: kb_settings.yaml)");
    cmd->add_option("--rerank-model", o.rerank_model, "cross-encoder (bge-reranker-*) for POST /v1/rerank and the KB routes: a folder or a name under <root>/models (default: kb_settings.yaml USE_RERANKER/RERANKER_MODEL; none = off)");
    cmd->add_option("--root", o.root, "data root of the knowledge bases (default: $PDSD_ROOT, else ./data)");
    cmd->add_option("--queue-size", o.queue_size, "generation requests waiting or running before 429")->capture_default_str();
    cmd->add_option("--max-batch", o.max_batch, "greedy requests waiting together run as one batch of up to N rows (KV cache grows N-fold)")->capture_default_str();
    cmd->add_option("--max-body-bytes", o.max_upload_bytes, "largest request body (uploads)")->capture_default_str();
    cmd->add_option("--max-json-bytes", o.max_json_bytes, "largest JSON request body")->capture_default_str();
    cmd->add_option("--threads", o.threads, "HTTP threads (each open stream holds one)")->capture_default_str();
    cmd->add_option("--max-conns-per-client", o.max_conns_per_client, "open connections per client address before 429 (0: no cap, e.g. behind a reverse proxy)")->capture_default_str();
    cmd->add_option("--header-timeout", o.header_timeout_s, "seconds for a request's headers to arrive")->capture_default_str();
    cmd->add_option("--body-timeout", o.body_timeout_s, "seconds for a request body to arrive, plus 1 s per 64 KiB received")->capture_default_str();
    cmd->add_option("--write-timeout", o.write_timeout_s, "seconds a response may wait for a client that does not read")->capture_default_str();
}

// Numbers checked where they are read: a port past 65535 must not wrap to another one.
void check_serve_options(const serve::ServeOptions& o) {
    check_int_in_range(o.port, "--port", 0, 65535);
    check_int_in_range(o.threads, "--threads", 1, 4096);
    check_int_in_range(o.max_conns_per_client, "--max-conns-per-client", 0, 1 << 20);
    check_int_in_range(static_cast<int64_t>(o.queue_size), "--queue-size", 1, 1 << 20);
    for (auto [v, name] : {std::pair{o.header_timeout_s, "--header-timeout"}, {o.body_timeout_s, "--body-timeout"}, {o.write_timeout_s, "--write-timeout"}})
        if (!(v > 0 && v <= 86400))
            throw UsageError(ErrorInfo{}.at(name).msg("out of range").expected("seconds in (0, 86400]").found(std::to_string(v)));
}

void run(const serve::ServeOptions& o) {
    check_serve_options(o);
    serve::ServeOptions opts = o;
    if (opts.api_key.empty()) {
        if (const char* k = std::getenv("PDSD_API_KEY")) opts.api_key = k;
    }
    if (serve::run_server(opts)) throw Interrupted();
}

// `pdsd start`: Chatchat runs its API (7861) and its Streamlit page (8501) as two servers;
// pdsd serves both from one, so -a, --api and -w all start it.
void register_start(CLI::App& app, Registry& registry) {
    struct Opts {
        serve::ServeOptions serve;
        bool all = false, api = false, webui = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("start", "Chatchat's `start`: the API and the web page (pdsd serve) on 127.0.0.1:7861");
    cmd->add_flag("-a,--all", o->all, "API and web page");
    cmd->add_flag("--api", o->api, "API (the page comes with it)");
    cmd->add_flag("-w,--webui", o->webui, "web page (served with the API, at /)");
    add_serve_options(cmd, o->serve);
    registry.add(cmd, [o] {
        if (!o->all && !o->api && !o->webui)
            throw UsageError(ErrorInfo{}.at("pdsd start").msg("nothing to start").expected("-a, --api or -w")
                                 .hint("pdsd start -a starts the API and the web page on http://127.0.0.1:7861"));
        run(o->serve);
    });
}

}  // namespace

void register_serve(CLI::App& app, Registry& registry) {
    auto o = std::make_shared<serve::ServeOptions>();
    auto* cmd = app.add_subcommand("serve", "HTTP server: OpenAI-compatible chat/embeddings, Chatchat's knowledge-base API, web page");
    add_serve_options(cmd, *o);
    registry.add(cmd, [o] { run(*o); });
    register_start(app, registry);   // same server, Chatchat's spelling
}

}  // namespace pdsd::cli
