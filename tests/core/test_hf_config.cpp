// Hugging Face config.json / generation_config.json readers.
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/hf_config.h"

#include <nlohmann/json.hpp>

using namespace pdsd;
using nlohmann::json;

TEST(HfConfig, TinyQwen2) {
    Qwen2Config c = load_qwen2_config(test::golden("tiny-qwen2"));
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_EQ(c.num_attention_heads, 4);
    EXPECT_EQ(c.num_key_value_heads, 2);
    EXPECT_EQ(c.intermediate_size, 176);
    EXPECT_EQ(c.vocab_size, 2048);
    EXPECT_EQ(c.head_dim(), 16);
    EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    EXPECT_EQ(c.eos_token_id, std::vector<int64_t>{2001});
}

TEST(HfConfig, NewerSpellings) {
    json j = {{"model_type", "qwen2"}, {"hidden_size", 128}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"dtype", "float32"}, {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
              {"eos_token_id", {1, 2}}};
    Qwen2Config c = parse_qwen2_config(j, "config.json");
    EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
    EXPECT_EQ(c.torch_dtype, "float32");
    EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{1, 2}));
    json s = {{"rope_scaling", {{"type", "default"}, {"rope_theta", 5e5}}}};
    EXPECT_DOUBLE_EQ(parse_qwen2_config(s, "config.json").rope_theta, 5e5);
}

TEST(HfConfig, RejectsWhatTheModelCannotRun) {
    EXPECT_THROW(parse_qwen2_config(json{{"model_type", "llama"}}, "c.json"), ConfigError);
    EXPECT_THROW(parse_qwen2_config(json{{"hidden_size", 100}, {"num_attention_heads", 3}}, "c.json"), ConfigError);
    EXPECT_THROW(parse_qwen2_config(json{{"num_attention_heads", 14}, {"num_key_value_heads", 3}, {"hidden_size", 896}}, "c.json"),
                 ConfigError);
    EXPECT_THROW(parse_qwen2_config(json{{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}}, "c.json"), ConfigError);
    try {
        parse_qwen2_config(json{{"hidden_size", "big"}}, "c.json");
        FAIL();
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("key 'hidden_size'"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("expected an integer"), std::string::npos);
    }
}

TEST(HfConfig, RoundTripThroughJson) {
    Qwen2Config c = load_qwen2_config(test::golden("tiny-qwen2"));
    c.pdsd_random_weights = true;
    Qwen2Config d = parse_qwen2_config(to_json(c), "x");
    EXPECT_EQ(d.hidden_size, c.hidden_size);
    EXPECT_EQ(d.num_key_value_heads, c.num_key_value_heads);
    EXPECT_EQ(d.eos_token_id, c.eos_token_id);
    EXPECT_TRUE(d.pdsd_random_weights);
}

TEST(HfConfig, GenerationConfig) {
    GenerationConfig g = load_generation_config(test::golden("tiny-qwen2"));
    EXPECT_EQ(g.eos_token_id, (std::vector<int64_t>{2001, 2000}));
    EXPECT_DOUBLE_EQ(g.temperature.value(), 0.7);
    EXPECT_DOUBLE_EQ(g.top_p.value(), 0.8);
    EXPECT_EQ(g.top_k.value(), 20);
    EXPECT_DOUBLE_EQ(g.repetition_penalty.value(), 1.1);
    EXPECT_TRUE(g.do_sample.value());
    EXPECT_FALSE(g.max_new_tokens.has_value());
    EXPECT_EQ(parse_generation_config(json{{"eos_token_id", 5}}, "g").eos_token_id, std::vector<int64_t>{5});
}

TEST(HfConfig, Bert) {
    BertConfig b = load_bert_config(test::golden("tiny-bert"));
    EXPECT_EQ(b.hidden_size, 64);
    EXPECT_EQ(b.num_hidden_layers, 2);
    EXPECT_EQ(b.vocab_size, 1000);
    EXPECT_EQ(b.max_position_embeddings, 128);
    EXPECT_DOUBLE_EQ(b.layer_norm_eps, 1e-12);
    EXPECT_EQ(b.torch_dtype, "float32");
}

TEST(HfConfig, MissingFileHasHint) {
    try {
        load_qwen2_config("/nonexistent/model");
        FAIL();
    } catch (const IoError& e) {
        EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("hint:"), std::string::npos);
    }
}
