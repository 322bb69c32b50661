// `pdsd chat`: terminal chat with a Qwen2.5 model, plain or grounded in a knowledge base.
//   pdsd chat --model DIR                      REPL: history, """ blocks, /? /set /show /clear /bye
//   pdsd chat --model DIR -q "question"        one answer on stdout (logs on stderr)
//   pdsd chat --kb samples -q "question"       RAG; without a model: retrieval-only
#include "commands.h"

#include "pdsd/chat/model_loader.h"
#include "pdsd/chat/repl.h"
#include "pdsd/chat/session.h"
#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/model/generate.h"
#include "pdsd/rag/prompt_settings.h"
#include "pdsd/rag/retriever.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <cstdio>
#include <iostream>
#include <memory>

#include <unistd.h>

namespace pdsd::cli {

namespace {

struct ChatOpts {
    std::string model, device = "cpu", dtype, system, question, kb, root, mode, adapter, rerank, prompt_name;
    std::string quant;  // --quant, else model_settings.yaml's quant:
    std::optional<double> temperature, top_p, repetition_penalty, score_threshold;
    std::optional<int64_t> top_k, max_new_tokens, seed, kb_top_k, history_len, rerank_top_n;
    std::optional<bool> do_sample;
    std::vector<std::string> stop;
    bool no_sources = false;
};

// The terminal REPL (chat/repl.h): a message per line or per """ block, slash commands,
// tokens/s after each answer. Ctrl-C stops an answer; at the prompt it exits (130).
template <class Print, class Sources>
void run_repl(chat::ChatSession& session, const std::string& banner, const Print& print_piece, const Sources& print_sources) {
    bool tty = ::isatty(STDIN_FILENO);
    chat::LineReader in(tty ? chat::default_history_path() : "");
    if (tty) std::fprintf(stderr, "%s", banner.c_str());
    chat::ReplState state;
    auto read_line = [&](const std::string& prompt) { return in.read(prompt); };
    while (auto msg = chat::read_message(read_line)) {
        if (msg->empty()) continue;
        in.remember(*msg);
        chat::ReplReply r = chat::run_command(*msg, session, state);
        if (r.action == chat::ReplAction::exit) break;
        if (r.action == chat::ReplAction::handled) {
            std::fprintf(stderr, "%s", r.output.c_str());
            continue;
        }
        chat::Answer a = session.ask(*msg, print_piece);
        print_sources(a);
        std::printf("\n");
        std::fflush(stdout);
        if (a.interrupted) std::fprintf(stderr, "[stopped]\n");
        if (state.verbose && tty && !a.retrieval_only) std::fprintf(stderr, "%s\n", chat::answer_stats(a).c_str());
    }
}

std::string tty_banner(const std::string& model_dir, const std::string& kb) {
    return "pdsd chat: " + (model_dir.empty() ? std::string("retrieval-only") : model_dir) +
           (kb.empty() ? "" : " over knowledge base " + kb) +
           ". /? for help, /bye to leave, \"\"\" for a multi-line message, Ctrl-C stops an answer.\n";
}

void run_chat(const ChatOpts& o, CLI::App* cmd) {
    std::string root = kb::resolve_root(o.root);
    // The template first: a wrong --prompt_name fails before the model loads.
    rag::PromptTemplates templates;
    if (!o.kb.empty()) templates = rag::load_prompt_settings(root).rag(o.prompt_name.empty() ? "default" : o.prompt_name, "--prompt_name");
    else if (!o.prompt_name.empty())
        throw UsageError(ErrorInfo{}.at("--prompt_name").msg("--prompt_name picks a rag template: it needs --kb NAME"));
    chat::ChatModel cm = chat::load_chat_model({root, o.model, o.adapter, o.device, o.dtype, o.quant});
    const std::string& model_dir = cm.dir;
    std::unique_ptr<tokenizer::Tokenizer>& tok = cm.tokenizer;
    std::unique_ptr<model::Generator>& gen = cm.generator;
    rag::Retriever retriever;  // the KB as serve, kb search and kb eval open it
    std::shared_ptr<const kb::KnowledgeBase> base;
    chat::ChatOptions co;
    co.templates = templates;
    if (!o.kb.empty()) {
        base = retriever.get(root, o.kb);
        kb::SearchOverrides ov{o.kb_top_k, o.rerank_top_n, o.score_threshold, std::nullopt, std::nullopt, std::nullopt};
        if (!o.mode.empty()) ov.mode = o.mode;
        if (!o.rerank.empty()) ov.rerank_model = o.rerank;
        co.search = kb::make_search_options(root, retriever.settings(root), ov);
        co.history_len = o.history_len.value_or(3);  // Chatchat's HISTORY_LEN
    } else {
        co.history_len = o.history_len.value_or(-1);
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
        std::printf("\n\n%s", rag::reference_text(a.sources, /*with_text=*/false).c_str());
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

    run_repl(session, tty_banner(gen ? model_dir : "", o.kb), print_piece, print_sources);
}
}  // namespace

void register_chat(CLI::App& app, Registry& registry) {
    auto o = std::make_shared<ChatOpts>();
    auto* cmd = app.add_subcommand("chat", "chat with a Qwen2.5 model in the terminal, plain or over a knowledge base (RAG)");
    cmd->add_option("-m,--model", o->model, "Hugging Face folder of the model, or its name under <root>/models (default: model_settings.yaml's llm_model_path, then default_llm_model)");
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
    cmd->add_option("--rerank", o->rerank, "rerank retrieved chunks with this cross-encoder (none = off; default: kb_settings.yaml USE_RERANKER)");
    cmd->add_option("--rerank-top-n,--rerank_top_n", o->rerank_top_n, "chunks the reranker rescores before --kb_top_k (default: kb_settings.yaml, 20)");
    cmd->add_option("--prompt_name", o->prompt_name, "rag template of <root>/prompt_settings.yaml for --kb answers (default: default; rag.empty when no chunk is kept)");
    cmd->add_flag("--no_sources", o->no_sources, "do not print the sources after a RAG answer");
    registry.add(cmd, [o, cmd] { run_chat(*o, cmd); });
}

}  // namespace pdsd::cli
