// Activation checkpointing as a custom autograd function; see checkpointing.h.
#include "pdsd/train/checkpointing.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <memory>

namespace pdsd::train {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Saved {
    LayerFn fn;
    bool preserve_rng = false;
    at::Tensor rng_state;  // generator state before the forward (uint8 CPU tensor)
    c10::Device device{c10::kCPU};
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
    // Runs with grad mode off (custom Function forward): nothing of fn is recorded.
    static at::Tensor forward(AutogradContext* ctx, std::shared_ptr<Saved> saved, const at::Tensor& x, const at::TensorList& params) {
        if (saved->preserve_rng) {
            saved->device = x.device();
            saved->rng_state = at::globalContext().defaultGenerator(x.device()).get_state();
        }
        std::vector<at::Tensor> keep{x};
        keep.insert(keep.end(), params.begin(), params.end());
        ctx->save_for_backward(keep);
        at::Tensor out = saved->fn(x);
        ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<Holder>(std::move(saved)));
        return out;
    }

    // Gradients: [none for `saved`, d x, d params...].
    static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
        auto vars = ctx->get_saved_variables();
        auto holder = ctx->saved_data["fn"].toCapsule();
        const std::shared_ptr<Saved>& saved = static_cast<Holder*>(holder.get())->saved;
        at::Tensor x = vars[0].detach();
        const bool x_grad = vars[0].requires_grad();
        x.requires_grad_(x_grad);
        std::vector<at::Tensor> params(vars.begin() + 1, vars.end());

        at::Tensor out;
        {
            at::Tensor now;
            at::Generator gen;
            if (saved->preserve_rng) {
                gen = at::globalContext().defaultGenerator(saved->device);
                now = gen.get_state();
                gen.set_state(saved->rng_state);
            }
            torch::autograd::AutoGradMode on(true);
            out = saved->fn(x);
            if (saved->preserve_rng) gen.set_state(now);  // later draws continue as without checkpointing
        }
        std::vector<at::Tensor> inputs;
        if (x_grad) inputs.push_back(x);
        for (const auto& p : params) inputs.push_back(p);
        variable_list grads;
        if (!inputs.empty() && out.requires_grad()) {
            grads = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                          /*allow_unused=*/true);
        } else {
            grads.assign(inputs.size(), at::Tensor());
        }
        variable_list result;
        result.emplace_back();  // `saved`
        size_t k = 0;
        result.push_back(x_grad ? grads[k++] : at::Tensor());
        for (size_t i = 0; i < params.size(); ++i) result.push_back(grads[k++]);
        return result;
    }

    struct Holder : torch::CustomClassHolder {
        explicit Holder(std::shared_ptr<Saved> s) : saved(std::move(s)) {}
        std::shared_ptr<Saved> saved;
    };
};

}  // namespace

at::Tensor checkpoint(const LayerFn& fn, const at::Tensor& x, const std::vector<at::Tensor>& params, bool preserve_rng) {
    auto saved = std::make_shared<Saved>();
    saved->fn = fn;
    saved->preserve_rng = preserve_rng;
    return CheckpointFunction::apply(std::move(saved), x, at::TensorList(params));
}

std::function<at::Tensor(int64_t, const LayerFn&, const at::Tensor&)> checkpoint_every_layer(
    std::vector<std::vector<at::Tensor>> layer_params, bool preserve_rng) {
    auto lp = std::make_shared<std::vector<std::vector<at::Tensor>>>(std::move(layer_params));
    return [lp, preserve_rng](int64_t layer, const LayerFn& run, const at::Tensor& x) -> at::Tensor {
        if (!at::GradMode::is_enabled()) return run(x);
        static const std::vector<at::Tensor> none;
        const auto& ps = layer >= 0 && layer < static_cast<int64_t>(lp->size()) ? (*lp)[static_cast<size_t>(layer)] : none;
        return checkpoint(run, x, ps, preserve_rng);
    };
}

}  // namespace pdsd::train
