// pdsd serve's OpenAI-compatible routes (/v1/models, /v1/chat/completions, /v1/embeddings,
// /v1/rerank); the shared state is server_impl.h.
#include "server_impl.h"

#include <algorithm>
#include <string>

namespace pdsd::serve {


void Server::Impl::setup_openai() {
    get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
        json data = json::array();
        if (auto m = models->current()) data.push_back({{"id", m->id}, {"object", "model"}, {"created", created}, {"owned_by", "pdsd"}});
        if (embedder) data.push_back({{"id", embedder->name()}, {"object", "model"}, {"created", created}, {"owned_by", "pdsd"}});
        reply_json(res, {{"object", "list"}, {"data", data}});
    });
    post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat_completions(req, res); });
    post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res); });
    post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
    for (const char* path : {"/v1/rerank", "/rerank", "/v2/rerank"})   // Xinference / llama-server / Cohere (rerank_route.h)
        post(path, [this](const httplib::Request& req, httplib::Response& res) { reply_json(res, rerank_response(parse_json_object(req), reranker.get(), now_id("rerank-"))); });
}

// OpenAI's chat completions; `chatchat`: Chatchat's /chat/chat/completions (its LLM chat:
// the same answer, each object with Chatchat's message_id/status fields; no tools/agents).
void Server::Impl::chat_completions(const httplib::Request& req, httplib::Response& res, bool chatchat) {
    json body = parse_json_object(req);
    json extra = chatchat ? json{{"message_id", nullptr}, {"status", nullptr}} : json::object();
    if (chatchat) {
        for (const char* k : {"tools", "tool_choice"})
            if (const json* t = field(body, k); t && !(t->is_array() && t->empty()))
                throw bad_request(std::string("'") + k + "' (Chatchat's agent chat) is not supported by pdsd", k);
        if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() == 0) body.erase(mt);
    }
    auto job = std::make_shared<GenJob>();
    const json* msgs = field(body, "messages");
    if (!msgs) throw bad_request("'messages' is required", "messages");
    job->messages = parse_messages(*msgs, "messages", /*need_user_last=*/false);
    if (job->messages.empty()) throw bad_request("'messages' must not be empty", "messages");
    get_string(body, "model");
    parse_sampling(body, *job);
    bool stream = get_bool(body, "stream").value_or(false);
    bool include_usage = false;
    if (const json* so = field(body, "stream_options")) {
        if (!so->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
        include_usage = get_bool(*so, "include_usage").value_or(false);
    }
    job->model = models->current();
    require_model(job->model);
    const std::string turn = web->begin_turn(body, "llm_chat", job->messages.back().content);   // with a conversation_id
    if (chatchat && !turn.empty()) extra["message_id"] = turn;
    job->stream = stream;
    submit(job);
    const std::string model_id = job->model->id;   // the model this job runs on, whatever loads meanwhile

    const std::string id = now_id("chatcmpl-");
    const int64_t created_at = unix_now();
    auto usage = usage_json;
    if (!stream) {
        wait_for(*job);
        web->end_turn(turn, job->text);
        json out{{"id", id}, {"object", "chat.completion"}, {"created", created_at}, {"model", model_id},
                 {"choices", json::array({{{"index", 0}, {"message", {{"role", "assistant"}, {"content", job->text}}},
                                           {"finish_reason", job->finish_reason}, {"logprobs", nullptr}}})},
                 {"usage", usage(*job)}};
        out.update(extra);
        reply_json(res, out);
        return;
    }
    auto chunk = [id, created_at, extra, model_id](json delta, json finish) {
        json c{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created_at}, {"model", model_id},
               {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish)},
                                         {"logprobs", nullptr}}})}};
        c.update(extra);
        return c;
    };
    std::string head = sse(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
    stream_job(
        res, job, head, [chunk](const std::string& piece) { return sse(chunk({{"content", piece}}, nullptr)); },
        [chunk, include_usage, usage, id, created_at, model_id, this, turn](const GenJob& j) {
            web->end_turn(turn, j.text);
            std::string out;
            if (!j.error.empty()) {
                out += sse(error_json(HttpError{j.error_status, j.error, error_type(j.error_status), "", j.error_code}));
            } else {
                out += sse(chunk(json::object(), j.finish_reason));
                if (include_usage)
                    out += sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created_at}, {"model", model_id},
                                {"choices", json::array()}, {"usage", usage(j)}});
            }
            out += "data: [DONE]\n\n";
            return out;
        },
        keep_shown(turn));
}

void Server::Impl::embeddings(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    if (!embedder) throw HttpError{503, "no embedding model (start pdsd serve with --embed-model NAME)", "service_unavailable", "model", "model_not_loaded"};
    const json* input = field(body, "input");
    if (!input) throw bad_request("'input' is required", "input");
    std::vector<std::string> texts;
    if (input->is_string()) texts.push_back(input->get<std::string>());
    else if (input->is_array()) {
        for (auto& x : *input) {
            if (!x.is_string()) throw bad_request("'input' must be a string or an array of strings (token arrays are not supported)", "input");
            texts.push_back(x.get<std::string>());
        }
    } else throw bad_request("'input' must be a string or an array of strings", "input");
    if (texts.empty() || texts.size() > 2048) throw bad_request("'input' must hold 1 to 2048 strings", "input");
    std::string fmt = get_string(body, "encoding_format").value_or("float");
    if (fmt != "float" && fmt != "base64") throw bad_request("'encoding_format' must be float or base64", "encoding_format");
    get_string(body, "model");
    if (field(body, "dimensions")) throw bad_request("'dimensions' is not supported", "dimensions");
    std::vector<std::vector<float>> vecs = embedder->embed(texts, /*is_query=*/false);   // serialised by the wrapper
    // usage: tokens of the chat model's tokenizer when one is loaded, else UTF-8 bytes.
    const std::shared_ptr<ServedModel> m = models->current();
    int64_t tokens = 0;
    for (auto& t : texts) tokens += m ? static_cast<int64_t>(m->tokenizer->encode(t).size()) : static_cast<int64_t>(t.size());
    json data = json::array();
    for (size_t i = 0; i < vecs.size(); ++i) {
        json e{{"object", "embedding"}, {"index", i}};
        if (fmt == "base64") e["embedding"] = base64(vecs[i].data(), vecs[i].size() * sizeof(float));  // little-endian float32
        else e["embedding"] = vecs[i];
        data.push_back(std::move(e));
    }
    reply_json(res, {{"object", "list"}, {"data", data}, {"model", embedder->name()},
                     {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
}

// OpenAI's legacy completions (what llama.cpp's server, vLLM and Xinference also answer): the
// prompt is continued as it is, no chat template. `prompt`: a string, one string in an array,
// or token ids; OpenAI's default of 16 new tokens when max_tokens is absent; `echo` prepends
// the prompt text; n, best_of, logprobs and suffix other than their defaults are refused.
void Server::Impl::completions(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    auto job = std::make_shared<GenJob>();
    job->model = models->current();   // token ids are checked against the vocabulary of the model that runs them
    const json* p = field(body, "prompt");
    if (!p) throw bad_request("'prompt' is required", "prompt");
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
    if (p->is_string()) {
        job->prompt = p->get<std::string>();
    } else if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const json& x) { return x.is_number_integer(); })) {
        const int64_t vocab = job->model ? job->model->tokenizer->vocab_size() : 0;
        for (auto& x : *p) {
            const int64_t id = x.get<int64_t>();
            if (id < 0 || id >= vocab) throw bad_request("'prompt' token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")", "prompt");
            job->prompt_ids.push_back(id);
        }
    } else {
        throw bad_request("'prompt' must be a string, an array of one string, or an array of token ids (one prompt per request)", "prompt");
    }
    for (const char* k : {"suffix", "logprobs"})
        if (const json* v = field(body, k); v && !v->is_null()) throw bad_request(std::string("'") + k + "' is not supported by pdsd", k);
    if (auto b = get_int(body, "best_of", 1, 1); b && *b != 1) throw bad_request("only best_of = 1 is supported", "best_of");
    const bool echo = get_bool(body, "echo").value_or(false);
    if (echo && !job->prompt) throw bad_request("'echo' needs a text prompt", "echo");
    get_string(body, "model");
    job->options.max_new_tokens = 16;   // OpenAI's default for this route
    parse_sampling(body, *job);
    const bool stream = get_bool(body, "stream").value_or(false);
    require_model(job->model);
    job->stream = stream;
    submit(job);

    const std::string id = now_id("cmpl-"), prefix = echo ? *job->prompt : std::string(), model_id = job->model->id;
    const int64_t created_at = unix_now();
    auto choice = [id, created_at, model_id](const std::string& text, json finish) {
        return json{{"id", id}, {"object", "text_completion"}, {"created", created_at}, {"model", model_id},
                    {"choices", json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", std::move(finish)}}})}};
    };
    if (!stream) {
        wait_for(*job);
        json out = choice(prefix + job->text, job->finish_reason);
        out["usage"] = usage_json(*job);
        reply_json(res, out);
        return;
    }
    stream_job(
        res, job, prefix.empty() ? std::string() : sse(choice(prefix, nullptr)),
        [choice](const std::string& piece) { return sse(choice(piece, nullptr)); },
        [choice](const GenJob& j) {
            std::string out = j.error.empty() ? sse(choice("", j.finish_reason))
                                              : sse(error_json(HttpError{j.error_status, j.error, error_type(j.error_status), "", j.error_code}));
            return out + "data: [DONE]\n\n";
        });
}

}  // namespace pdsd::serve
