// Shared by the serve tests: one tiny random-weight Qwen2 per test binary, a server on
// 127.0.0.1:<ephemeral> with its own data root, and the OpenAI error-shape checks.
#pragma once

#include "test_util.h"

#include "pdsd/model/generate.h"
#include "pdsd/model/tools.h"
#include "pdsd/serve/server.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace pdsd::serve_test {

using json = nlohmann::json;
namespace fs = std::filesystem;

// One tiny model for the whole binary (init takes a few seconds).
struct TinyModel {
    std::string dir;
    std::unique_ptr<tokenizer::Tokenizer> tok;
    std::unique_ptr<model::Generator> gen;   // reference generations, same options as the server
    static TinyModel& get() {
        static TinyModel m;
        return m;
    }

private:
    TinyModel() {
        dir = (fs::temp_directory_path() / ("pdsd-serve-tiny-" + std::to_string(::getpid()))).string();
        fs::remove_all(dir);
        model::InitOptions o;
        o.preset = "tiny";
        o.out_dir = dir;
        o.seed = 5;
        o.tokenizer_dir = test::fixtures() + "/qwen-tokenizer";
        model::init_random_checkpoint(o);
        tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(dir));
        gen = std::make_unique<model::Generator>(model::Generator::load(dir, "cpu", ""));
    }
};

struct Reference {
    std::vector<int64_t> tokens;
    std::string text;
    int64_t prompt_tokens;
};
// What the server must answer for `messages` greedily with max_tokens n.
inline Reference reference(const std::vector<tokenizer::ChatMessage>& messages, int64_t n) {
    auto& m = TinyModel::get();
    auto ids32 = m.tok->encode(tokenizer::render_qwen_chat(messages, true));
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    model::GenerationOptions g;
    g.do_sample = false;
    g.max_new_tokens = n;
    auto r = m.gen->generate(ids, g);
    std::vector<tokenizer::TokenId> t(r.tokens.begin(), r.tokens.end());
    return {r.tokens, m.tok->decode(t, true), static_cast<int64_t>(ids.size())};
}

// A server on 127.0.0.1:<ephemeral> for one test, with its own data root.
struct Running {
    test::TempDir root;
    std::unique_ptr<serve::Server> server;
    std::thread thread;
    int port = 0;
    explicit Running(serve::ServeOptions o = {}, bool with_model = true) {
        o.host = "127.0.0.1";
        o.port = 0;
        o.root = root.str();
        if (with_model) o.model_dir = TinyModel::get().dir;
        if (o.embed_model.empty()) o.embed_model = "hash-ngram";
        server = std::make_unique<serve::Server>(o);
        port = server->bind();
        thread = std::thread([this] { server->listen(); });
    }
    ~Running() {
        server->stop();
        thread.join();
    }
    httplib::Client client(const std::string& key = "") const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(60, 0);
        if (!key.empty()) c.set_bearer_token_auth(key.c_str());
        return c;
    }
};

inline json body_json(const httplib::Result& r) { return json::parse(r->body); }

inline void expect_error_shape(const httplib::Result& r, int status) {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r->body;
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("param"));
    EXPECT_TRUE(j["error"].contains("code"));
}

inline void expect_alive(const Running& s) {
    auto r = s.client().Get("/health");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
}

inline json chat_body(const std::string& user, int64_t max_tokens, bool stream = false) {
    return {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", user}}}},
            {"temperature", 0}, {"max_tokens", max_tokens}, {"stream", stream}};
}

// SSE "data: ..." payloads, in order.
inline std::vector<std::string> sse_data(const std::string& body) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < body.size()) {
        size_t end = body.find("\n\n", pos);
        if (end == std::string::npos) end = body.size();
        std::string ev = body.substr(pos, end - pos);
        if (ev.rfind("data: ", 0) == 0) out.push_back(ev.substr(6));
        pos = end + 2;
    }
    return out;
}

inline httplib::Result post_json(httplib::Client& c, const std::string& path, const json& j) {
    return c.Post(path.c_str(), j.dump(), "application/json");
}


}  // namespace pdsd::serve_test
