// See onednn.h.
#include "pdsd/model/onednn.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <optional>

namespace pdsd::model::onednn {
namespace {

struct Ops {
    std::optional<c10::OperatorHandle> reorder, pointwise, binary;
    static const Ops& get() {
        static const Ops ops = [] {
            Ops o;
            auto& d = c10::Dispatcher::singleton();
            o.reorder = d.findSchema({"mkldnn::_reorder_linear_weight", ""});
            o.pointwise = d.findSchema({"mkldnn::_linear_pointwise", ""});
            o.binary = d.findSchema({"mkldnn::_linear_pointwise", "binary"});
            if (!o.reorder || !o.pointwise || !o.binary) o.reorder.reset();
            return o;
        }();
        return ops;
    }
};

at::Tensor call(const c10::OperatorHandle& op, torch::jit::Stack s) {
    op.callBoxed(&s);
    return s.at(0).toTensor();
}

c10::IValue optional_tensor(const at::Tensor& t) { return t.defined() ? c10::IValue(t) : c10::IValue(); }

}  // namespace

bool available() { return Ops::get().reorder.has_value(); }

at::Tensor pack(const at::Tensor& weight) { return call(*Ops::get().reorder, {weight, c10::IValue()}); }

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias, const std::string& attr,
                  const std::string& algorithm) {
    c10::IValue algo = algorithm.empty() ? c10::IValue() : c10::IValue(algorithm);
    return call(*Ops::get().pointwise,
                {x, packed, optional_tensor(bias), attr, c10::List<std::optional<at::Scalar>>(), algo});
}

at::Tensor linear_add(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& packed, const at::Tensor& bias) {
    return call(*Ops::get().binary, {x, residual, packed, optional_tensor(bias), std::string("add")});
}

}  // namespace pdsd::model::onednn
