// `pdsd chat`: terminal chat with a Qwen2.5 model, plain or grounded in a knowledge base.
//   pdsd chat --model DIR                      REPL: /reset, /exit, Ctrl-C stops an answer
//   pdsd chat --model DIR -q "question"        one answer on stdout (logs on stderr)
//   pdsd chat --kb samples -q "question"       RAG; without a model: retrieval-only
#include "commands.h"

#include "pdsd/chat/session.h"
#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/log.h"
#include "pdsd/core/proc_clock.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/lora/generator.h"
#include "pdsd/model/generate.h"
#include "pdsd/model/quant.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>

#include <unistd.h>

namespace pdsd::cli {

namespace {
namespace fs = std::filesystem;

struct ChatOpts {
    std::string model, device = "cpu", dtype, system, question, kb, root, mode, adapter;
    std::string quant;  // --quant, else model_settings.yaml's quant:
    std::optional<double> temperature, top_p, repetition_penalty, score_threshold;
    std::optional<int64_t> top_k, max_new_tokens, seed, kb_top_k, history_len;
    std::optional<bool> do_sample;
    std::vector<std::string> stop;
    bool no_sources = false;
};

// --model, else model_settings.yaml's llm_model_path (relative to the cwd, then the data
// root) when that folder exists; "" means retrieval-only / no model.
std::string resolve_model(const ChatOpts& o, const std::string& root) {
    if (!o.model.empty()) {
        if (!fs::is_directory(o.model)) {
            throw IoError(ErrorInfo{o.model}.msg("model folder not found")
                              .hint("pass the Hugging Face folder of a Qwen2/Qwen2.5 model (config.json, model.safetensors, tokenizer.json)"));
        }
        return o.model;
    }
    fs::path settings = fs::path(root) / "model_settings.yaml";
    if (!fs::exists(settings)) return "";
    YAML::Node y = YAML::LoadFile(settings.string());
    if (!y["llm_model_path"] || y["llm_model_path"].IsNull()) return "";
    fs::path p = y["llm_model_path"].as<std::string>();
    for (fs::path c : {p, fs::path(root) / p}) {
        if (fs::is_directory(c) && fs::exists(c / "config.json")) return c.string();
    }
    log::info("chat", "no model at '" + p.string() + "' (" + settings.string() + "): answering retrieval-only");
    return "";
}

void run_chat(const ChatOpts& o, CLI::App* cmd) {
    model::quant::parse_type(o.quant);  // a bad --quant fails before the model loads
    std::string root = kb::resolve_root(o.root);
    std::string model_dir = resolve_model(o, root);

    std::unique_ptr<tokenizer::Tokenizer> tok;
    std::unique_ptr<model::Generator> gen;
    if (!model_dir.empty()) {
        if (!fs::exists(fs::path(model_dir) / "tokenizer.json") && !fs::exists(fs::path(model_dir) / "vocab.json")) {
            throw IoError(ErrorInfo{model_dir}.msg("no tokenizer in the model folder")
                              .expected("tokenizer.json (or vocab.json + merges.txt)")
                              .hint("copy the tokenizer files of the base model into this folder"));
        }
        // The tokenizer (torch-free, one thread) loads while the model loads: start-up is
        // max(tokenizer, model) instead of their sum when a core is free.
        auto tok_future = std::async(std::launch::async, [&model_dir] {
            auto t = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(model_dir));
            log::debug("chat", "tokenizer loaded at " + proc_clock::stamp());
            return t;
        });
        try {
            gen = std::make_unique<model::Generator>(lora::load_generator(model_dir, o.device, o.dtype, o.adapter));
            gen->quantize(o.quant, (fs::path(root) / "model_settings.yaml").string());  // --quant / quant: (model/quant.h)
        } catch (...) {
            try { tok_future.get(); } catch (...) {}  // report the model's error; join the thread first
            throw;
        }
        log::debug("chat", "model loaded at " + proc_clock::stamp());
        tok = tok_future.get();
        auto vocab = load_qwen2_config(model_dir).vocab_size;
        if (tok->vocab_size() > vocab) {
            throw ConfigError(ErrorInfo{model_dir}.msg("tokenizer does not match the model")
                                  .expected("token ids below vocab_size " + std::to_string(vocab))
                                  .found("tokenizer with " + std::to_string(tok->vocab_size()) + " ids")
                                  .hint("use the tokenizer files that came with this model"));
        }
    }
    std::unique_ptr<kb::KnowledgeBase> base;
    chat::ChatOptions co;
    if (!o.kb.empty()) {
        base = std::make_unique<kb::KnowledgeBase>(root, o.kb);
        kb::KbSettings ks = kb::load_kb_settings(root);
        co.search.top_k = static_cast<size_t>(o.kb_top_k.value_or(ks.top_k));
        co.search.score_threshold = o.score_threshold ? o.score_threshold : std::optional<double>(ks.score_threshold);
        co.search.mode = o.mode.empty() ? ks.search_mode : o.mode;
        co.history_len = o.history_len.value_or(3);  // Chatchat's HISTORY_LEN
    } else {
        co.history_len = o.history_len.value_or(-1);
    }
    if (!o.adapter.empty() && !gen) {
        throw UsageError(ErrorInfo{}.at("--adapter").msg("an adapter needs a model").hint("pass --model DIR too"));
    }
    if (!gen && !base) {
        throw UsageError(ErrorInfo{}.msg("nothing to chat with").hint("pass --model DIR, or --kb NAME for retrieval-only answers"));
    }
    if (!o.system.empty()) co.system = o.system;
    co.stop = o.stop;
    auto& g = co.generation;
    g.temperature = o.temperature;
    g.top_p = o.top_p;
    g.top_k = o.top_k;
    g.repetition_penalty = o.repetition_penalty;
    g.max_new_tokens = o.max_new_tokens;
    if (o.seed) g.seed = static_cast<uint64_t>(*o.seed);
    g.do_sample = o.do_sample;
    if (o.temperature && *o.temperature == 0.0) g.do_sample = false;  // --temperature 0 is greedy
    chat::ChatSession session(gen.get(), tok.get(), base.get(), co);

    auto print_piece = [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
    };
    auto print_sources = [&](const chat::Answer& a) {
        if (!base || o.no_sources || a.retrieval_only) return;
        std::printf("\n\n%s", rag::format_sources(a.sources, /*with_text=*/false).c_str());
    };
    if (!cmd->get_option("--question")->empty()) {
        // One-shot for scripts: the answer text alone on stdout (sources after it for RAG).
        chat::Answer a = session.ask(o.question, print_piece);
        if (a.retrieval_only) log::info("chat", "no model: retrieval-only answer (the chunks found for the question)");
        print_sources(a);
        std::printf("\n");
        if (a.interrupted) throw Interrupted();
        return;
    }

    bool tty = ::isatty(STDIN_FILENO);
    if (tty) {
        std::fprintf(stderr, "pdsd chat: %s%s. /reset clears the history, /exit quits, Ctrl-C stops an answer.\n",
                     gen ? model_dir.c_str() : "retrieval-only", base ? (" over knowledge base " + o.kb).c_str() : "");
    }
    std::string line;
    while (true) {
        if (tty) std::fprintf(stderr, "\n>>> ");
        if (!std::getline(std::cin, line)) {
            if (interrupt_requested() && !std::cin.eof()) {  // Ctrl-C at the prompt: new prompt
                clear_interrupt();
                std::cin.clear();
                continue;
            }
            break;  // EOF (Ctrl-D) or closed input
        }
        if (line == "/exit" || line == "/quit") break;
        if (line == "/reset") {
            session.reset();
            std::fprintf(stderr, "history cleared\n");
            continue;
        }
        if (line.empty()) continue;
        chat::Answer a = session.ask(line, print_piece);
        print_sources(a);
        std::printf("\n");
        std::fflush(stdout);
        if (a.interrupted) std::fprintf(stderr, "[stopped]\n");
    }
}
}  // namespace

void register_chat(CLI::App& app, Registry& registry) {
    auto o = std::make_shared<ChatOpts>();
    auto* cmd = app.add_subcommand("chat", "chat with a Qwen2.5 model in the terminal, plain or over a knowledge base (RAG)");
    cmd->add_option("-m,--model", o->model, "Hugging Face folder of the model (default: model_settings.yaml's llm_model_path)");
    cmd->add_option("--device", o->device, "cpu | cuda | cuda:N")->capture_default_str();
    cmd->add_option("--dtype", o->dtype, "bf16 | fp16 | fp32 (default: bf16 on CUDA; on CPU bf16 for a bf16 checkpoint when the CPU has native bf16, else fp32; on CPU a checkpoint stored in this dtype is mapped, not copied)");
    cmd->add_option("--quant", o->quant, "none | int8 | int4: weight-only quantization at load, CPU (default: model_settings.yaml's quant, else none)");
    cmd->add_option("--adapter", o->adapter, "LoRA adapter folder (PEFT) applied at load time, without merging");
    cmd->add_option("-q,--question", o->question, "answer this one question and exit (answer text alone on stdout)");
    cmd->add_option("--system", o->system, "system prompt (default: Qwen2.5's)");
    cmd->add_option("--temperature", o->temperature, "sampling temperature; 0 = greedy (default: generation_config.json)");
    cmd->add_option("--top_p", o->top_p, "nucleus sampling threshold");
    cmd->add_option("--top_k", o->top_k, "sample among the k most likely tokens");
    cmd->add_option("--repetition_penalty", o->repetition_penalty, "HF repetition penalty (1 = off)");
    cmd->add_option("--max_new_tokens", o->max_new_tokens, "at most this many tokens per answer");
    cmd->add_option("--do_sample", o->do_sample, "true: sample, false: greedy");
    cmd->add_option("--seed", o->seed, "random seed for sampling");
    cmd->add_option("--stop", o->stop, "stop string (repeatable)");
    cmd->add_option("--history_len", o->history_len, "past turns kept in the prompt (default: all; 3 with --kb)");
    cmd->add_option("--kb", o->kb, "knowledge base to ground answers in (RAG)");
    cmd->add_option("--root", o->root, "data root of the knowledge bases (default: $PDSD_ROOT, else ./data)");
    cmd->add_option("--kb_top_k", o->kb_top_k, "chunks retrieved per question (default: kb_settings.yaml, 3)");
    cmd->add_option("--score_threshold", o->score_threshold, "keep chunks scoring at least this (see pdsd kb search)");
    cmd->add_option("--search_mode", o->mode, "bm25 | dense | hybrid (default: kb_settings.yaml)");
    cmd->add_flag("--no_sources", o->no_sources, "do not print the sources after a RAG answer");
    registry.add(cmd, [o, cmd] { run_chat(*o, cmd); });
}

}  // namespace pdsd::cli
