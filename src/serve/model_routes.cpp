// The served chat model and the routes that list and switch it (model_routes.h).
#include "model_routes.h"

#include "http_front.h"
#include "serve_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"
#include "pdsd/core/log.h"

#include <algorithm>
#include <cctype>
#include <exception>
#include <fstream>
#include <utility>
#include <vector>

namespace pdsd::serve {

namespace {

constexpr size_t kMaxListed = 500;   // entries per list: a root with thousands of runs stays one small reply

bool has_file(const fs::path& dir, const char* name) {
    std::error_code ec;
    return fs::is_regular_file(dir / name, ec);
}
bool is_model(const fs::path& d) { return has_file(d, "config.json") && (has_file(d, "tokenizer.json") || has_file(d, "vocab.json")); }
bool is_adapter(const fs::path& d) { return has_file(d, "adapter_config.json"); }

bool is_checkpoint(const std::string& name) {
    return name.size() > 11 && name.rfind("checkpoint-", 0) == 0 &&
           std::all_of(name.begin() + 11, name.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

// The id a model gets when none is given: the adapter's run ("run" or "run/checkpoint-N"),
// else the model folder's name.
std::string default_id(const fs::path& model, const fs::path& adapter) {
    auto name = [](const fs::path& p) {
        fs::path n = p.lexically_normal();
        if (n.filename().empty()) n = n.parent_path();
        return n;
    };
    if (adapter.empty()) return name(model).filename().string();
    fs::path a = name(adapter);
    std::string leaf = a.filename().string();
    return is_checkpoint(leaf) ? a.parent_path().filename().string() + "/" + leaf : leaf;
}

// adapter_config.json's base_model_name_or_path ("" when absent or unreadable: the loader reports those).
std::string base_model_of(const std::string& adapter_dir) {
    std::ifstream f(fs::path(adapter_dir) / "adapter_config.json");
    json j = json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("base_model_name_or_path") || !j["base_model_name_or_path"].is_string()) return "";
    return j["base_model_name_or_path"].get<std::string>();
}

// The shape of a model as "hidden_size 64, 2 layers, 4/2 heads, intermediate 176, vocab 2048".
std::string shape_text(const Qwen2Config& c) {
    return "hidden_size " + std::to_string(c.hidden_size) + ", " + std::to_string(c.num_hidden_layers) + " layers, " +
           std::to_string(c.num_attention_heads) + "/" + std::to_string(c.num_key_value_heads) + " heads, intermediate " +
           std::to_string(c.intermediate_size) + ", vocab " + std::to_string(c.vocab_size);
}

// A failed load as the HTTP error the load route answers (the route wrapper's mapping).
HttpError load_error(const std::exception& e, const std::string& what, const std::string& still) {
    int status = 400;                       // a ConfigError, ShapeError, UsageError of the model or adapter
    if (dynamic_cast<const IoError*>(&e)) status = 404;
    else if (dynamic_cast<const InternalError*>(&e)) status = 500;
    else if (!dynamic_cast<const Error*>(&e)) status = 500;   // bad_alloc, torch: not the request's fault
    return HttpError{status, "cannot load " + what + ": " + e.what() + " (" + still + ")", error_type(status), "model", "model_load_failed"};
}

}  // namespace

std::shared_ptr<ServedModel> load_served_model(const chat::ChatModelOptions& o, const std::string& id) {
    chat::ChatModel cm = chat::load_chat_model(o);
    if (cm.dir.empty()) return nullptr;
    auto m = std::make_shared<ServedModel>();
    m->dir = fs::weakly_canonical(cm.dir).string();
    m->adapter = o.adapter.empty() ? "" : fs::weakly_canonical(o.adapter).string();
    m->id = !id.empty() ? id : default_id(m->dir, m->adapter);
    m->device = o.device;
    m->dtype = o.dtype;
    m->quant = cm.quant.empty() ? "none" : cm.quant;
    m->tokenizer = std::move(cm.tokenizer);
    m->generator = std::move(cm.generator);
    return m;
}

ModelRoutes::ModelRoutes(chat::ChatModelOptions options, std::shared_ptr<ServedModel> initial)
    : defaults_(std::move(options)), current_(std::move(initial)) {
    defaults_.root = fs::weakly_canonical(defaults_.root).string();
    defaults_.model.clear();
    defaults_.adapter.clear();
    if (current_) {
        startup_model_ = current_->dir;
        startup_adapter_ = current_->adapter;
    }
}

ModelRoutes::~ModelRoutes() {
    if (loader_.joinable()) loader_.join();
}

std::shared_ptr<ServedModel> ModelRoutes::current() const {
    std::lock_guard<std::mutex> lk(mu_);
    return current_;
}

void ModelRoutes::pause_swaps(bool paused) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        paused_ = paused;
    }
    cv_.notify_all();
}

std::string ModelRoutes::relative(const std::string& abs) const {
    if (abs.empty() || !path_inside(defaults_.root, abs)) return abs;
    return fs::path(abs).lexically_relative(defaults_.root).string();
}

// `p` as a folder holding `marker`: absolute, or relative to the root, or (a model) a name under
// <root>/models; resolved with its symlinks and confined to the root (the command line's own
// --model / --adapter excepted). UsageError naming `key` otherwise.
std::string ModelRoutes::loadable(const std::string& key, const std::string& p, const char* marker) const {
    const fs::path root = defaults_.root;
    std::vector<fs::path> tries;
    if (fs::path(p).is_absolute()) tries.push_back(p);
    else {
        tries.push_back(root / p);
        if (key == "model") tries.push_back(root / "models" / p);
    }
    for (auto& t : tries) {
        if (!has_file(t, marker)) continue;
        const std::string c = fs::weakly_canonical(t).string();
        if (path_inside(root, c) || c == startup_model_ || c == startup_adapter_) return c;
        under_root(defaults_.root, key, c);   // throws: outside the root
    }
    throw UsageError(ErrorInfo{}.at(key).msg("no such folder").expected(std::string("a folder with ") + marker + " under " + defaults_.root)
                         .found(p).hint("pick one of GET /pdsd/models (paths relative to the server root)"));
}

ModelRoutes::Request ModelRoutes::validate(const json& body) const {
    static const std::vector<std::string> kKeys = {"model", "adapter", "dtype", "quant", "model_name", "wait"};
    for (auto& [k, v] : body.items())
        if (std::find(kKeys.begin(), kKeys.end(), k) == kKeys.end())
            throw UsageError(ErrorInfo{}.at("key '" + k + "'").msg("unknown key").hint("the load route takes: model, adapter, dtype, quant, model_name, wait"));
    Request r{defaults_, get_string(body, "model_name").value_or("")};
    const std::string model = get_string(body, "model").value_or(""), adapter = get_string(body, "adapter").value_or("");
    r.options.adapter = adapter.empty() ? "" : loadable("adapter", adapter, "adapter_config.json");
    if (auto d = get_string(body, "dtype"); d && !d->empty()) r.options.dtype = *d;
    if (auto q = get_string(body, "quant"); q && !q->empty()) r.options.quant = *q;
    // The adapter's own base when it names a model folder (absolute, under the root or its models/).
    const std::string base = r.options.adapter.empty() ? "" : base_model_of(r.options.adapter);
    std::string base_dir;
    if (!base.empty()) {
        const fs::path root = defaults_.root;
        const std::vector<fs::path> tries = fs::path(base).is_absolute() ? std::vector<fs::path>{base}
                                                                         : std::vector<fs::path>{root / base, root / "models" / base};
        for (auto& t : tries)
            if (base_dir.empty() && has_file(t, "config.json")) base_dir = fs::weakly_canonical(t).string();
    }
    if (!model.empty()) r.options.model = loadable("model", model, "config.json");
    else if (!base_dir.empty() && (path_inside(defaults_.root, base_dir) || base_dir == startup_model_)) r.options.model = base_dir;
    else if (auto cur = current()) r.options.model = cur->dir;
    else throw UsageError(ErrorInfo{}.at("model").msg("'model' is required (no model is loaded)").hint("a folder under <root>/models or <root>/exports (GET /pdsd/models)"));
    if (!base_dir.empty() && base_dir != r.options.model) {
        const Qwen2Config want = load_qwen2_config(base_dir), have = load_qwen2_config(r.options.model);
        if (shape_text(want) != shape_text(have))
            throw UsageError(ErrorInfo{r.options.adapter}.at("adapter").msg("the adapter does not fit the model")
                                 .expected("a model shaped like its base_model_name_or_path " + base + " (" + shape_text(want) + ")")
                                 .found(relative(r.options.model) + " (" + shape_text(have) + ")")
                                 .hint("load it with its base model: {\"model\": \"" + relative(base_dir) + "\", \"adapter\": ...}"));
    }
    return r;
}

std::shared_ptr<ModelRoutes::Outcome> ModelRoutes::start_load(Request r) {
    std::thread previous;
    auto done = std::make_shared<Outcome>();
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!loading_.is_null())
            throw HttpError{409, "a model is loading (" + loading_["model"].get<std::string>() +
                                     (loading_["adapter"] == "" ? "" : " + " + loading_["adapter"].get<std::string>()) +
                                     "); wait for it to finish (GET /pdsd/models shows it) and load again",
                            error_type(409), "model", "model_loading"};
        loading_ = {{"model", relative(r.options.model)}, {"adapter", relative(r.options.adapter)}, {"started", unix_now()}};
        previous = std::move(loader_);   // finished: loading_ was null (it may still be freeing the model it replaced)
        try {
            loader_ = std::thread([this, r = std::move(r), done]() mutable { run_load(std::move(r), *done); });
        } catch (...) {                  // no thread: no load is running
            loading_ = nullptr;
            loader_ = std::move(previous);
            throw;
        }
    }
    if (previous.joinable()) previous.join();
    return done;
}

void ModelRoutes::run_load(Request r, Outcome& out) {
    const std::string what = relative(r.options.model) + (r.options.adapter.empty() ? "" : " + " + relative(r.options.adapter));
    std::shared_ptr<ServedModel> next;
    log::info(kComp, "loading " + what);
    try {
        next = load_served_model(r.options, r.id);
        if (!next) throw UsageError(ErrorInfo{r.options.model}.msg("no model to load"));
    } catch (const std::exception& e) {
        auto cur = current();
        HttpError he = load_error(e, what, cur ? "still serving " + cur->id : "no model is loaded");
        out.status = he.status;
        out.error = he.message;
        log::warn(kComp, he.message);
    }
    std::shared_ptr<ServedModel> old;
    {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return !paused_; });
        if (next) {
            old = std::move(current_);
            current_ = std::move(next);
            out.loaded = loaded_json(current_.get());
            log::info(kComp, "serving " + current_->id + " (" + what + ")");
        }
        out.finished = true;
        last_error_ = out.error;
        loading_ = nullptr;
    }
    cv_.notify_all();
    // `old` goes here, unless a queued job or an open request still holds it (then with the last of them).
}

json ModelRoutes::loaded_json(const ServedModel* m) const {
    if (!m) return nullptr;
    return {{"id", m->id}, {"model", relative(m->dir)}, {"adapter", relative(m->adapter)}, {"device", m->device},
            {"dtype", m->dtype.empty() ? "auto" : m->dtype}, {"quant", m->quant}};
}

json ModelRoutes::listing() const {
    const fs::path root = defaults_.root;
    json models = json::array(), adapters = json::array(), exports = json::array();
    auto add = [&](json& list, const fs::path& base, const fs::path& dir) {
        if (list.size() >= kMaxListed) return;
        json e{{"name", dir.lexically_relative(base).string()}, {"path", relative(dir.string())}};
        if (&list == &adapters) e["base_model_name_or_path"] = base_model_of(dir.string());
        list.push_back(std::move(e));
    };
    // Folders under `base` up to `depth` levels down; a folder that resolves outside the root is skipped.
    auto scan = [&](const fs::path& base, int depth, auto&& visit) {
        std::error_code ec;
        for (auto it = fs::recursive_directory_iterator(base, fs::directory_options::skip_permission_denied, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (it.depth() + 1 >= depth) it.disable_recursion_pending();
            std::error_code ec2;
            if (!it->is_directory(ec2) || !path_inside(root, fs::weakly_canonical(it->path(), ec2))) continue;
            if (visit(it->path())) it.disable_recursion_pending();
        }
    };
    auto models_in = [&](json& list, const fs::path& base) {
        scan(base, 2, [&](const fs::path& d) {
            if (is_model(d)) add(list, base, d);
            return is_model(d);   // nothing to list inside a model
        });
    };
    models_in(models, root / "models");
    models_in(exports, root / "exports");
    scan(root / "saves", 4, [&](const fs::path& d) {
        if (is_adapter(d)) {
            add(adapters, root / "saves", d);   // a run; its checkpoint-N folders come next
            return false;
        }
        if (!is_model(d)) return false;
        add(exports, root / "saves", d);        // a full / freeze fine-tune: a whole model
        return true;
    });
    // The command line's own folders, when the root does not hold them.
    if (!startup_model_.empty() && !path_inside(root, startup_model_)) add(models, fs::path(startup_model_).parent_path(), startup_model_);
    if (!startup_adapter_.empty() && !path_inside(root, startup_adapter_)) add(adapters, fs::path(startup_adapter_).parent_path(), startup_adapter_);
    for (json* l : {&models, &adapters, &exports})
        std::sort(l->begin(), l->end(), [](const json& a, const json& b) { return a["path"] < b["path"]; });
    std::lock_guard<std::mutex> lk(mu_);
    return {{"loaded", loaded_json(current_.get())}, {"loading", loading_},
            {"last_error", last_error_.empty() ? json(nullptr) : json(last_error_)},
            {"models", models}, {"adapters", adapters}, {"exports", exports}};
}

void ModelRoutes::add_routes(const AddRoute& get, const AddRoute& post) {
    get("/pdsd/models", [this](const httplib::Request&, httplib::Response& res) { page_reply(res, "success", listing()); });
    post("/pdsd/models/load", [this](const httplib::Request& req, httplib::Response& res) {
        json body = page_body(req);
        const bool wait = get_bool(body, "wait").value_or(true);
        std::shared_ptr<Outcome> done = start_load(validate(body));
        std::unique_lock<std::mutex> lk(mu_);
        if (!wait) {
            page_reply(res, "加载中", {{"loading", loading_}}, 202);
            return;
        }
        cv_.wait(lk, [&] { return done->finished; });
        if (done->status != 200) throw HttpError{done->status, done->error, error_type(done->status), "model", "model_load_failed"};
        page_reply(res, "模型已加载", done->loaded);
    });
}

}  // namespace pdsd::serve
