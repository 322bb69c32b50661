// Chunked causal-LM cross-entropy with the gradient computed in the forward pass; see loss.h.
#include "pdsd/train/loss.h"

#include "pdsd/core/error.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace pdsd::train {

namespace {

// sum_i CE(h_i W^T, t_i) over rows of h (N, H); backward returns the stored d/dh.
struct ChunkedCrossEntropy : public torch::autograd::Function<ChunkedCrossEntropy> {
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                              const at::Tensor& targets, int64_t chunk) {
        const int64_t N = h.size(0);
        const bool need_grad = h.requires_grad();
        const bool need_grad_w = weight.requires_grad();  // full / freeze with the LM head (or tied embeddings) trained
        at::Tensor total = at::zeros({}, h.options().dtype(at::kFloat));
        at::Tensor grad_h = need_grad ? at::empty_like(h) : at::Tensor();
        at::Tensor grad_w = need_grad_w ? at::zeros(weight.sizes(), weight.options().dtype(at::promote_types(weight.scalar_type(), at::kFloat))) : at::Tensor();  // (V, H)
        for (int64_t s = 0; s < N; s += chunk) {
            const int64_t n = std::min(chunk, N - s);
            at::Tensor hc = h.narrow(0, s, n);                               // (n, H)
            at::Tensor tc = targets.narrow(0, s, n).unsqueeze(1);            // (n, 1)
            at::Tensor logits = at::linear(hc, weight).to(at::kFloat);       // (n, V) fp32
            at::Tensor lse = at::logsumexp(logits, {1}, /*keepdim=*/true);   // (n, 1)
            total.add_((lse - logits.gather(1, tc)).sum());
            if (need_grad || need_grad_w) {
                // softmax - onehot, in place over the logits buffer: (n, V) fp32
                logits.sub_(lse).exp_();
                logits.scatter_add_(1, tc, at::full({n, 1}, -1.0f, logits.options()));
                at::Tensor g = logits.to(h.scalar_type());
                if (need_grad) grad_h.narrow(0, s, n).copy_(at::mm(g, weight));  // (n, H)
                if (need_grad_w) grad_w.add_(at::mm(g.t(), hc.detach()));       // (V, H) += (V, n) (n, H)
            }
        }
        if (need_grad_w) grad_w = grad_w.to(weight.scalar_type());
        ctx->save_for_backward({need_grad ? grad_h : at::Tensor(), need_grad_w ? grad_w : at::Tensor()});
        return total;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_out) {
        auto saved = ctx->get_saved_variables();
        const at::Tensor& grad_h = saved[0];
        const at::Tensor& grad_w = saved[1];
        at::Tensor dh = grad_h.defined() ? grad_h * grad_out[0].to(grad_h.scalar_type()) : at::Tensor();
        at::Tensor dw = grad_w.defined() ? grad_w * grad_out[0].to(grad_w.scalar_type()) : at::Tensor();  // 0-dim scale
        return {dh, dw, at::Tensor(), at::Tensor()};
    }
};

}  // namespace

int64_t count_target_tokens(const at::Tensor& labels) {
    if (labels.size(1) < 2) return 0;
    return labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

LossSum causal_lm_loss_sum(const at::Tensor& hidden, const at::Tensor& lm_weight, const at::Tensor& labels,
                           int64_t chunk_tokens) {
    if (hidden.dim() != 3 || labels.dim() != 2 || hidden.size(0) != labels.size(0) || hidden.size(1) != labels.size(1) ||
        lm_weight.dim() != 2 || lm_weight.size(1) != hidden.size(2)) {
        throw ShapeError(ErrorInfo{}.at("causal LM loss")
                             .expected("hidden (B, T, H), labels (B, T), lm_weight (V, H)")
                             .found("hidden " + std::to_string(hidden.dim()) + "-d, labels " +
                                    std::to_string(labels.dim()) + "-d, lm_weight " + std::to_string(lm_weight.dim()) + "-d"));
    }
    const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2);
    LossSum out;
    if (T < 2) {
        out.sum = (hidden.sum() * 0).to(at::kFloat);
        return out;
    }
    // The target positions are found where the labels live: labels given on the host (the
    // trainer keeps them there) make `nonzero` a host loop instead of a device sync that would
    // idle a GPU between micro-batches; the (N) positions then travel without a sync either.
    at::Tensor lab = labels.narrow(1, 1, T - 1).reshape({-1});  // (B*(T-1)) next tokens
    at::Tensor idx = lab.ne(kIgnoreIndex).nonzero().reshape({-1});  // (N)
    out.n_tokens = idx.size(0);
    if (out.n_tokens == 0) {
        out.sum = (hidden.sum() * 0).to(at::kFloat);  // keeps the graph; contributes nothing
        return out;
    }
    at::Tensor t = lab.index_select(0, idx).to(at::kLong).to(hidden.device(), /*non_blocking=*/true);  // (N)
    idx = idx.to(hidden.device(), /*non_blocking=*/true);
    at::Tensor h = hidden.narrow(1, 0, T - 1).reshape({B * (T - 1), H}).index_select(0, idx);  // (N, H)
    out.sum = ChunkedCrossEntropy::apply(h, lm_weight, t, std::max<int64_t>(1, chunk_tokens));
    return out;
}

at::Tensor reference_causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
    const int64_t T = logits.size(1), V = logits.size(2);
    at::Tensor l = logits.narrow(1, 0, T - 1).to(at::kFloat).reshape({-1, V});
    at::Tensor y = labels.narrow(1, 1, T - 1).reshape({-1}).to(at::kLong).to(logits.device());
    return at::cross_entropy_loss(l, y, {}, at::Reduction::Mean, kIgnoreIndex);
}

}  // namespace pdsd::train
