// `pdsd init [--root DIR]`: data folders, the samples knowledge base, default configs.
#include "commands.h"

#include "pdsd/kb/knowledge_base.h"

#include <cstdio>
#include <filesystem>

namespace pdsd::cli {

void register_init(CLI::App& app, Registry& registry) {
    struct Opts { std::string root; };
    auto opts = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("init", "create the data root (knowledge_base/, the samples KB, kb_settings.yaml, model_settings.yaml)");
    cmd->add_option("--root", opts->root, "data root (default: $PDSD_ROOT, else ./data)");
    registry.add(cmd, [opts] {
        std::string root = kb::resolve_root(opts->root);
        std::error_code ec;
        std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
        for (auto& line : kb::init_root(root, kb::find_samples_dir(exe))) std::printf("%s\n", line.c_str());
        std::printf("next: pdsd kb -r --root %s\n", root.c_str());
    });
}

}  // namespace pdsd::cli
