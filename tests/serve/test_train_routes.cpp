// The Training / Export tabs' routes (src/serve/train_routes.h): the command line and dry-run
// plan of a body of LLaMA-Factory keys, bad keys and paths refused with 400 naming them, and
// real `pdsd train` / `pdsd export` children of the server (PDSD_EXE: the pdsd binary, since
// this test's own executable is not pdsd) on the tiny random model with configs/sft_tiny.yaml.
#include "serve_fixture.h"

#include "pdsd/core/lf_args.h"

#include <chrono>
#include <cstdlib>

using namespace pdsd;
using namespace pdsd::serve_test;

namespace {

// A server without a chat model whose root holds this repository's data/ (dataset_info.json).
struct TrainServer : Running {
    TrainServer() : Running(serve::ServeOptions{}, /*with_model=*/false) {
        fs::copy(fs::path(PDSD_SOURCE_DIR) / "data", root.str(), fs::copy_options::recursive);
    }
};

// configs/sft_tiny.yaml's keys as a request body, on the tiny model, data from the server root.
json sft_tiny_body(const std::string& output_dir) {
    LfArgs args;
    ConfigSchema schema = lf_schema(args, "train");
    schema.load_yaml(std::string(PDSD_SOURCE_DIR) + "/configs/sft_tiny.yaml");
    json all = schema.to_json(), body = json::object();
    for (auto& k : schema.keys_set()) body[k] = all[k];
    body["model_name_or_path"] = TinyModel::get().dir;
    body.erase("dataset_dir");   // the route's default: the server root
    body["output_dir"] = output_dir;
    return body;
}

json data_of(const httplib::Result& r) {
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << r->body;
    return body_json(r)["data"];
}

// Polls the status of `kind` until it leaves "running" (or `pred` holds while running).
json wait_status(httplib::Client& c, const std::string& kind, int timeout_s, const std::function<bool(const json&)>& pred = nullptr) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    json d;
    while (std::chrono::steady_clock::now() < until) {
        d = data_of(c.Get(("/pdsd/" + kind + "/status").c_str()));
        if (d["state"] != "running" || (pred && pred(d))) return d;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ADD_FAILURE() << kind << " still running after " << timeout_s << " s: " << d.dump();
    return d;
}

size_t loss_records(const json& status) {
    size_t n = 0;
    for (auto& r : status["records"]) n += r.contains("loss");
    return n;
}

struct TrainRoutesTest : ::testing::Test {
    static void SetUpTestSuite() { ::setenv("PDSD_EXE", PDSD_BIN, 1); }
};

}  // namespace

TEST_F(TrainRoutesTest, DatasetsListsTheRegistryAndPreviewsAnExample) {
    TrainServer s;
    auto c = s.client();
    json d = data_of(c.Get("/pdsd/train/datasets?preview=helpdesk_alpaca_zh"));
    EXPECT_EQ(d["dataset_dir"], fs::weakly_canonical(s.root.str()).string());
    EXPECT_NE(std::find(d["datasets"].begin(), d["datasets"].end(), "product_faq_zh"), d["datasets"].end()) << d.dump();
    std::string preview = d["preview"];
    EXPECT_NE(preview.find("<|im_start|>assistant"), std::string::npos) << preview;
    EXPECT_NE(preview.find("[["), std::string::npos) << "trained text marked: " << preview;
}

TEST_F(TrainRoutesTest, PreviewGivesTheCommandLineAndTheDryRunPlan) {
    TrainServer s;
    auto c = s.client();
    c.set_read_timeout(120, 0);
    json body = sft_tiny_body("saves/preview");
    body["max_steps"] = 3;
    body["lora_target"] = json::array({"q_proj", "v_proj"});
    body["default_system"] = "--config /etc/passwd";   // a value, never an option of the child
    json d = data_of(post_json(c, "/pdsd/train/preview", body));
    EXPECT_NE(d["argv"].dump().find("\"--default_system=--config /etc/passwd\""), std::string::npos) << d["argv"];
    std::string cmd = d["command"];
    const std::string out = fs::weakly_canonical(s.root.str() + "/saves/preview").string();
    EXPECT_EQ(cmd.rfind("pdsd train ", 0), 0u) << cmd;
    for (const std::string& want : std::vector<std::string>{"--learning_rate=0.01", "--max_steps=3", "--lora_target=q_proj,v_proj", "--template=qwen",
                             "--dataset=helpdesk_alpaca_zh,product_faq_zh", "--output_dir=" + out,
                             "--model_name_or_path=" + fs::weakly_canonical(TinyModel::get().dir).string()})
        EXPECT_NE(cmd.find(want), std::string::npos) << want << " not in: " << cmd;
    EXPECT_EQ(d["dry_run_exit_code"], 0) << d["dry_run"];
    std::string plan = d["dry_run"];
    EXPECT_NE(plan.find("3 total"), std::string::npos) << plan;     // max_steps reached the child
    EXPECT_NE(plan.find("trainable params"), std::string::npos) << plan;
    EXPECT_FALSE(fs::exists(out)) << "a dry run writes nothing";
}

TEST_F(TrainRoutesTest, BadKeysValuesAndPathsAre400NamingThem) {
    TrainServer s;
    auto c = s.client();
    auto expect_400 = [&](json body, const std::string& path, const std::vector<std::string>& words) {
        auto r = post_json(c, path, body);
        expect_error_shape(r, 400);
        for (auto& w : words) EXPECT_NE(r->body.find(w), std::string::npos) << w << " not in: " << r->body;
    };
    json ok = sft_tiny_body("saves/x");
    auto with = [&](const std::string& k, json v) { json b = ok; b[k] = std::move(v); return b; };
    expect_400(with("lerning_rate", 1e-4), "/pdsd/train/start", {"lerning_rate", "did you mean 'learning_rate'"});
    expect_400(with("lora_rank", "eight"), "/pdsd/train/start", {"lora_rank", "an integer"});
    expect_400(with("lora_target", json::object()), "/pdsd/train/preview", {"lora_target", "a string, number"});
    expect_400(with("output_dir", "/etc/pdsd-x"), "/pdsd/train/start", {"output_dir", "outside the server root"});
    expect_400(with("output_dir", "../../x"), "/pdsd/train/start", {"output_dir", "outside the server root"});
    expect_400(with("model_name_or_path", "no-such-model"), "/pdsd/train/start", {"model_name_or_path", "config.json"});
    json no_data = ok;
    no_data.erase("dataset");
    expect_400(no_data, "/pdsd/train/start", {"'dataset' is required"});
    expect_400({{"model_name_or_path", TinyModel::get().dir}, {"adapter_name_or_path", s.root.str()}, {"learning_rate", 1}},
               "/pdsd/export/start", {"learning_rate", "unknown export key"});
    auto r = c.Post("/pdsd/train/start", "[1,2]", "application/json");
    expect_error_shape(r, 400);
    EXPECT_EQ(data_of(c.Get("/pdsd/train/status"))["state"], "idle") << "nothing started";
    expect_400(json::object(), "/pdsd/train/stop", {"no training is running"});
}

TEST_F(TrainRoutesTest, TinyRunFinishesWithThreeLossRecordsThenExports) {
    TrainServer s;
    auto c = s.client();
    json body = sft_tiny_body("saves/tiny");
    body["max_steps"] = 3;
    json started = data_of(post_json(c, "/pdsd/train/start", body));
    EXPECT_GT(started["pid"].get<int>(), 0);
    auto busy = post_json(c, "/pdsd/train/start", body);   // one job at a time
    expect_error_shape(busy, 400);
    EXPECT_NE(busy->body.find("is running"), std::string::npos) << busy->body;

    json d = wait_status(c, "train", 180);
    ASSERT_EQ(d["state"], "finished") << d.dump(1);
    EXPECT_EQ(d["exit_code"], 0);
    EXPECT_EQ(loss_records(d), 3u) << d["records"].dump();
    EXPECT_EQ(d["records"][0]["step"], 1);
    EXPECT_TRUE(d["records"][0]["loss"].is_number());
    EXPECT_TRUE(d["records"][0]["lr"].is_number());
    const std::string out = started["output_dir"];
    EXPECT_TRUE(fs::is_regular_file(out + "/adapter_config.json"));
    EXPECT_NE(d["serve_command"].get<std::string>().find("--adapter " + out), std::string::npos) << d["serve_command"];
    EXPECT_FALSE(d["log"].empty());
    json adapters = data_of(c.Get("/pdsd/train/adapters"));
    ASSERT_EQ(adapters.size(), 1u) << adapters.dump();
    EXPECT_EQ(adapters[0]["path"], out);

    json e = data_of(post_json(c, "/pdsd/export/start", {{"model_name_or_path", TinyModel::get().dir}, {"adapter_name_or_path", out},
                                                         {"template", "qwen"}, {"export_dir", "exports/tiny"}, {"export_dtype", "fp32"},
                                                         {"export_format", "gguf"}, {"gguf_type", "f16"}}));
    json es = wait_status(c, "export", 120);
    ASSERT_EQ(es["state"], "finished") << es.dump(1);
    EXPECT_TRUE(fs::is_regular_file(e["output_dir"].get<std::string>() + "/config.json"));
    EXPECT_TRUE(fs::is_regular_file(e["output_dir"].get<std::string>() + "/model-f16.gguf")) << es["log"].dump(1);
    EXPECT_EQ(es["serve_command"], "pdsd serve --model " + e["output_dir"].get<std::string>());
}

TEST_F(TrainRoutesTest, StopSavesACheckpointAndStartAgainResumes) {
    TrainServer s;
    auto c = s.client();
    json body = sft_tiny_body("saves/long");
    body["num_train_epochs"] = 100;   // far longer than the test
    body["save_steps"] = 1000;
    json started = data_of(post_json(c, "/pdsd/train/start", body));
    json d = wait_status(c, "train", 180, [](const json& st) { return loss_records(st) >= 1; });
    ASSERT_EQ(d["state"], "running") << d.dump(1);
    data_of(post_json(c, "/pdsd/train/stop", json::object()));
    d = wait_status(c, "train", 120);
    EXPECT_EQ(d["state"], "stopped") << d.dump(1);
    EXPECT_EQ(d["exit_code"], 130);
    ASSERT_FALSE(d["checkpoints"].empty()) << d.dump(1);
    const int64_t step = d["checkpoints"].back()["step"];
    EXPECT_GE(step, 1);

    data_of(post_json(c, "/pdsd/train/start", body));   // same output_dir: pdsd train resumes
    d = wait_status(c, "train", 120, [](const json& st) {
        for (auto& l : st["log"])
            if (l.get<std::string>().find("resumed from") != std::string::npos) return true;
        return false;
    });
    EXPECT_EQ(d["state"], "running") << d.dump(1);
    bool resumed = false;
    for (auto& l : d["log"]) resumed |= l.get<std::string>().find("checkpoint-" + std::to_string(step)) != std::string::npos;
    EXPECT_TRUE(resumed) << d["log"].dump(1);
    // The server's shutdown interrupts and reaps the child (TrainRoutes' destructor).
}
