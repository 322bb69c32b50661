// The command line as users of the tools pdsd replaces type it, rewritten into pdsd's own
// before CLI11 parses it:
//   pdsd version                       -> pdsd --version       (llamafactory-cli version)
//   pdsd chat infer.yaml [...]         -> pdsd chat --model M --adapter A ... [...]
//   pdsd api|webchat|webui [infer.yaml] -> pdsd serve --model M ... --host H --port P
//     (LLaMA-Factory's inference YAML: model_name_or_path, adapter_name_or_path, template,
//      finetuning_type, infer_dtype, sampling keys; ports as LLaMA-Factory picks them:
//      api $API_PORT or 8000, webchat/webui $GRADIO_SERVER_PORT or 7860; bound to 127.0.0.1
//      unless $API_HOST / $GRADIO_SERVER_NAME say otherwise)
//   --kebab-case and --snake_case spellings of every multi-word flag
// An unknown subcommand throws UsageError with a did-you-mean.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace pdsd::cli {

std::vector<std::string> rewrite_argv(const CLI::App& app, std::vector<std::string> args);

}  // namespace pdsd::cli
