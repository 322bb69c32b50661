// Private to src/serve: the web page's Training and Export tabs (LlamaBoard's), as routes that
// run `pdsd train` / `pdsd export` as child processes of the server's own binary.
//
//   GET  /pdsd/train/datasets?dataset_dir=&preview=NAME   names in dataset_info.json (+ one example
//                                                         of NAME rendered by `data preview`'s code)
//   POST /pdsd/train/preview  {LF train keys}             the command line and its --dry-run plan
//   POST /pdsd/train/start    {LF train keys}             job id; output_dir <root>/saves/<time> unless given
//   GET  /pdsd/train/status                               the latest train job: state, pid, log tail,
//                                                         trainer_log.jsonl records, checkpoints
//   POST /pdsd/train/stop                                 SIGINT (pdsd train saves a checkpoint, exit 130)
//   GET  /pdsd/train/adapters                             finished runs under <root>/saves (adapter folders)
//   POST /pdsd/export/start   {LF export keys}            job id (merge; export_format gguf adds a .gguf)
//   GET  /pdsd/export/status                              the latest export job
//
// Bodies are flat objects of LLaMA-Factory keys (lf_schema: an unknown key is 400 naming it);
// values are strings, numbers, booleans or lists of strings. No shell: the child gets an argv
// vector (`train --key=value ...`, one entry per key) through execv. Paths (output_dir, export_dir, dataset_dir, resume_from_checkpoint) must
// resolve under the server root (relative ones are taken from it); model_name_or_path and
// adapter_name_or_path may also be existing model / adapter folders elsewhere. One job at a
// time (train or export): starting while one runs is 400. Starting again with the output_dir of
// a stopped run resumes it (pdsd train resumes from the newest checkpoint-N by itself).
//
// The binary run is $PDSD_EXE when set (tests, whose own executable is not pdsd), else the
// server's own (/proc/self/exe). Replies are {"code":200,"msg","data"} like the page's other routes.
#pragma once

#include "route_set.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pdsd::serve {

class TrainRoutes {
public:
    explicit TrainRoutes(std::string root);
    // A job still running is interrupted (SIGINT, then SIGKILL after 10 s) and reaped.
    ~TrainRoutes();
    TrainRoutes(const TrainRoutes&) = delete;
    TrainRoutes& operator=(const TrainRoutes&) = delete;

    void add_routes(const AddRoute& get, const AddRoute& post);

    struct Job {
        std::string id, kind;             // kind: train | export
        std::vector<std::string> argv;    // argv[0] is the binary
        std::string out_dir, log_path;    // output_dir / export_dir; the child's stdout+stderr
        nlohmann::json keys;              // the validated LF keys (absolute paths)
        int pid = -1;
        std::string state = "running";    // running | finished | failed | stopped
        int exit_code = -1;
        bool stop_requested = false;
    };

private:
    std::string root_, exe_;
    std::mutex mu_;                       // jobs_ and the child's state
    std::vector<std::shared_ptr<Job>> jobs_;   // oldest first; the last of a kind is its status

    nlohmann::json start(const std::string& kind, const nlohmann::json& body);
    nlohmann::json status(const std::string& kind);
    void reap_locked(Job& job, bool block);
};

}  // namespace pdsd::serve
