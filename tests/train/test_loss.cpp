// Chunked causal-LM loss: same value and gradient as full logits + HF's shifted mean CE.
#include "pdsd/train/loss.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <gtest/gtest.h>

using namespace pdsd::train;

namespace {
at::Tensor make_labels(int64_t B, int64_t T, int64_t V, int64_t seed) {
    at::manual_seed(seed);
    at::Tensor labels = at::randint(0, V, {B, T}, at::kLong);
    labels.narrow(1, 0, 3).fill_(kIgnoreIndex);          // prompt
    labels[1].narrow(0, T - 4, 4).fill_(kIgnoreIndex);   // right padding
    return labels;
}
}  // namespace

TEST(Loss, ChunkedEqualsFullLogitsValueAndGradient) {
    const int64_t B = 2, T = 11, H = 16, V = 97;
    at::manual_seed(0);
    at::Tensor W = at::randn({V, H}, at::kDouble);
    at::Tensor labels = make_labels(B, T, V, 1);
    for (int64_t chunk : {1, 3, 7, 1000}) {
        at::Tensor h1 = at::randn({B, T, H}, at::kDouble).set_requires_grad(true);
        at::Tensor h2 = h1.detach().clone().set_requires_grad(true);
        LossSum ls = causal_lm_loss_sum(h1, W, labels, chunk);
        EXPECT_EQ(ls.n_tokens, count_target_tokens(labels));
        at::Tensor mean = ls.sum / static_cast<double>(ls.n_tokens);
        mean.backward();
        at::Tensor ref = reference_causal_lm_loss(at::linear(h2, W), labels);
        ref.backward();
        // The chunked loss accumulates in fp32; the double reference is exact.
        EXPECT_NEAR(mean.item<double>(), ref.item<double>(), 1e-5 * std::abs(ref.item<double>())) << chunk;
        // softmax runs in fp32 (HF upcasts logits to float): ~1e-7 relative agreement.
        EXPECT_TRUE(at::allclose(h1.grad(), h2.grad(), 1e-5, 1e-7)) << chunk;
    }
}

TEST(Loss, Float32MatchesReferenceClosely) {
    const int64_t B = 3, T = 9, H = 32, V = 300;
    at::manual_seed(3);
    at::Tensor W = at::randn({V, H}) * 0.1;
    at::Tensor labels = make_labels(B, T, V, 4);
    at::Tensor h1 = at::randn({B, T, H}).set_requires_grad(true);
    at::Tensor h2 = h1.detach().clone().set_requires_grad(true);
    LossSum ls = causal_lm_loss_sum(h1, W, labels, 5);
    (ls.sum / static_cast<double>(ls.n_tokens)).backward();
    at::Tensor ref = reference_causal_lm_loss(at::linear(h2, W), labels);
    ref.backward();
    EXPECT_NEAR((ls.sum / static_cast<double>(ls.n_tokens)).item<double>(), ref.item<double>(), 1e-6 * ref.item<double>());
    EXPECT_TRUE(at::allclose(h1.grad(), h2.grad(), 1e-5, 1e-8));
}

TEST(Loss, NoTargetsGivesZeroAndKeepsGraph) {
    at::Tensor h = at::randn({1, 5, 4}).set_requires_grad(true);
    at::Tensor labels = at::full({1, 5}, kIgnoreIndex, at::kLong);
    LossSum ls = causal_lm_loss_sum(h, at::randn({10, 4}), labels);
    EXPECT_EQ(ls.n_tokens, 0);
    EXPECT_EQ(ls.sum.item<float>(), 0.0f);
    ls.sum.backward();
    EXPECT_EQ(h.grad().abs().sum().item<float>(), 0.0f);
}

// finetuning_type full / freeze with the LM head trained: d loss / d W equals the full-logits
// autograd gradient, and d loss / d h is unchanged; a tied weight (the same tensor also used
// as the input embeddings) accumulates both paths.
TEST(Loss, TrainableLmHeadGetsTheFullLogitsGradient) {
    const int64_t B = 2, T = 11, H = 16, V = 97;
    at::manual_seed(5);
    at::Tensor labels = make_labels(B, T, V, 6);
    for (int64_t chunk : {1, 4, 1000}) {
        at::Tensor W1 = at::randn({V, H}, at::kDouble).set_requires_grad(true);
        at::Tensor W2 = W1.detach().clone().set_requires_grad(true);
        at::Tensor h1 = at::randn({B, T, H}, at::kDouble).set_requires_grad(true);
        at::Tensor h2 = h1.detach().clone().set_requires_grad(true);
        LossSum ls = causal_lm_loss_sum(h1, W1, labels, chunk);
        (ls.sum / static_cast<double>(ls.n_tokens)).backward();
        reference_causal_lm_loss(at::linear(h2, W2), labels).backward();
        ASSERT_TRUE(W1.grad().defined()) << chunk;
        EXPECT_TRUE(at::allclose(W1.grad(), W2.grad(), 1e-5, 1e-7)) << chunk;
        EXPECT_TRUE(at::allclose(h1.grad(), h2.grad(), 1e-5, 1e-7)) << chunk;
    }
    // Tied: embeddings looked up from W, then the loss through W again.
    at::Tensor ids = at::randint(0, V, {B, T}, at::kLong);
    at::Tensor W1 = (at::randn({V, H}, at::kDouble) * 0.5).set_requires_grad(true);
    at::Tensor W2 = W1.detach().clone().set_requires_grad(true);
    LossSum ls = causal_lm_loss_sum(at::embedding(W1, ids), W1, labels, 3);
    (ls.sum / static_cast<double>(ls.n_tokens)).backward();
    reference_causal_lm_loss(at::linear(at::embedding(W2, ids), W2), labels).backward();
    EXPECT_TRUE(at::allclose(W1.grad(), W2.grad(), 1e-5, 1e-7));
}
