// `pdsd serve`: the OpenAI-compatible + Chatchat knowledge-base HTTP API and the web page.
//   pdsd serve --model models/Qwen2.5-0.5B-Instruct [--port 7861] [--api-key KEY]
// Ctrl-C exits 130, SIGTERM exits 0 (both shut down cleanly). docs/serve.md.
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/serve/server.h"

#include <cstdlib>

namespace pdsd::cli {

void register_serve(CLI::App& app, Registry& registry) {
    auto o = std::make_shared<serve::ServeOptions>();
    auto* cmd = app.add_subcommand("serve", "HTTP server: OpenAI-compatible chat/embeddings, Chatchat's knowledge-base API, web page");
    cmd->add_option("--host", o->host, "address to bind (127.0.0.1: this machine only)")->capture_default_str();
    cmd->add_option("--port", o->port, "port (0: any free port)")->capture_default_str();
    cmd->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' on every route but /health (default: $PDSD_API_KEY)");
    cmd->add_option("-m,--model", o->model_dir, "Hugging Face folder of the chat model (none: KB routes and retrieval-only kb_chat)");
    cmd->add_option("--model-name", o->model_name, "model id in /v1/models (default: the folder name)");
    cmd->add_option("--adapter", o->adapter_dir, "LoRA adapter folder applied at load time, without merging");
    cmd->add_option("--device", o->device, "cpu | cuda | cuda:N")->capture_default_str();
    cmd->add_option("--dtype", o->dtype, "bf16 | fp16 | fp32 (default: bf16 on CUDA; on CPU bf16 for a bf16 checkpoint when the CPU has native bf16, else fp32)");
    cmd->add_option("-e,--embed-model", o->embed_model, "embedding model for /v1/embeddings and dense search (default: kb_settings.yaml)");
    cmd->add_option("--root", o->root, "data root of the knowledge bases (default: $PDSD_ROOT, else ./data)");
    cmd->add_option("--queue-size", o->queue_size, "generation requests waiting or running before 429")->capture_default_str();
    cmd->add_option("--max-batch", o->max_batch, "greedy requests waiting together run as one batch of up to N rows (KV cache grows N-fold)")->capture_default_str();
    cmd->add_option("--max-body-bytes", o->max_upload_bytes, "largest request body (uploads)")->capture_default_str();
    cmd->add_option("--max-json-bytes", o->max_json_bytes, "largest JSON request body")->capture_default_str();
    cmd->add_option("--threads", o->threads, "HTTP threads (each open stream holds one)")->capture_default_str();
    registry.add(cmd, [o] {
        serve::ServeOptions opts = *o;
        if (opts.api_key.empty()) {
            if (const char* k = std::getenv("PDSD_API_KEY")) opts.api_key = k;
        }
        if (serve::run_server(opts)) throw Interrupted();
    });
}

}  // namespace pdsd::cli
