// The CLI's subcommands. Each register_* declares its options on `app` (CLI11) into a
// struct and adds a runner to `registry`; main parses once and runs the one chosen.
// Runners call one core entry point and print the result; they throw pdsd::Error.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace pdsd::cli {

struct Registry {
    struct Command {
        CLI::App* app;
        std::function<void()> run;
    };
    std::vector<Command> commands;
    void add(CLI::App* app, std::function<void()> run) { commands.push_back({app, std::move(run)}); }
};

void register_env(CLI::App& app, Registry& registry);
void register_tokenize(CLI::App& app, Registry& registry);
void register_data(CLI::App& app, Registry& registry);
void register_model(CLI::App& app, Registry& registry);
void register_export(CLI::App& app, Registry& registry);
void register_init(CLI::App& app, Registry& registry);
void register_kb(CLI::App& app, Registry& registry);
void register_chat(CLI::App& app, Registry& registry);
void register_train(CLI::App& app, Registry& registry);
void register_serve(CLI::App& app, Registry& registry);

}  // namespace pdsd::cli
