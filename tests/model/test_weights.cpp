// safetensors -> torch: BF16 decoding checked against Hugging Face's own embedding output.
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/model/weights.h"

#include <torch/torch.h>

using namespace pdsd;

TEST(Weights, EmbeddingRowsEqualHfHiddenStates0) {
    Checkpoint model = Checkpoint::open(test::golden("tiny-qwen2"));
    Checkpoint ref = Checkpoint::open(test::golden("tiny-qwen2.reference.safetensors"));
    at::Tensor embed = model::checkpoint_tensor(model, "model.embed_tokens.weight");  // (V, H) bf16
    ASSERT_EQ(embed.scalar_type(), at::kBFloat16);
    at::Tensor ids = model::checkpoint_tensor(ref, "input_ids");                       // (B, T) int64
    at::Tensor h0 = model::checkpoint_tensor(ref, "hidden_states.0");                  // (B, T, H) fp32
    at::Tensor gathered = embed.index_select(0, ids.reshape({-1})).to(at::kFloat).reshape(h0.sizes());
    // Exact: widening bf16 to fp32 is lossless, so any difference is a decoding bug.
    EXPECT_TRUE(torch::equal(gathered, h0));
}

TEST(Weights, ViewIsZeroCopyAndRoundTrips) {
    test::TempDir dir;
    at::Tensor a = torch::arange(12, torch::kFloat).reshape({3, 4});
    at::Tensor b = torch::randn({5}).to(torch::kBFloat16);
    at::Tensor ka, kb;
    write_sharded(dir.str(), "model", {model::tensor_view("a", a, ka), model::tensor_view("b", b.t(), kb)}, 0);
    Checkpoint ck = Checkpoint::open(dir.str());
    at::Tensor a2 = model::checkpoint_tensor(ck, "a");
    EXPECT_EQ(a2.data_ptr(), static_cast<const void*>(ck.data("a")));  // a view into the mapping
    EXPECT_TRUE(torch::equal(a, a2));
    EXPECT_TRUE(torch::equal(b, model::checkpoint_tensor(ck, "b")));
    EXPECT_EQ(model::parse_dtype_name("bf16"), at::kBFloat16);
    EXPECT_THROW(model::parse_dtype_name("int4"), UsageError);
}
