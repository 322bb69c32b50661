// Private to src/serve: which chat model the server runs, and the routes that list and switch it
// at runtime (Xinference's launch / vLLM's served models, for the page's model picker).
//
//   GET  /pdsd/models            data: {loaded, loading, last_error, models, adapters, exports}
//                                  loaded   {id, model, adapter, device, dtype, quant} | null
//                                  models   base model folders under <root>/models
//                                  adapters PEFT folders under <root>/saves (runs and their checkpoint-N)
//                                  exports  merged models under <root>/exports (and full fine-tunes under saves)
//                                each entry {name, path (relative to the root), ...}; the command line's
//                                --model / --adapter are listed too, wherever they are
//   POST /pdsd/models/load       {model, adapter, dtype?, quant?, model_name?, wait? (true)}
//                                loads through chat::load_chat_model on a loader thread and swaps
//                                it in between generation batches; data: the new `loaded`.
//                                wait false: 202 at once, GET /pdsd/models shows `loading`.
//                                Another load running: 409. A failed load keeps the old model.
//
// Paths are folders under the root (relative ones taken from it; a model also as a name under
// <root>/models), resolved with their symlinks; only the command line's own --model / --adapter
// may lie elsewhere. `model` "" or absent: the adapter's base_model_name_or_path when that is a
// loadable folder, else the loaded model. `adapter` "" or absent: none. An adapter whose
// base_model_name_or_path is a model of another shape is refused before loading; one whose
// tensors do not fit is refused by the loader. Replies are the page's {"code","msg","data"}.
#pragma once

#include "generation_queue.h"
#include "route_set.h"

#include "pdsd/chat/model_loader.h"

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace pdsd::serve {

// The one load of a chat model into a ServedModel (start-up and the load route): null when
// `o` names no model (retrieval-only). `id` "" : the adapter's run name, else the model's folder name.
std::shared_ptr<ServedModel> load_served_model(const chat::ChatModelOptions& o, const std::string& id);

class ModelRoutes {
public:
    // `initial`: the start-up model (null: none); `options`: the server's root, device, dtype, quant.
    ModelRoutes(chat::ChatModelOptions options, std::shared_ptr<ServedModel> initial);
    ~ModelRoutes();   // waits for a running load (a load cannot be interrupted)
    ModelRoutes(const ModelRoutes&) = delete;
    ModelRoutes& operator=(const ModelRoutes&) = delete;

    // The model a new request runs on (null: none loaded). Hold it for the whole request.
    std::shared_ptr<ServedModel> current() const;
    void add_routes(const AddRoute& get, const AddRoute& post);
    // Tests: while paused, a finished load waits before it swaps (so "a load is running" lasts).
    void pause_swaps(bool paused);

private:
    struct Request {                  // a validated load: absolute folders
        chat::ChatModelOptions options;
        std::string id;
    };
    struct Outcome {                  // of one load, for the request that asked for it
        bool finished = false;
        int status = 200;             // HTTP status of the failure (200: loaded)
        std::string error;
        nlohmann::json loaded;        // the model it made current
    };

    nlohmann::json listing() const;
    nlohmann::json loaded_json(const ServedModel* m) const;
    Request validate(const nlohmann::json& body) const;
    std::string loadable(const std::string& key, const std::string& p, const char* marker) const;
    std::string relative(const std::string& abs) const;   // for the page: under the root, else absolute
    std::shared_ptr<Outcome> start_load(Request r);   // 409 while one runs; filled when it ends
    void run_load(Request r, Outcome& out);           // the loader thread

    chat::ChatModelOptions defaults_;          // root (canonical), device, dtype, quant of the server
    std::string startup_model_, startup_adapter_;   // canonical; loadable wherever they are
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::shared_ptr<ServedModel> current_;
    nlohmann::json loading_;                   // {model, adapter, started} while a load runs, else null
    std::string last_error_;                   // of the last load ("" : it worked)
    bool paused_ = false;
    std::thread loader_;
};

}  // namespace pdsd::serve
