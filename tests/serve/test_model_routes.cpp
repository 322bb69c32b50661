// Runtime model switching in pdsd serve (src/serve/model_routes.h): GET /pdsd/models lists the
// root's base models, adapters (runs and checkpoints) and exports; POST /pdsd/models/load swaps
// the served model between generation batches. The tiny random-weight model of serve_fixture.h
// is copied into <root>/models/tiny and given LoRA adapters with random A and B (so greedy
// output changes); every answer is checked against the same model loaded in the test itself.
#include "serve_fixture.h"

#include "pdsd/lora/adapter.h"
#include "pdsd/lora/generator.h"

#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <atomic>
#include <fstream>

using namespace pdsd;
using namespace pdsd::serve_test;

namespace {

const std::vector<tokenizer::ChatMessage> kQuestion = {{"user", "你好，介绍一下你自己"}};
constexpr int64_t kTokens = 12;

// <root>/models/<name>: a copy of the tiny model (the server confines loads to its root).
std::string copy_tiny(const Running& s, const std::string& name = "tiny") {
    fs::path dst = fs::path(s.root.str()) / "models" / name;
    fs::create_directories(dst.parent_path());
    fs::copy(TinyModel::get().dir, dst, fs::copy_options::recursive);
    return dst.string();
}

// A LoRA adapter on the tiny model's q_proj / v_proj (hidden 64, 4 q / 2 kv heads of 16) in
// `dir`, A and B random (seeded) so it changes greedy output. `in_features` other than 64
// makes one that does not fit the model.
std::string make_adapter(const std::string& dir, const std::string& base_model, uint64_t seed, int64_t in_features = 64) {
    lora::Adapter ad;
    ad.config.r = 4;
    ad.config.lora_alpha = 8;
    ad.config.base_model_name_or_path = base_model;
    at::manual_seed(seed);
    for (int layer = 0; layer < 2; ++layer)
        for (auto [proj, out] : {std::pair<const char*, int64_t>{"q_proj", 64}, {"v_proj", 32}}) {
            lora::LoraModule m;
            m.name = "model.layers." + std::to_string(layer) + ".self_attn." + proj;
            m.A = at::randn({4, in_features}).mul_(0.5);
            m.B = at::randn({out, 4}).mul_(0.5);
            m.scale = ad.config.scale_for(m.name);
            ad.modules.push_back(m);
        }
    std::sort(ad.modules.begin(), ad.modules.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    lora::save_adapter(dir, ad);
    return dir;
}

// What a greedy chat answer of `kTokens` is for `model_dir` (+ `adapter`), loaded here.
std::string greedy_answer(const std::string& model_dir, const std::string& adapter) {
    model::Generator g = lora::load_generator(model_dir, "cpu", "", adapter);
    auto& tok = *TinyModel::get().tok;
    auto ids32 = tok.encode(tokenizer::render_qwen_chat(kQuestion, true));
    model::GenerationOptions o;
    o.do_sample = false;
    o.max_new_tokens = kTokens;
    auto r = g.generate(std::vector<int64_t>(ids32.begin(), ids32.end()), o);
    return tok.decode(std::vector<tokenizer::TokenId>(r.tokens.begin(), r.tokens.end()), true);
}

json chat(const Running& s) {
    auto c = s.client();
    json b = chat_body(kQuestion[0].content, kTokens);
    auto r = post_json(c, "/v1/chat/completions", b);
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
    return body_json(r);
}
std::string answer_of(const json& j) { return j["choices"][0]["message"]["content"].get<std::string>(); }
std::string health_model(const Running& s) {
    json h = body_json(s.client().Get("/health"));
    return h["model"].is_null() ? "(none)" : h["model"].get<std::string>();
}
httplib::Result load(const Running& s, const json& body) {
    auto c = s.client();
    return post_json(c, "/pdsd/models/load", body);
}
json listing(const Running& s) { return body_json(s.client().Get("/pdsd/models"))["data"]; }

bool lists(const json& list, const std::string& name, const std::string& path) {
    for (auto& e : list)
        if (e["name"] == name && e["path"] == path) return true;
    return false;
}

}  // namespace

TEST(ModelRoutes, ListsBaseModelsAdaptersExportsAndTheLoadedOne) {
    Running s;
    const fs::path root = s.root.str();
    copy_tiny(s);
    make_adapter((root / "saves/run1").string(), "tiny", 1);
    make_adapter((root / "saves/run1/checkpoint-2").string(), "tiny", 2);
    fs::create_directories(root / "exports");
    fs::copy(TinyModel::get().dir, root / "exports/merged", fs::copy_options::recursive);
    fs::create_directories(root / "models/no-tokenizer");
    fs::copy_file(fs::path(TinyModel::get().dir) / "config.json", root / "models/no-tokenizer/config.json");
    fs::create_directories(root / "saves/run1/logs");

    json d = listing(s);
    EXPECT_TRUE(lists(d["models"], "tiny", "models/tiny")) << d.dump(1);
    EXPECT_FALSE(lists(d["models"], "no-tokenizer", "models/no-tokenizer")) << "a folder without a tokenizer cannot be chatted with";
    // The start-up model lies outside the root: listed by its absolute path, so the picker can go back to it.
    const std::string startup = fs::weakly_canonical(TinyModel::get().dir).string();
    EXPECT_TRUE(lists(d["models"], fs::path(startup).filename().string(), startup)) << d["models"].dump(1);
    ASSERT_EQ(d["adapters"].size(), 2u) << d["adapters"].dump(1);
    EXPECT_TRUE(lists(d["adapters"], "run1", "saves/run1"));
    EXPECT_TRUE(lists(d["adapters"], "run1/checkpoint-2", "saves/run1/checkpoint-2"));
    EXPECT_EQ(d["adapters"][0]["base_model_name_or_path"], "tiny");
    EXPECT_TRUE(lists(d["exports"], "merged", "exports/merged")) << d["exports"].dump(1);
    EXPECT_EQ(d["loaded"]["id"], fs::path(TinyModel::get().dir).filename().string());
    EXPECT_EQ(d["loaded"]["model"], startup);
    EXPECT_EQ(d["loaded"]["adapter"], "");
    EXPECT_EQ(d["loaded"]["quant"], "none");
    EXPECT_TRUE(d["loading"].is_null());
}

TEST(ModelRoutes, LoadingAnAdapterSwapsTheServedModel) {
    Running s;
    const fs::path root = s.root.str();
    const std::string tiny = copy_tiny(s);
    const std::string adapter = make_adapter((root / "saves/run1").string(), "tiny", 1);
    const std::string base_answer = greedy_answer(tiny, ""), adapted_answer = greedy_answer(tiny, adapter);
    ASSERT_NE(base_answer, adapted_answer) << "the test adapter must change greedy output";
    const std::string startup_id = health_model(s);
    EXPECT_EQ(answer_of(chat(s)), base_answer);

    // The adapter alone: its base_model_name_or_path ("tiny", a name under <root>/models) is the model.
    auto r = load(s, {{"adapter", "saves/run1"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json d = body_json(r)["data"];
    EXPECT_EQ(d["id"], "run1");
    EXPECT_EQ(d["model"], "models/tiny");
    EXPECT_EQ(d["adapter"], "saves/run1");
    EXPECT_EQ(health_model(s), "run1");
    json models = body_json(s.client().Get("/v1/models"));
    EXPECT_EQ(models["data"][0]["id"], "run1");
    json a = chat(s);
    EXPECT_EQ(a["model"], "run1");
    EXPECT_EQ(answer_of(a), adapted_answer) << "the answer is the adapter's";

    // "" adapter: the loaded base without it; model_name names it.
    r = load(s, {{"adapter", ""}, {"model_name", "tiny-base"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(health_model(s), "tiny-base");
    EXPECT_EQ(answer_of(chat(s)), base_answer);
    // The command line's model is loadable by its absolute path although it is outside the root.
    r = load(s, {{"model", TinyModel::get().dir}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(health_model(s), startup_id);
}

TEST(ModelRoutes, ASecondLoadWhileOneRunsIs409) {
    Running s;
    copy_tiny(s);
    s.server->pause_model_swaps(true);
    auto r = load(s, {{"model", "tiny"}, {"wait", false}});   // a name under <root>/models
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202) << r->body;
    json d = listing(s);
    ASSERT_FALSE(d["loading"].is_null()) << d.dump(1);
    EXPECT_EQ(d["loading"]["model"], "models/tiny");
    r = load(s, {{"model", "tiny"}});
    expect_error_shape(r, 409);
    EXPECT_EQ(body_json(r)["error"]["code"], "model_loading");
    EXPECT_NE(body_json(r)["msg"].get<std::string>().find("models/tiny"), std::string::npos) << r->body;
    expect_alive(s);
    s.server->pause_model_swaps(false);
    for (int i = 0; i < 3000 && !listing(s)["loading"].is_null(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    d = listing(s);
    EXPECT_TRUE(d["loading"].is_null());
    EXPECT_EQ(d["loaded"]["id"], "tiny");
    EXPECT_TRUE(d["last_error"].is_null());
}

TEST(ModelRoutes, AMismatchedAdapterOrBrokenModelIsRefusedAndTheOldModelStays) {
    Running s;
    const fs::path root = s.root.str();
    const std::string tiny = copy_tiny(s);
    const std::string before = health_model(s), base_answer = greedy_answer(tiny, "");
    // Trained on another model (the golden tiny-qwen2: vocab 2048, intermediate 176): refused before loading.
    make_adapter((root / "saves/other-base").string(), test::golden("tiny-qwen2"), 1);
    auto r = load(s, {{"model", "models/tiny"}, {"adapter", "saves/other-base"}});
    expect_error_shape(r, 400);
    std::string msg = body_json(r)["error"]["message"];
    EXPECT_NE(msg.find("does not fit the model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab 2048"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab 151936"), std::string::npos) << msg;
    // Tensors of the wrong shape (its base unknown): the loader refuses them.
    make_adapter((root / "saves/wrong-shape").string(), "", 1, /*in_features=*/32);
    r = load(s, {{"model", "models/tiny"}, {"adapter", "saves/wrong-shape"}});
    expect_error_shape(r, 400);
    msg = body_json(r)["error"]["message"];
    EXPECT_NE(msg.find("cannot load models/tiny + saves/wrong-shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("still serving " + before), std::string::npos) << msg;
    EXPECT_EQ(listing(s)["last_error"], msg);
    // A model folder whose config.json is not JSON.
    fs::create_directories(root / "models/broken");
    fs::copy_file(fs::path(tiny) / "tokenizer.json", root / "models/broken/tokenizer.json");
    std::ofstream(root / "models/broken/config.json") << "{ not json";
    r = load(s, {{"model", "models/broken"}});
    ASSERT_TRUE(r);
    EXPECT_GE(r->status, 400) << r->body;
    EXPECT_LT(r->status, 500) << r->body;
    EXPECT_EQ(health_model(s), before);
    EXPECT_EQ(answer_of(chat(s)), base_answer) << "the old model still answers";
}

TEST(ModelRoutes, PathsAreConfinedToTheRoot) {
    Running s;
    const fs::path root = s.root.str();
    copy_tiny(s);
    fs::create_symlink(test::golden("tiny-qwen2"), root / "models/link-out");
    for (const json& body : {json{{"model", test::golden("tiny-qwen2")}}, json{{"model", "../../" + test::golden("tiny-qwen2")}},
                             json{{"model", "models/link-out"}}}) {
        auto r = load(s, body);
        expect_error_shape(r, 400);
        EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("outside the server root"), std::string::npos) << body << r->body;
    }
    auto r = load(s, {{"adapter", "/etc"}});
    expect_error_shape(r, 400);
    EXPECT_NE(body_json(r)["error"]["message"].get<std::string>().find("adapter"), std::string::npos) << r->body;
    r = load(s, {{"model", "models/tiny"}, {"revision", "main"}});
    expect_error_shape(r, 400);
    EXPECT_NE(r->body.find("revision"), std::string::npos) << r->body;
    r = load(s, {{"model", 5}});
    expect_error_shape(r, 400);
    r = load(s, json::array());
    expect_error_shape(r, 400);
    EXPECT_FALSE(lists(listing(s)["models"], "link-out", "models/link-out")) << "what cannot be loaded is not listed";
    EXPECT_EQ(health_model(s), fs::path(TinyModel::get().dir).filename().string());
}

TEST(ModelRoutes, QueuedAndRunningJobsFinishOnTheModelTheyStartedWith) {
    Running s;
    const fs::path root = s.root.str();
    const std::string tiny = copy_tiny(s);
    const std::string adapter = make_adapter((root / "saves/run1").string(), "tiny", 1);
    const std::string base_answer = greedy_answer(tiny, ""), adapted_answer = greedy_answer(tiny, adapter);
    const std::string startup_id = health_model(s);

    // Queued: the worker is paused, the swap happens, the job still runs on the old model.
    s.server->pause_worker(true);
    std::string queued_body;
    std::thread t([&] {
        auto c = s.client();
        auto r = post_json(c, "/v1/chat/completions", chat_body(kQuestion[0].content, kTokens, true));
        queued_body = r ? r->body : "";
    });
    for (int i = 0; i < 1000 && body_json(s.client().Get("/health"))["queue_depth"] != 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto r = load(s, {{"model", "models/tiny"}, {"adapter", "saves/run1"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(health_model(s), "run1");
    s.server->pause_worker(false);
    t.join();
    std::string text;
    auto frames = sse_data(queued_body);
    ASSERT_GE(frames.size(), 3u) << queued_body;
    EXPECT_EQ(frames.back(), "[DONE]");
    for (size_t i = 0; i + 1 < frames.size(); ++i) {
        json f = json::parse(frames[i]);
        EXPECT_EQ(f["model"], startup_id) << frames[i];
        if (f["choices"][0]["delta"].contains("content")) text += f["choices"][0]["delta"]["content"].get<std::string>();
    }
    EXPECT_EQ(text, base_answer) << "the queued job ran on the model it was queued for";
    EXPECT_EQ(answer_of(chat(s)), adapted_answer);

    // Running: a long stream, and a load back to the base while it streams.
    std::atomic<int> chunks{0};
    std::atomic<bool> stream_done{false};
    std::string streamed;
    std::thread st([&] {
        httplib::Client c("127.0.0.1", s.port);
        c.set_read_timeout(120, 0);
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/chat/completions";
        req.body = chat_body("tell me a long story", 400, true).dump();
        req.set_header("Content-Type", "application/json");
        req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
            streamed.append(data, n);
            ++chunks;
            return true;
        };
        c.send(req);
        stream_done = true;
    });
    for (int i = 0; i < 3000 && chunks < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    r = load(s, {{"model", "models/tiny"}, {"adapter", ""}});
    const bool overlapped = !stream_done;
    st.join();
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(health_model(s), "tiny");
    frames = sse_data(streamed);
    ASSERT_GE(frames.size(), 3u);
    EXPECT_EQ(frames.back(), "[DONE]") << "the stream completes";
    EXPECT_EQ(json::parse(frames[frames.size() - 2])["choices"][0]["finish_reason"].is_string(), true) << frames[frames.size() - 2];
    for (size_t i = 0; i + 1 < frames.size(); ++i) EXPECT_EQ(json::parse(frames[i])["model"], "run1");
    EXPECT_TRUE(overlapped) << "the load finished after the stream: the test did not swap during a generation";
    EXPECT_EQ(answer_of(chat(s)), base_answer);
}

TEST(ModelRoutes, ARetrievalOnlyServerCanLoadAModel) {
    serve::ServeOptions o;
    o.model_dir = "none";
    Running s(o, /*with_model=*/false);
    const std::string tiny = copy_tiny(s);
    EXPECT_EQ(health_model(s), "(none)");
    auto c = s.client();
    expect_error_shape(post_json(c, "/v1/chat/completions", chat_body("x", 2)), 503);
    EXPECT_TRUE(listing(s)["loaded"].is_null());
    auto r = load(s, {{"adapter", ""}});
    expect_error_shape(r, 400);
    EXPECT_NE(r->body.find("'model' is required"), std::string::npos) << r->body;
    r = load(s, {{"model", "models/tiny"}});
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(health_model(s), "tiny");
    EXPECT_EQ(answer_of(chat(s)), greedy_answer(tiny, ""));
}
