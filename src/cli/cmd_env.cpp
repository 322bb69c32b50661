// `pdsd env`: what pdsd runs on, like `llamafactory-cli env`; paste it into bug reports.
#include "commands.h"

#include "pdsd/core/version.h"
#include "pdsd/kb/pg_store.h"
#include "pdsd/model/cpu_decode.h"
#include "pdsd/model/quant.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <faiss/Index.h>
#include <sqlite3.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include <sys/utsname.h>

namespace pdsd::cli {

namespace {
// The BLAS line of libtorch's build configuration ("BLAS_INFO=mkl, ...").
std::string torch_blas() {
    std::istringstream cfg(at::show_config());
    std::string line;
    while (std::getline(cfg, line)) {
        auto pos = line.find("BLAS_INFO=");
        if (pos != std::string::npos) {
            auto end = line.find(',', pos);
            return line.substr(pos + 10, end == std::string::npos ? std::string::npos : end - pos - 10);
        }
    }
    return "unknown";
}

void print_env() {
    struct utsname u {};
    uname(&u);
    std::printf("- pdsd version: %s (%s)\n", PDSD_VERSION, PDSD_GIT_REVISION);
    std::printf("- Platform: %s %s %s\n", u.sysname, u.release, u.machine);
    std::printf("- CPU cores: %u\n", std::thread::hardware_concurrency());
    std::printf("- libtorch version: %s\n", TORCH_VERSION);
    std::printf("- Intra-op threads: %d\n", at::get_num_threads());
    std::printf("- Torch BLAS: %s\n", torch_blas().c_str());
    // Which CPU decode kernels run: bf16 (model/cpu_decode.h) and --quant int8/int4 (model/quant.h).
    std::printf("- CPU bf16 decode kernels: %s\n", pdsd::model::cpu_decode::cpu_supported() ? "avx512_bf16" : "no (ATen/oneDNN)");
    std::string isas;
    for (const auto& i : pdsd::model::quant::available_isas()) isas += (isas.empty() ? "" : ", ") + i;
    std::printf("- CPU quantized kernels (--quant): %s (this CPU runs: %s)\n", pdsd::model::quant::isa().c_str(), isas.c_str());
    bool cuda = torch::cuda::is_available();
    std::printf("- CUDA available: %s\n", cuda ? "yes" : "no");
    if (cuda) std::printf("- CUDA devices: %d\n", static_cast<int>(torch::cuda::device_count()));
    std::printf("- FAISS version: %d.%d.%d\n", FAISS_VERSION_MAJOR, FAISS_VERSION_MINOR, FAISS_VERSION_PATCH);
    std::printf("- SQLite version: %s (FTS5: %s)\n", sqlite3_libversion(),
                sqlite3_compileoption_used("ENABLE_FTS5") ? "yes" : "no");
    std::printf("- PostgreSQL store (vs_type pg): %s\n", pdsd::kb::pg_store_available() ? "yes (libpq)" : "no (built without libpq)");
}
}  // namespace

void register_env(CLI::App& app, Registry& registry) {
    auto* cmd = app.add_subcommand("env", "print versions of pdsd, libtorch, CUDA, FAISS and SQLite");
    registry.add(cmd, [] { print_env(); });
}

}  // namespace pdsd::cli
