#include "pdsd/chat/model_loader.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/log.h"
#include "pdsd/core/proc_clock.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/lora/generator.h"
#include "pdsd/model/quant_type.h"

#include <filesystem>
#include <future>

namespace pdsd::chat {

namespace {
namespace fs = std::filesystem;

void check_tokenizer_files(const std::string& dir) {
    if (fs::exists(fs::path(dir) / "tokenizer.json") || fs::exists(fs::path(dir) / "vocab.json")) return;
    throw IoError(ErrorInfo{dir}.msg("no tokenizer in the model folder")
                      .expected("tokenizer.json (or vocab.json + merges.txt)")
                      .hint("copy the tokenizer files of the base model into this folder"));
}

// A tokenizer with ids past the embedding table would index out of it at the first token.
void check_vocabulary(const std::string& dir, const tokenizer::Tokenizer& tok) {
    const int64_t vocab = load_qwen2_config(dir).vocab_size;
    if (tok.vocab_size() <= vocab) return;
    throw ConfigError(ErrorInfo{dir}.msg("tokenizer does not match the model")
                          .expected("token ids below vocab_size " + std::to_string(vocab))
                          .found("tokenizer with " + std::to_string(tok.vocab_size()) + " ids")
                          .hint("use the tokenizer files that came with this model"));
}

}  // namespace

ChatModel load_chat_model(const ChatModelOptions& o) {
    // --quant, else model_settings.yaml's quant:, validated before anything else is read.
    const std::string settings = (fs::path(o.root) / "model_settings.yaml").string();
    const std::string quant = !o.quant.empty() ? o.quant : model::quant::settings_quant(settings);
    model::quant::parse_type(quant, o.quant.empty() ? settings + ": quant" : "--quant");
    ChatModel m;
    m.quant = quant;
    m.dir = kb::resolve_llm_model_dir(o.root, o.model);
    if (m.dir.empty()) {
        if (!o.adapter.empty())
            throw UsageError(ErrorInfo{}.at("--adapter").msg("an adapter needs a model").hint("pass --model DIR too"));
        return m;
    }
    check_tokenizer_files(m.dir);
    // The tokenizer (torch-free, one thread) loads while the model loads: start-up is
    // max(tokenizer, model) instead of their sum when a core is free.
    auto tok_future = std::async(std::launch::async, [dir = m.dir] {
        auto t = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(dir));
        log::debug("chat", "tokenizer loaded at " + proc_clock::stamp());
        return t;
    });
    try {
        m.generator = std::make_unique<model::Generator>(lora::load_generator(m.dir, o.device, o.dtype, o.adapter, quant));
    } catch (...) {
        try { tok_future.get(); } catch (...) {}  // report the model's error; join the thread first
        throw;
    }
    log::debug("chat", "model loaded at " + proc_clock::stamp());
    m.tokenizer = tok_future.get();
    check_vocabulary(m.dir, *m.tokenizer);
    return m;
}

}  // namespace pdsd::chat
