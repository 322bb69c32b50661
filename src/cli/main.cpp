// pdsd: the command-line front end. The ONLY try/catch of the program lives here:
// library code throws pdsd::Error subclasses, which map to exit codes
// (1 user/data error, 2 internal error, 130 interrupted).
#include "argv.h"
#include "commands.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/core/proc_clock.h"
#include "pdsd/core/version.h"

#include <ATen/Parallel.h>

#include <iostream>
#include <thread>

int main(int argc, char** argv) {
    using namespace pdsd;
    CLI::App app{"pdsd: fine-tune, merge, serve and ground Qwen2.5 chat assistants in one binary"};
    app.set_version_flag("--version", std::string("pdsd ") + PDSD_VERSION + " (" + PDSD_GIT_REVISION + ")");
    std::string log_level = "info";
    bool verbose = false;
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off (logs go to stderr)")
        ->capture_default_str();
    app.add_flag("-v,--verbose", verbose, "same as --log-level debug");
    app.add_option("-t,--threads", threads, "CPU threads for tensor math")->capture_default_str()->check(CLI::PositiveNumber);
    app.require_subcommand(1);

    cli::Registry registry;
    cli::register_env(app, registry);
    cli::register_tokenize(app, registry);
    cli::register_data(app, registry);
    cli::register_model(app, registry);
    cli::register_export(app, registry);
    cli::register_init(app, registry);
    cli::register_kb(app, registry);
    cli::register_chat(app, registry);
    cli::register_train(app, registry);
    cli::register_serve(app, registry);

    try {
        // LLaMA-Factory / Chatchat spellings first (cli/argv.h), then CLI11.
        std::vector<std::string> args = cli::rewrite_argv(app, std::vector<std::string>(argv, argv + argc));
        std::vector<char*> cargs;
        for (auto& a : args) cargs.push_back(a.data());
        try {
            app.parse(static_cast<int>(cargs.size()), cargs.data());
        } catch (const CLI::ParseError& e) {
            int rc = app.exit(e);  // prints help/version or the parse error
            return rc == 0 ? 0 : static_cast<int>(ExitCode::user_error);
        }
        log::init(verbose ? "debug" : log_level);
        log::debug("pdsd", "main() running at " + proc_clock::stamp());  // libraries loaded, options parsed
        at::set_num_threads(threads);  // explicit: a process may start with 1 intra-op thread
        install_interrupt_handler();
        // Run the most deeply nested parsed subcommand that has a runner.
        for (auto it = registry.commands.rbegin(); it != registry.commands.rend(); ++it) {
            if (it->app->parsed()) {
                it->run();
                return 0;
            }
        }
        throw UsageError(ErrorInfo{}.msg("no command given").hint("see pdsd --help"));
    } catch (const Interrupted&) {
        log::warn("", "interrupted");
        return static_cast<int>(ExitCode::interrupted);
    } catch (const Error& e) {
        log::error("", std::string(e.kind()) + ": " + e.what());
        return static_cast<int>(e.exit_code());
    } catch (const std::exception& e) {
        // Anything else (libtorch, std) is a bug in pdsd or an unexpected environment.
        log::error("", std::string("internal error: ") + e.what() + "\n  hint: please report this with the command line you ran");
        return static_cast<int>(ExitCode::internal_error);
    }
}
