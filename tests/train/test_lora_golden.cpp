// LoRA on Qwen2 against PEFT + torch: zero-B invariance, trainable-parameter counts, and one
// AdamW step from the tiny-qwen2-lora-init adapter compared with the golden
// (loss_before, every grad, every parameter after the step, loss_after).
#include "pdsd/core/error.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/lora/adapter.h"
#include "pdsd/lora/inject.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/tools.h"
#include "pdsd/model/weights.h"
#include "pdsd/train/loss.h"
#include "pdsd/train/optimizer.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

using namespace pdsd;

namespace {

model::LoadedModel tiny_fp32() {
    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    return model::load_qwen2(test::golden("tiny-qwen2"), lo);
}

// PEFT saved name -> PEFT in-memory name (".default" before ".weight").
std::string in_memory(const std::string& saved) {
    return saved.substr(0, saved.size() - std::string(".weight").size()) + ".default.weight";
}

double max_rel(const at::Tensor& got, const at::Tensor& want) {
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item<double>();
}

at::Tensor loss_of(model::Qwen2ForCausalLMImpl& net, const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& labels) {
    model::ForwardOptions fo;
    fo.output_hidden_states = true;
    fo.last_logits_only = true;
    auto out = net.forward(ids, mask, {}, nullptr, fo);
    const at::Tensor w = net.lm_head ? net.lm_head->weight : net.model->embed_tokens->weight;
    train::LossSum ls = train::causal_lm_loss_sum(out.hidden_states.back(), w, labels, 7);
    return ls.sum / static_cast<double>(ls.n_tokens);
}

}  // namespace

TEST(LoraModel, ZeroBLeavesLogitsBitForBitAndFreezesBase) {
    auto base = tiny_fp32();
    auto lm = tiny_fp32();
    at::manual_seed(0);
    auto att = lora::attach_lora(*lm.model, {8, 16, 0.0, false}, lora::resolve_lora_targets({"all"}), at::TensorOptions().dtype(at::kFloat));
    EXPECT_EQ(att.modules.size(), 14u);  // 2 layers x 7 projections
    at::Tensor ids = at::randint(0, 2048, {2, 13}, at::kLong);
    at::Tensor mask = at::ones({2, 13}, at::kLong);
    mask[1].narrow(0, 9, 4).zero_();
    at::NoGradGuard ng;
    auto a = base.model->forward(ids, mask).logits;
    auto b = lm.model->forward(ids, mask).logits;
    EXPECT_TRUE(at::equal(a, b));
    int64_t trainable = 0;
    for (const auto& p : lm.model->named_parameters()) {
        const bool is_lora = p.key().find(".lora_") != std::string::npos;
        EXPECT_EQ(p.value().requires_grad(), is_lora) << p.key();
        if (is_lora) trainable += p.value().numel();
    }
    EXPECT_EQ(trainable, att.num_parameters());
    EXPECT_TRUE(lm.model->named_parameters().contains("model.layers.0.self_attn.q_proj.lora_A.weight"));
    EXPECT_EQ(att.parameter_names()[0], "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
}

TEST(LoraModel, TrainableCountMatchesRTimesInPlusOut) {
    // Qwen2.5-0.5B shapes (uninitialised weights: at::empty never touches the pages).
    Qwen2Config c = model::qwen2_preset("qwen2.5-0.5b");
    model::Qwen2ForCausalLM net(c, at::TensorOptions().dtype(at::kBFloat16));
    auto att = lora::attach_lora(*net, {8, 16, 0.0, false}, lora::resolve_lora_targets({"q_proj", "v_proj"}),
                                 at::TensorOptions().dtype(at::kFloat));
    EXPECT_EQ(att.num_parameters(), 540672);
    EXPECT_EQ(lora::resolve_lora_targets({"v_proj", "q_proj"}), (std::vector<std::string>{"q_proj", "v_proj"}));
    EXPECT_THROW(lora::resolve_lora_targets({"lm_head"}), ConfigError);
}

TEST(LoraGolden, OneAdamWStepMatchesPeftAndTorch) {
    auto lm = tiny_fp32();
    auto& net = *lm.model;
    auto att = lora::attach_lora(net, {8, 16, 0.0, false}, lora::resolve_lora_targets({"q_proj", "v_proj"}),
                                 at::TensorOptions().dtype(at::kFloat));
    att.load(lora::load_adapter(test::golden("tiny-qwen2-lora-init")));
    net.train();
    Checkpoint ref = Checkpoint::open(test::golden("tiny-qwen2-lora.reference.safetensors"));
    auto get = [&](const std::string& n) { return model::checkpoint_tensor(ref, n).clone(); };
    at::Tensor ids = get("input_ids").to(at::kLong), mask = get("attention_mask").to(at::kLong), labels = get("labels").to(at::kLong);

    at::Tensor loss = loss_of(net, ids, mask, labels);
    const double loss_before = get("loss_before").item<double>();
    EXPECT_NEAR(loss.item<double>(), loss_before, 1e-5 * loss_before);
    loss.backward();

    auto params = att.parameters();
    auto names = att.parameter_names();
    double worst_grad = 0, worst_param = 0;
    for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor want = get("grad." + in_memory(names[i]));
        ASSERT_TRUE(params[i].grad().defined()) << names[i];
        // Relative to the tensor's largest entry: fp32 sums in another order than torch's.
        worst_grad = std::max(worst_grad, max_rel(params[i].grad(), want));
        EXPECT_LT(max_rel(params[i].grad(), want), 1e-5) << names[i];  // measured 8.8e-7
    }
    train::AdamW opt(params, {1e-2, 0.9, 0.999, 1e-8, 0.1});  // the trainer's fused AdamW
    opt.step();
    for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor want = get("after_step1." + in_memory(names[i]));
        worst_param = std::max(worst_param, max_rel(params[i].detach(), want));
        EXPECT_LT(max_rel(params[i].detach(), want), 1e-5) << names[i];
    }
    std::printf("max relative error: grads %.3g, params after step %.3g\n", worst_grad, worst_param);
    at::NoGradGuard ng;
    const double loss_after = get("loss_after").item<double>();
    EXPECT_NEAR(loss_of(net, ids, mask, labels).item<double>(), loss_after, 1e-5 * loss_after);
}
