// NF4 / FP4 block quantization (model/nf4.h), the storage of QLoRA's frozen base: bit for bit
// against bitsandbytes' own quantize_4bit / dequantize_4bit (tests/model/make_nf4_golden.py;
// $PDSD_NF4_GOLDEN names a freshly made golden, as oracle_nf4_bnb does), and the properties a
// correct quantizer has on any input.
#include "pdsd/core/error.h"
#include "pdsd/model/nf4.h"
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
    if (const char* p = std::getenv("PDSD_NF4_GOLDEN")) return p;
    return test::golden("nf4_bnb.safetensors");
}

struct Case {
    const char* name;
    nf4::Kind kind;
    bool double_quant;
};
// The cases make_nf4_golden.py writes.
const Case kCases[] = {{"nf4_f32", nf4::Kind::nf4, false},
                       {"nf4_bf16_dq", nf4::Kind::nf4, true},
                       {"nf4_f16_tail", nf4::Kind::nf4, false},
                       {"fp4_f32_dq", nf4::Kind::fp4, true},
                       {"nf4_f32_dq_tail", nf4::Kind::nf4, true}};

using test::same_bits;

}  // namespace

TEST(Nf4, DynamicMapIsBitsandbytes) {
    Checkpoint ck = Checkpoint::open(golden_path());
    EXPECT_TRUE(same_bits(nf4::dynamic_map(), checkpoint_tensor(ck, "dynamic_map")));
}

TEST(Nf4, QuantizeAndDequantizeEqualBitsandbytes) {
    Checkpoint ck = Checkpoint::open(golden_path());
    for (const Case& c : kCases) {
        SCOPED_TRACE(c.name);
        auto get = [&](const std::string& field) { return checkpoint_tensor(ck, std::string(c.name) + "." + field); };
        const at::Tensor w = get("w");
        const nf4::Nf4Weight q = nf4::quantize(w, c.kind, c.double_quant);
        EXPECT_TRUE(same_bits(q.packed, get("packed"))) << "packed indices differ";
        if (c.double_quant) {
            EXPECT_TRUE(same_bits(q.qabsmax, get("qabsmax"))) << "8-bit absmax indices differ";
            EXPECT_TRUE(same_bits(q.absmax2, get("absmax2")));
            EXPECT_EQ(q.offset, get("offset").item<float>());
        } else {
            EXPECT_TRUE(same_bits(q.absmax, get("absmax")));
        }
        const at::Tensor deq = nf4::dequantize(q, w.scalar_type());
        EXPECT_TRUE(same_bits(deq, get("deq"))) << "dequantized weight differs; max |diff| "
                                                 << (deq.to(at::kFloat) - get("deq").to(at::kFloat)).abs().max().item<float>();
    }
}

// Values that are a code value times their block's absmax come back exactly; every other value
// lands within half the widest gap between neighbouring code values (times the absmax).
TEST(Nf4, RoundTripIsExactOnCodeValuesAndBoundedElsewhere) {
    for (auto kind : {nf4::Kind::nf4, nf4::Kind::fp4}) {
        const at::Tensor code = nf4::code(kind);
        auto gen = at::detail::createCPUGenerator(7);
        // Each block of 64: absmax 0.5 (index of code 1.0 or -1.0 first), then random code values.
        at::Tensor idx = at::randint(16, {32, 64}, gen);
        at::Tensor w = code.index_select(0, idx.reshape({-1})).view({32, 64}) * 0.5f;
        w.select(1, 0).fill_(kind == nf4::Kind::nf4 ? 0.5f : -0.5f);
        const at::Tensor back = nf4::dequantize(nf4::quantize(w, kind, false), at::kFloat);
        EXPECT_TRUE(at::equal(back, w)) << nf4::kind_name(kind);

        at::Tensor r = at::randn({17, 130}, gen);
        const nf4::Nf4Weight q = nf4::quantize(r, kind, false);
        const at::Tensor sorted = std::get<0>(code.sort());
        const float gap = (sorted.slice(0, 1) - sorted.slice(0, 0, -1)).max().item<float>();
        const at::Tensor err = (nf4::dequantize(q, at::kFloat) - r).abs().reshape({-1});
        const at::Tensor scale = q.absmax.repeat_interleave(64).slice(0, 0, r.numel());
        EXPECT_LE((err - scale * (gap / 2)).max().item<float>(), 1e-6f) << nf4::kind_name(kind);
    }
}

// Double quantization stores the absmaxes to within the dynamic map's resolution, and takes
// fewer bytes (0.5 + 8/64 + ... bits per weight instead of 0.5 + 32/64).
TEST(Nf4, DoubleQuantizationKeepsTheScalesAndSavesMemory) {
    auto gen = at::detail::createCPUGenerator(11);
    at::Tensor w = at::randn({128, 512}, gen) * 0.02;
    const nf4::Nf4Weight plain = nf4::quantize(w, nf4::Kind::nf4, false);
    const nf4::Nf4Weight dq = nf4::quantize(w, nf4::Kind::nf4, true);
    EXPECT_TRUE(dq.double_quant());
    const at::Tensor rel = ((nf4::block_absmax(dq) - plain.absmax).abs() / plain.absmax);
    EXPECT_LT(rel.max().item<float>(), 0.05f);
    EXPECT_LT(dq.nbytes(), plain.nbytes());
    EXPECT_EQ(plain.nbytes(), 128 * 512 / 2 + 128 * 512 / 64 * 4);
}

TEST(Nf4, BadQuantizationTypeNamesTheKey) {
    try {
        nf4::parse_kind("int4");
        FAIL() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("quantization_type"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("nf4"), std::string::npos) << e.what();
    }
}
