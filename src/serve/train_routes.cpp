// The Training and Export tabs' routes: `pdsd train` / `pdsd export` as child processes
// (train_routes.h).
#include "train_routes.h"

#include "serve_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/lf_args.h"
#include "pdsd/core/log.h"
#include "pdsd/data/dataset.h"
#include "pdsd/tokenizer/dataset_check.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pdsd::serve {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kLogTailLines = 40;
constexpr int kDryRunTimeoutS = 120;     // the plan tokenizes every example: seconds on real data
constexpr int kStopGraceS = 10;          // server shutdown: SIGINT, then SIGKILL after this

// Keys naming folders the child writes or reads as data; they must resolve under the root.
const std::set<std::string> kRootPathKeys = {"output_dir", "export_dir", "dataset_dir", "resume_from_checkpoint"};
// `pdsd export` reads only these (the rest of lf_schema is training's).
const std::set<std::string> kExportKeys = {"model_name_or_path", "adapter_name_or_path", "template", "finetuning_type",
                                           "export_dir", "export_size", "export_dtype", "export_format", "gguf_type",
                                           "export_device", "export_legacy_format", "default_system"};

json lf_body(const httplib::Request& req) {
    return page_body(req, "a JSON object of LLaMA-Factory keys", "send Content-Type: application/json, e.g. {\"learning_rate\": 1e-4}");
}

// A value of the body as the text `--key value` carries: lists joined by commas (LF's form).
std::string value_text(const std::string& key, const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number()) return v.dump();   // shortest round-trip text of the double (1e-4 -> 0.0001)
    if (v.is_array()) {
        std::string out;
        for (auto& e : v) {
            if (!e.is_string()) throw UsageError(ErrorInfo{}.at(key).msg("wrong type").expected("a list of strings").found("a list with a " + std::string(e.type_name())));
            out += (out.empty() ? "" : ",") + e.get<std::string>();
        }
        return out;
    }
    throw UsageError(ErrorInfo{}.at(key).msg("wrong type").expected("a string, number, boolean or list of strings").found(v.type_name()));
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string part; std::getline(ss, part, ',');)
        if (!part.empty()) out.push_back(part);
    return out;
}

// An existing folder holding `marker` (config.json, adapter_config.json): absolute, or relative
// to the root, or (models) a name under <root>/models.
std::string existing_folder(const std::string& root, const std::string& key, const std::string& p, const char* marker) {
    std::vector<fs::path> tries;
    if (fs::path(p).is_absolute()) tries.push_back(p);
    else tries = {fs::path(root) / p, fs::path(root) / "models" / p};
    for (auto& t : tries)
        if (fs::is_regular_file(t / marker)) return fs::weakly_canonical(t).string();
    throw UsageError(ErrorInfo{}.at(key).msg("no such folder").expected(std::string("a folder with ") + marker).found(p)
                         .hint("an absolute path, or one relative to the server root or its models/ folder"));
}

std::string now_stamp() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&t, &tm);   // HTTP worker threads: not std::localtime's shared buffer
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
    return buf;
}

// The child's argv (after the binary) for `kind` from a body of LF keys, every key checked by
// lf_schema (unknown key, wrong type: ConfigError naming it), paths resolved and confined.
struct Plan {
    std::vector<std::string> args;   // "train", "--key=value", ...
    json keys;                       // the same as an object (absolute paths)
    std::string out_dir;
};
Plan make_plan(const std::string& root, const std::string& kind, json body) {
    const char* out_key = kind == "train" ? "output_dir" : "export_dir";
    if (!body.contains(out_key) || body[out_key] == "") body[out_key] = (kind == "train" ? "saves/train-" : "exports/export-") + now_stamp();
    if (kind == "train" && (!body.contains("dataset_dir") || body["dataset_dir"] == "")) body["dataset_dir"] = root;
    for (const char* need : {"model_name_or_path", kind == "train" ? "dataset" : "adapter_name_or_path"})
        if (!body.contains(need) || body[need].is_null() || body[need] == "" || body[need] == json::array())
            throw UsageError(ErrorInfo{}.at(need).msg("'" + std::string(need) + "' is required"));
    LfArgs args;
    ConfigSchema schema = lf_schema(args, kind);
    Plan plan;
    plan.args.push_back(kind);
    for (auto& [key, v] : body.items()) {   // names and types first: a typo is reported before any path
        if (kind == "export" && !kExportKeys.count(key))
            throw UsageError(ErrorInfo{}.at("key '" + key + "'").msg("unknown export key").hint("export takes: model_name_or_path, adapter_name_or_path, export_dir, export_dtype, export_size, export_format, gguf_type, template"));
        if (!v.is_null()) schema.set(key, value_text(key, v), "request body");
    }
    for (auto& [key, v] : body.items()) {
        if (v.is_null()) continue;
        std::string text = value_text(key, v);
        if (kRootPathKeys.count(key)) text = under_root(root, key, text);
        else if (key == "model_name_or_path") text = existing_folder(root, key, text, "config.json");
        else if (key == "adapter_name_or_path") {
            std::string joined;
            for (auto& a : split_commas(text)) joined += (joined.empty() ? "" : ",") + existing_folder(root, key, a, "adapter_config.json");
            text = joined;
        }
        // One argv entry per key: a value that starts with "--" stays a value (not the next option).
        plan.args.push_back("--" + key + "=" + text);
        plan.keys[key] = text;
    }
    plan.out_dir = plan.keys[out_key];
    return plan;
}

// "pdsd train --key=value ...", each argument quoted for a POSIX shell where needed.
std::string command_line(const std::vector<std::string>& args) {
    std::string out = "pdsd";
    for (auto& a : args) {
        bool plain = !a.empty() && std::all_of(a.begin(), a.end(), [](unsigned char c) {
            return std::isalnum(c) || std::strchr("-_./,:=+@", c) != nullptr;
        });
        std::string q = "'";
        for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
        out += " " + (plain ? a : q + "'");
    }
    return out;
}

// fork + execv with stdout/stderr on `out_fd`, stdin /dev/null; returns the pid. Between fork
// and exec only async-signal-safe calls (the server is multi-threaded).
int spawn(const std::string& exe, const std::vector<std::string>& args, int out_fd) {
    std::vector<std::string> argv_s{exe};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = ::fork();
    if (pid < 0) {
        if (null_fd >= 0) ::close(null_fd);
        throw IoError(ErrorInfo{}.msg("cannot start a child process").found(std::strerror(errno)));
    }
    if (pid == 0) {
        if (null_fd >= 0) ::dup2(null_fd, 0);
        ::dup2(out_fd, 1);
        ::dup2(out_fd, 2);
        sigset_t none;   // the server's threads may block signals; SIGINT must reach pdsd train
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD}) ::signal(s, SIG_DFL);
#ifdef SYS_close_range
        if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
            for (int fd = 3; fd < 4096; ++fd) ::close(fd);   // the server's sockets must not outlive it in the child
        ::execv(argv[0], argv.data());
        const char msg[] = "pdsd serve: execv of the pdsd binary failed\n";
        ssize_t ignored = ::write(2, msg, sizeof msg - 1);
        (void)ignored;
        ::_exit(127);
    }
    if (null_fd >= 0) ::close(null_fd);
    return pid;
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// Runs the child to the end (at most `timeout_s`), returning its exit code and output.
std::pair<int, std::string> run_capture(const std::string& exe, const std::vector<std::string>& args, int timeout_s) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw IoError(ErrorInfo{}.msg("cannot make a pipe").found(std::strerror(errno)));
    int pid = spawn(exe, args, fds[1]);
    ::close(fds[1]);
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    char buf[4096];
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        pollfd p{fds[0], POLLIN, 0};
        if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) == 0) {
            ::kill(pid, SIGKILL);
            out += "\n(pdsd serve: stopped after " + std::to_string(timeout_s) + " s)\n";
            break;
        }
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return {exit_code_of(status), out};
}

// The last `n` lines of a text file ("" when absent).
json tail_lines(const std::string& path, size_t n) {
    constexpr std::streamoff kTailBytes = 32 * 1024;
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    json lines = json::array();
    if (!f) return lines;
    std::streamoff size = f.tellg();
    f.seekg(std::max<std::streamoff>(0, size - kTailBytes));
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::string> all;
    std::stringstream ss(text);
    for (std::string line; std::getline(ss, line);) {
        auto cr = line.rfind('\r');   // a progress line redrawn with \r: its last state
        all.push_back(cr == std::string::npos ? line : line.substr(cr + 1));
    }
    for (size_t i = all.size() > n ? all.size() - n : 0; i < all.size(); ++i) lines.push_back(all[i]);
    return lines;
}

// trainer_log.jsonl (LLaMA-Factory's LogCallback lines) as the curve's points.
json loss_records(const std::string& out_dir) {
    json recs = json::array();
    std::ifstream f(fs::path(out_dir) / "trainer_log.jsonl");
    for (std::string line; std::getline(f, line);) {
        json j = json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("current_steps")) continue;   // a line being written
        json r{{"step", j["current_steps"]}};
        for (const char* k : {"loss", "eval_loss", "lr", "epoch", "total_steps"})
            if (j.contains(k)) r[k] = j[k];
        recs.push_back(r);
    }
    return recs;
}

// checkpoint-N folders of `out_dir`, by N.
json checkpoints(const std::string& out_dir) {
    std::vector<std::pair<long long, std::string>> found;
    std::error_code ec;
    for (auto& e : fs::directory_iterator(out_dir, ec)) {
        std::string name = e.path().filename().string();
        if (e.is_directory() && name.rfind("checkpoint-", 0) == 0 && name.size() > 11 &&
            std::all_of(name.begin() + 11, name.end(), ::isdigit))
            found.emplace_back(std::stoll(name.substr(11)), name);
    }
    std::sort(found.begin(), found.end());
    json out = json::array();
    for (auto& [step, name] : found) out.push_back({{"name", name}, {"step", step}, {"path", (fs::path(out_dir) / name).string()}});
    return out;
}

// The command line that serves what a finished job made (the page's 在对话中使用 loads it into
// the running server instead: POST /pdsd/models/load).
std::string serve_command(const TrainRoutes::Job& j) {
    auto key = [&](const char* k) { return j.keys.value(k, std::string()); };
    if (j.kind == "export") return command_line({"serve", "--model", j.out_dir});
    if (fs::is_regular_file(fs::path(j.out_dir) / "adapter_config.json"))
        return command_line({"serve", "--model", key("model_name_or_path"), "--adapter", j.out_dir});
    if (fs::is_regular_file(fs::path(j.out_dir) / "config.json")) return command_line({"serve", "--model", j.out_dir});
    return "";
}

std::string self_exe() {
    if (const char* e = std::getenv("PDSD_EXE"); e && *e) return e;
    std::error_code ec;
    fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? std::string("/proc/self/exe") : p.string();
}

}  // namespace

TrainRoutes::TrainRoutes(std::string root) : root_(std::move(root)), exe_(self_exe()) {}

TrainRoutes::~TrainRoutes() {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& j : jobs_) {
        reap_locked(*j, false);
        if (j->state != "running") continue;
        ::kill(j->pid, SIGINT);   // pdsd train saves a checkpoint
        for (int i = 0; i < kStopGraceS * 10 && j->state == "running"; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            reap_locked(*j, false);
        }
        if (j->state == "running") {
            ::kill(j->pid, SIGKILL);
            reap_locked(*j, true);
        }
    }
}

void TrainRoutes::reap_locked(Job& j, bool block) {
    if (j.state != "running") return;
    int status = 0;
    pid_t r = ::waitpid(j.pid, &status, block ? 0 : WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return;
    j.exit_code = r < 0 ? -1 : exit_code_of(status);
    j.state = j.exit_code == 0 ? "finished" : j.stop_requested ? "stopped" : "failed";
    log::info(kComp, log::cat(j.kind, " job ", j.id, " ", j.state, " (exit ", j.exit_code, ")"));
}

json TrainRoutes::start(const std::string& kind, const json& body) {
    Plan plan = make_plan(root_, kind, body);
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& j : jobs_) {
        reap_locked(*j, false);
        if (j->state == "running")
            throw UsageError(ErrorInfo{}.msg("a " + j->kind + " job is running (" + j->id + ")").hint("one job at a time: stop it or wait for it"));
    }
    auto job = std::make_shared<Job>();
    job->id = kind + "-" + now_stamp() + "-" + std::to_string(jobs_.size() + 1);
    job->kind = kind;
    job->argv = plan.args;
    job->keys = plan.keys;
    job->out_dir = plan.out_dir;
    fs::path logs = fs::path(root_) / "train_jobs";
    fs::create_directories(logs);
    job->log_path = (logs / (job->id + ".log")).string();
    int fd = ::open(job->log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError(ErrorInfo{job->log_path}.msg("cannot create the job's log").found(std::strerror(errno)));
    try {
        job->pid = spawn(exe_, plan.args, fd);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    jobs_.push_back(job);
    log::info(kComp, log::cat(kind, " job ", job->id, " pid ", job->pid, ": ", command_line(plan.args)));
    return {{"job_id", job->id}, {"pid", job->pid}, {"command", command_line(plan.args)}, {"output_dir", job->out_dir}};
}

json TrainRoutes::status(const std::string& kind) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = std::find_if(jobs_.rbegin(), jobs_.rend(), [&](auto& j) { return j->kind == kind; });
    if (it == jobs_.rend()) return {{"state", "idle"}};
    Job& j = **it;
    reap_locked(j, false);
    json d{{"job_id", j.id}, {"state", j.state}, {"pid", j.pid}, {"exit_code", j.exit_code}, {"command", command_line(j.argv)},
           {"output_dir", j.out_dir}, {"log", tail_lines(j.log_path, kLogTailLines)}, {"serve_command", ""}};
    if (kind == "train") {
        d["records"] = loss_records(j.out_dir);
        d["checkpoints"] = checkpoints(j.out_dir);
    }
    if (j.state == "finished") d["serve_command"] = serve_command(j);
    return d;
}

void TrainRoutes::add_routes(const AddRoute& get, const AddRoute& post) {
    get("/pdsd/train/datasets", [this](const httplib::Request& req, httplib::Response& res) {
        std::string dir = req.get_param_value("dataset_dir");
        dir = under_root(root_, "dataset_dir", dir.empty() ? root_ : dir);
        data::Problems problems;
        data::Registry reg = data::Registry::load(dir, problems);
        json d{{"dataset_dir", dir}, {"datasets", reg.names()}, {"problems", json::array()}};
        for (auto& p : problems) d["problems"].push_back(p.format());
        if (std::string name = req.get_param_value("preview"); !name.empty()) {
            tokenizer::DataCheckOptions o;   // template slots only: no tokenizer to load
            o.datasets = {name};
            o.dataset_dir = dir;
            d["preview"] = tokenizer::preview_example(o, name, 0, nullptr, nullptr, false);
        }
        page_reply(res, "success", d);
    });
    post("/pdsd/train/preview", [this](const httplib::Request& req, httplib::Response& res) {
        Plan plan = make_plan(root_, "train", lf_body(req));
        std::vector<std::string> dry = plan.args;
        dry.push_back("--dry-run");
        auto [code, text] = run_capture(exe_, dry, kDryRunTimeoutS);
        page_reply(res, "success", {{"command", command_line(plan.args)}, {"argv", plan.args}, {"output_dir", plan.out_dir},
                               {"dry_run", text}, {"dry_run_exit_code", code}});
    });
    post("/pdsd/train/start", [this](const httplib::Request& req, httplib::Response& res) {
        page_reply(res, "训练已开始", start("train", lf_body(req)));
    });
    get("/pdsd/train/status", [this](const httplib::Request&, httplib::Response& res) { page_reply(res, "success", status("train")); });
    post("/pdsd/train/stop", [this](const httplib::Request&, httplib::Response& res) {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = std::find_if(jobs_.rbegin(), jobs_.rend(), [](auto& j) { return j->kind == "train"; });
        if (it != jobs_.rend()) reap_locked(**it, false);
        if (it == jobs_.rend() || (*it)->state != "running")
            throw UsageError(ErrorInfo{}.msg("no training is running").hint("GET /pdsd/train/status shows the last run"));
        (*it)->stop_requested = true;
        ::kill((*it)->pid, SIGINT);   // pdsd train saves a checkpoint after the current step, exit 130
        page_reply(res, "正在停止（保存检查点）", {{"job_id", (*it)->id}});
    });
    get("/pdsd/train/adapters", [this](const httplib::Request&, httplib::Response& res) {
        json out = json::array();
        std::error_code ec;
        for (auto& e : fs::directory_iterator(fs::path(root_) / "saves", ec))
            if (fs::is_regular_file(e.path() / "adapter_config.json") || fs::is_regular_file(e.path() / "config.json"))
                out.push_back({{"name", e.path().filename().string()}, {"path", e.path().string()},
                               {"lora", fs::is_regular_file(e.path() / "adapter_config.json")}});
        std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["name"] < b["name"]; });
        page_reply(res, "success", out);
    });
    post("/pdsd/export/start", [this](const httplib::Request& req, httplib::Response& res) {
        page_reply(res, "导出已开始", start("export", lf_body(req)));
    });
    get("/pdsd/export/status", [this](const httplib::Request&, httplib::Response& res) { page_reply(res, "success", status("export")); });
}

}  // namespace pdsd::serve
