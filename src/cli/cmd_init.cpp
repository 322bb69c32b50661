// `pdsd init [--root DIR] [-l LLM] [-e EMBED] [-x URL] [-r [-k a,b]]`: data folders, the
// samples knowledge base, default configs. The flags are Chatchat's `chatchat init` ones:
//   -l NAME   default_llm_model: NAME, llm_model_path: models/NAME   (model_settings.yaml)
//   -e NAME   embed_model: NAME (kb_settings.yaml), default_embedding_model: NAME (model_settings.yaml);
//             NAME is a folder or a name under <root>/models, as for `kb -r -e NAME`
//   -x URL    api_base_url: URL (model_settings.yaml; recorded for Chatchat's clients)
//   -r        then rebuild the knowledge bases of -k (default samples), like `pdsd kb -r`
// Given flags update the settings files even when they already exist (as chatchat init does).
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/rag/prompt_settings.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

namespace pdsd::cli {

namespace fs = std::filesystem;

namespace {
// Chatchat's init records names without checking them; pdsd does the same but says where
// the folder is expected, since nothing is downloaded.
void note_missing(const std::string& root, const std::string& name, const char* what) {
    std::error_code ec;
    fs::path under = fs::path(root) / "models" / name;
    if (fs::is_directory(name, ec) || fs::is_directory(under, ec)) return;
    std::printf("note: %s folder is not there yet: put the Hugging Face folder at %s (pdsd downloads nothing)\n", what,
                under.string().c_str());
}
}  // namespace

void register_init(CLI::App& app, Registry& registry) {
    struct Opts {
        std::string root, llm_model, embed_model, xf_endpoint, kb_names = "samples";
        bool recreate = false;
    };
    auto opts = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("init", "create the data root (knowledge_base/, the samples KB, kb_settings.yaml, model_settings.yaml, prompt_settings.yaml)");
    cmd->add_option("--root", opts->root, "data root (default: $PDSD_ROOT, else ./data)");
    cmd->add_option("-l,--llm-model", opts->llm_model, "default chat model: a name under <root>/models (written to model_settings.yaml)");
    cmd->add_option("-e,--embed-model", opts->embed_model, "default embedding model: a folder, a name under <root>/models, hash-ngram or none (kb_settings.yaml)");
    cmd->add_option("-x,--xinference-endpoint", opts->xf_endpoint, "API base URL recorded as api_base_url in model_settings.yaml (Chatchat's -x)");
    cmd->add_flag("-r,--recreate-kb", opts->recreate, "also rebuild the knowledge bases of -k (like pdsd kb -r)");
    cmd->add_option("-k,--kb-names", opts->kb_names, "knowledge bases to rebuild with -r, comma-separated")->capture_default_str();
    registry.add(cmd, [opts] {
        std::string root = kb::resolve_root(opts->root);
        std::error_code ec;
        std::string exe = fs::read_symlink("/proc/self/exe", ec).string();
        for (auto& line : kb::init_root(root, kb::find_samples_dir(exe))) std::printf("%s\n", line.c_str());
        // Chatchat's prompt_settings.yaml (the rag layer owns the templates, so not kb::init_root).
        const std::string prompt_yaml = (fs::path(root) / "prompt_settings.yaml").string();
        if (fs::exists(prompt_yaml)) {
            std::printf("kept existing %s\n", prompt_yaml.c_str());
        } else {
            write_file_atomic(prompt_yaml, rag::default_prompt_settings_yaml());
            std::printf("wrote %s\n", prompt_yaml.c_str());
        }

        const std::string model_yaml = (fs::path(root) / "model_settings.yaml").string();
        const std::string kb_yaml = (fs::path(root) / "kb_settings.yaml").string();
        if (!opts->llm_model.empty()) {
            kb::set_settings_keys(model_yaml, {{"default_llm_model", opts->llm_model}, {"llm_model_path", "models/" + opts->llm_model}});
            std::printf("set default_llm_model %s in %s\n", opts->llm_model.c_str(), model_yaml.c_str());
            note_missing(root, opts->llm_model, "the chat model");
        }
        if (!opts->embed_model.empty()) {
            kb::set_settings_keys(kb_yaml, {{"embed_model", opts->embed_model}});
            kb::set_settings_keys(model_yaml, {{"default_embedding_model", opts->embed_model}});
            std::printf("set embed_model %s in %s\n", opts->embed_model.c_str(), kb_yaml.c_str());
            if (opts->embed_model != "none" && opts->embed_model.rfind("hash-ngram", 0) != 0) note_missing(root, opts->embed_model, "the embedding model");
        }
        if (!opts->xf_endpoint.empty()) {
            kb::set_settings_keys(model_yaml, {{"api_base_url", opts->xf_endpoint}});
            std::printf("set api_base_url %s in %s\n", opts->xf_endpoint.c_str(), model_yaml.c_str());
        }
        if (!opts->recreate) {
            std::printf("next: pdsd kb -r --root %s\n", root.c_str());
            return;
        }
        kb::UpdateOptions u;
        std::istringstream names(opts->kb_names);
        for (std::string n; std::getline(names, n, ',');)
            if (!n.empty()) u.kb_names.push_back(n);
        u.mode = kb::UpdateMode::recreate;
        u.progress = false;
        kb::UpdateReport r = kb::update_knowledge_bases(root, u);
        std::printf("rebuilt %zu file(s), %zu chunks in %.1f s\n", r.files.size(), r.chunks_written, r.seconds);
        std::printf("next: pdsd start -a --root %s\n", root.c_str());
    });
}

}  // namespace pdsd::cli
