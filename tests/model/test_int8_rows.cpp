// Row-wise int8 storage (model/int8_rows.h), the base of 8-bit QLoRA: bit for bit against
// bitsandbytes' Int8Params (CB, SCB) and the weight its Linear8bitLt trains with
// (tests/model/make_int8_golden.py; $PDSD_INT8_GOLDEN names a freshly made golden, as
// oracle_int8_bnb does), and the properties a correct quantizer has on any input.
#include "pdsd/core/error.h"
#include "pdsd/model/int8_rows.h"
#include "pdsd/model/weights.h"

#include "same_bits.h"
#include "test_util.h"

#include <torch/torch.h>

#include <cstdlib>
#include <string>

using namespace pdsd;
using namespace pdsd::model;

namespace {

std::string golden_path() {
    if (const char* p = std::getenv("PDSD_INT8_GOLDEN")) return p;
    return test::golden("int8_bnb.safetensors");
}

// The cases make_int8_golden.py writes.
const char* const kCases[] = {"int8_f32", "int8_bf16", "int8_f16", "int8_f32_tiny"};

using test::same_bits;

}  // namespace

TEST(Int8Rows, QuantizeAndDequantizeEqualBitsandbytes) {
    Checkpoint ck = Checkpoint::open(golden_path());
    for (const char* name : kCases) {
        SCOPED_TRACE(name);
        auto get = [&](const std::string& field) { return checkpoint_tensor(ck, std::string(name) + "." + field); };
        const at::Tensor w = get("w");
        const int8_rows::Int8Weight q = int8_rows::quantize(w);
        EXPECT_TRUE(same_bits(q.cb, get("CB"))) << "CB differs in " << (q.cb != get("CB")).sum().item<int64_t>() << " values";
        EXPECT_TRUE(same_bits(q.scb, get("SCB"))) << "SCB differs";
        EXPECT_TRUE(same_bits(int8_rows::dequantize(q, w.scalar_type()), get("deq"))) << "dequantized weight differs";
        EXPECT_TRUE(same_bits(int8_rows::dequantize(q, at::kFloat), get("deq_f32"))) << "fp32 dequantized weight differs";
    }
}

// Each row's absmax maps to +-127 and comes back exactly (fp16-representable values); every
// value lands within half a step (SCB / 254) of its fp16 copy; an all-zero row stays zero.
TEST(Int8Rows, RoundTripIsBoundedPerRow) {
    auto gen = at::detail::createCPUGenerator(5);
    at::Tensor w = (at::randn({24, 130}, gen) * 0.03).to(at::kHalf).to(at::kFloat);
    w[7].zero_();
    const int8_rows::Int8Weight q = int8_rows::quantize(w);
    EXPECT_EQ(q.cb.scalar_type(), at::kChar);
    EXPECT_EQ(q.scb.scalar_type(), at::kFloat);
    EXPECT_EQ(q.nbytes(), 24 * 130 + 24 * 4);
    EXPECT_TRUE(at::equal(q.scb, std::get<0>(w.abs().max(1))));
    EXPECT_TRUE(at::equal(q.cb.abs().to(at::kInt).amax(1).index({at::indexing::Slice(0, 7)}), at::full({7}, 127, at::kInt)));
    EXPECT_EQ(q.cb[7].abs().sum().item<int64_t>(), 0);
    EXPECT_EQ(q.scb[7].item<float>(), 0.0f);
    const at::Tensor back = int8_rows::dequantize(q, at::kFloat);
    const at::Tensor err = (back - w).abs();
    EXPECT_LE((err - q.scb.unsqueeze(1) / 254 * (1 + 1e-5)).max().item<float>(), 0.0f);
    const at::Tensor at_max = w.abs() == q.scb.unsqueeze(1);
    EXPECT_TRUE(at::equal(back.masked_select(at_max & (q.scb.unsqueeze(1) > 0)), w.masked_select(at_max & (q.scb.unsqueeze(1) > 0))));
    EXPECT_TRUE(at::all(back[7] == 0).item<bool>());
}

TEST(Int8Rows, RejectsANonMatrix) {
    EXPECT_THROW(int8_rows::quantize(at::zeros({3, 4, 5})), ShapeError);
}
