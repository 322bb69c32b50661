// The one loader of a chat model, for `pdsd chat` and `pdsd serve`:
//   ChatModel m = load_chat_model({root, "--model value", adapter, device, dtype, quant});
// `model` is a folder or a name under <root>/models; empty: model_settings.yaml's
// llm_model_path, then default_llm_model (kb::resolve_llm_model_dir). No model found:
// ChatModel::dir is empty and the caller answers retrieval-only. The tokenizer must be in
// the model folder and fit its vocabulary; it loads on a second thread while the weights load.
#pragma once

#include "pdsd/model/generate.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <memory>
#include <string>

namespace pdsd::chat {

struct ChatModelOptions {
    std::string root;       // data root (kb::resolve_root already applied)
    std::string model;      // --model: folder or name under <root>/models; "" = settings
    std::string adapter;    // PEFT LoRA folder applied unmerged; "" = none
    std::string device = "cpu";
    std::string dtype;      // "" = the loader's default for the device
    std::string quant;      // none | int8 | int4 (model/quant.h); "" = model_settings.yaml's quant:
};

struct ChatModel {
    std::string dir;                                // resolved folder; "" = no model
    std::string quant;                              // the quantization applied (--quant, else model_settings.yaml's)
    std::unique_ptr<tokenizer::Tokenizer> tokenizer;
    std::unique_ptr<model::Generator> generator;
};

ChatModel load_chat_model(const ChatModelOptions& options);

}  // namespace pdsd::chat
