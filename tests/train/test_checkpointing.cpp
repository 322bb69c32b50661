// Activation checkpointing (train/checkpointing.h) on tiny-qwen2 with LoRA on every projection:
// the loss and every LoRA gradient equal those of the plain forward/backward (dropout 0 and
// dropout 0.1 with a seed), and the generator ends in the same state.
#include "pdsd/lora/inject.h"
#include "pdsd/model/loader.h"
#include "pdsd/model/weights.h"
#include "pdsd/core/safetensors.h"
#include "pdsd/train/checkpointing.h"
#include "pdsd/train/loss.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/function.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

using namespace pdsd;

namespace {

struct Run {
    double loss = 0;
    std::vector<at::Tensor> grads;
    at::Tensor rng_after;
};

Run run_once(model::Qwen2ForCausalLMImpl& net, lora::LoraAttachment& att, bool ckpt, bool preserve_rng, const at::Tensor& ids,
             const at::Tensor& mask, const at::Tensor& labels) {
    model::ForwardOptions fo;
    fo.output_hidden_states = true;
    fo.last_logits_only = true;
    if (ckpt) {
        std::vector<std::vector<at::Tensor>> lp(net.model->layers.size());
        for (size_t k = 0; k < att.modules.size(); ++k) {
            const size_t layer = std::stoul(att.modules[k].substr(std::string("model.layers.").size()));
            lp[layer].push_back(att.layers[k]->lora_A->weight);
            lp[layer].push_back(att.layers[k]->lora_B->weight);
        }
        fo.layer_wrapper = train::checkpoint_every_layer(std::move(lp), preserve_rng);
    }
    at::manual_seed(1234);
    auto out = net.forward(ids, mask, {}, nullptr, fo);
    if (ckpt) {  // the layers really ran inside the checkpoint node
        EXPECT_NE(out.hidden_states[1].grad_fn()->name().find("CheckpointFunction"), std::string::npos)
            << out.hidden_states[1].grad_fn()->name();
    }
    const at::Tensor w = net.model->embed_tokens->weight;
    train::LossSum ls = train::causal_lm_loss_sum(out.hidden_states.back(), w, labels, 7);
    at::Tensor loss = ls.sum / static_cast<double>(ls.n_tokens);
    loss.backward();
    Run r;
    r.loss = loss.item<double>();
    for (auto& p : att.parameters()) {
        EXPECT_TRUE(p.grad().defined());
        r.grads.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
        p.mutable_grad() = at::Tensor();
    }
    r.rng_after = at::detail::getDefaultCPUGenerator().get_state();
    return r;
}

void check(double dropout) {
    model::LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = "fp32";
    auto lm = model::load_qwen2(test::golden("tiny-qwen2"), lo);
    auto& net = *lm.model;
    at::manual_seed(0);
    auto att = lora::attach_lora(net, {8, 16, dropout, false}, lora::resolve_lora_targets({"all"}), at::TensorOptions().dtype(at::kFloat));
    {
        at::NoGradGuard ng;  // B != 0 so that A gets gradients too
        for (auto& l : att.layers) l->lora_B->weight.normal_(0, 0.05);
    }
    net.train();
    Checkpoint ref = Checkpoint::open(test::golden("tiny-qwen2-lora.reference.safetensors"));
    auto get = [&](const std::string& n) { return model::checkpoint_tensor(ref, n).clone().to(at::kLong); };
    const at::Tensor ids = get("input_ids"), mask = get("attention_mask"), labels = get("labels");

    const Run plain = run_once(net, att, false, dropout > 0, ids, mask, labels);
    const Run ckpt = run_once(net, att, true, dropout > 0, ids, mask, labels);
    EXPECT_NEAR(ckpt.loss, plain.loss, 1e-6 * plain.loss);
    double worst = 0;
    for (size_t i = 0; i < plain.grads.size(); ++i) {
        const double scale = plain.grads[i].abs().max().item<double>();
        ASSERT_GT(scale, 0) << att.parameter_names()[i];
        const double rel = (ckpt.grads[i] - plain.grads[i]).abs().max().item<double>() / scale;
        worst = std::max(worst, rel);
        EXPECT_LT(rel, 1e-6) << att.parameter_names()[i];
    }
    EXPECT_TRUE(at::equal(ckpt.rng_after, plain.rng_after)) << "checkpointing changed later random draws";
    std::printf("dropout %.2f: loss %.8f vs %.8f, worst grad rel diff %.3g\n", dropout, ckpt.loss, plain.loss, worst);
    if (dropout > 0) {  // without replaying the generator the recompute draws other masks: other gradients
        const Run no_replay = run_once(net, att, true, false, ids, mask, labels);
        double diff = 0;
        for (size_t i = 0; i < plain.grads.size(); ++i) diff = std::max(diff, (no_replay.grads[i] - plain.grads[i]).abs().max().item<double>());
        EXPECT_GT(diff, 1e-6);
    }
    if (dropout > 0) {  // dropout really drew masks: eval mode (no dropout) gives another loss
        net.eval();
        at::NoGradGuard ng;
        model::ForwardOptions fo;
        fo.output_hidden_states = true;
        fo.last_logits_only = true;
        auto out = net.forward(ids, mask, {}, nullptr, fo);
        train::LossSum ls = train::causal_lm_loss_sum(out.hidden_states.back(), net.model->embed_tokens->weight, labels, 7);
        EXPECT_GT(std::abs(ls.sum.item<double>() / static_cast<double>(ls.n_tokens) - plain.loss), 1e-4);
    }
}

}  // namespace

TEST(GradientCheckpointing, SameLossAndLoraGradsWithoutDropout) { check(0.0); }
TEST(GradientCheckpointing, SameLossAndLoraGradsWithSeededDropout) { check(0.1); }
