#include "pdsd/model/generate.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "pdsd/model/cpu_decode.h"
#include "pdsd/model/decode_graph.h"
#include "pdsd/model/quant.h"
#include "pdsd/model/loader.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>

namespace pdsd::model {

const char* to_string(StopReason r) {
    switch (r) {
        case StopReason::eos: return "eos";
        case StopReason::length: return "length";
        case StopReason::callback: return "callback";
    }
    return "?";
}

namespace {

struct Resolved {
    int64_t max_new_tokens = 512;
    bool greedy = true;
    double temperature = 1.0, top_p = 1.0, repetition_penalty = 1.0;
    int64_t top_k = 50;
    std::vector<int64_t> eos;
    uint64_t seed = 0;
};

Resolved resolve(const GenerationOptions& o, const LoadedModel& lm) {
    const GenerationConfig& g = lm.generation;
    Resolved r;
    r.max_new_tokens = o.max_new_tokens.value_or(g.max_new_tokens.value_or(512));
    bool do_sample = o.do_sample.value_or(g.do_sample.value_or(false));
    r.temperature = o.temperature.value_or(g.temperature.value_or(1.0));
    r.top_k = o.top_k.value_or(g.top_k.value_or(50));
    r.top_p = o.top_p.value_or(g.top_p.value_or(1.0));
    r.repetition_penalty = o.repetition_penalty.value_or(g.repetition_penalty.value_or(1.0));
    r.greedy = !do_sample || r.temperature == 0.0;
    if (o.eos_token_id) r.eos = *o.eos_token_id;
    else r.eos = !g.eos_token_id.empty() ? g.eos_token_id : lm.config.eos_token_id;
    r.seed = o.seed ? *o.seed : std::random_device{}();
    if (r.max_new_tokens < 0 || r.temperature < 0 || r.top_p <= 0 || r.top_p > 1 || r.repetition_penalty <= 0 || r.top_k < 0) {
        throw UsageError(ErrorInfo{}.at("generation options")
                             .expected("max_new_tokens >= 0, temperature >= 0, 0 < top_p <= 1, top_k >= 0, repetition_penalty > 0")
                             .found("max_new_tokens " + std::to_string(r.max_new_tokens) + ", temperature " +
                                    std::to_string(r.temperature) + ", top_p " + std::to_string(r.top_p) + ", top_k " +
                                    std::to_string(r.top_k) + ", repetition_penalty " + std::to_string(r.repetition_penalty)));
    }
    return r;
}

// HF RepetitionPenaltyLogitsProcessor on every row: score < 0 ? score * p : score / p for
// each id the row has seen. rows (B, V) fp32 on any device; seen[b] = prompt + generated ids.
at::Tensor apply_repetition_penalty(const at::Tensor& rows, const std::vector<std::vector<int64_t>>& seen, double penalty) {
    // (B, S) ids, short rows padded with their own first id (a repeated id gathers and
    // scatters the same value).
    const int64_t B = rows.size(0);
    size_t S = 0;
    for (const auto& v : seen) S = std::max(S, v.size());
    std::vector<int64_t> flat;
    flat.reserve(static_cast<size_t>(B) * S);
    for (const auto& v : seen) {
        flat.insert(flat.end(), v.begin(), v.end());
        flat.insert(flat.end(), S - v.size(), v.empty() ? 0 : v.front());
    }
    at::Tensor idx = at::tensor(flat, at::kLong).view({B, static_cast<int64_t>(S)}).to(rows.device());
    at::Tensor s = rows.gather(1, idx);
    return rows.scatter(1, idx, at::where(s < 0, s * penalty, s / penalty));
}

// One sampled row's next token from its processed logits (V) fp32 CPU (penalty applied).
int64_t pick(at::Tensor logits, const Resolved& r, at::Generator& gen) {
    logits = logits / r.temperature;
    // Candidates: with top-k only tokens scoring at least the k-th score can be drawn (HF's
    // TopKLogitsWarper keeps ties), so top-p, softmax and the draw run over those few instead
    // of all V: sorting and sampling 151,936 entries cost ~25 ms a token on one core.
    at::Tensor cand;  // (C) token ids, ascending; undefined = every token
    if (r.top_k > 0 && r.top_k < logits.size(0)) {
        at::Tensor kth = std::get<0>(logits.topk(r.top_k)).select(0, r.top_k - 1);
        cand = (logits >= kth).nonzero().select(1, 0);  // (C), C >= k
        logits = logits.index_select(0, cand);          // (C)
    }
    if (r.top_p < 1.0) {
        // HF TopPLogitsWarper: sort ascending, drop the low tail whose mass is <= 1 - top_p,
        // always keeping the most likely token. Tokens outside the top-k have zero mass, so
        // doing this over the candidates only removes the same tokens.
        auto sorted = logits.sort(/*dim=*/0, /*descending=*/false);
        at::Tensor cum = std::get<0>(sorted).softmax(0).cumsum(0);
        at::Tensor remove = cum <= (1.0 - r.top_p);
        remove.index_put_({-1}, false);
        at::Tensor remove_orig = at::zeros_like(remove).scatter(0, std::get<1>(sorted), remove);
        logits = logits.masked_fill(remove_orig, -std::numeric_limits<double>::infinity());
    }
    at::Tensor probs = logits.softmax(0);
    int64_t i = at::multinomial(probs, 1, false, gen).item<int64_t>();
    return cand.defined() ? cand[i].item<int64_t>() : i;
}

// Next token of every row that is not done (`pad` for done rows). last (B, V) logits on the
// model's device. The repetition penalty runs there for all rows; greedy rows also take their
// argmax there and only B ids come back; sampling copies the fp32 rows to the CPU for `pick`.
std::vector<int64_t> choose(const at::Tensor& last, const std::vector<std::vector<int64_t>>& seen,
                            const std::vector<bool>& done, const Resolved& r, at::Generator& gen, int64_t pad) {
    const int64_t B = last.size(0);
    at::Tensor rows = last.to(at::kFloat);  // (B, V): HF processes fp32 logits
    if (r.repetition_penalty != 1.0) rows = apply_repetition_penalty(rows, seen, r.repetition_penalty);
    std::vector<int64_t> chosen(static_cast<size_t>(B), pad);
    if (r.greedy) {
        at::Tensor best = rows.argmax(-1).to(at::kCPU);  // (B): the one host synchronisation
        const int64_t* bp = best.data_ptr<int64_t>();
        for (int64_t b = 0; b < B; ++b) {
            if (!done[static_cast<size_t>(b)]) chosen[static_cast<size_t>(b)] = bp[b];
        }
        return chosen;
    }
    rows = rows.to(at::kCPU);
    for (int64_t b = 0; b < B; ++b) {
        if (!done[static_cast<size_t>(b)]) chosen[static_cast<size_t>(b)] = pick(rows[b], r, gen);
    }
    return chosen;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

struct Generator::Impl {
    std::shared_ptr<LoadedModel> lm;
    KVCache cache;
    std::unique_ptr<DecodeGraph> graph;  // decode steps of `cache` (CUDA), captured on first use
    bool graph_failed = false;           // a capture failed once: decode kernel by kernel from then on
    std::vector<int64_t> fed;  // batch-1 tokens whose keys/values are in `cache` (empty: none reusable)
};

Generator::Generator(std::shared_ptr<LoadedModel> model) : impl_(std::make_shared<Impl>()) {
    if (!model || !model->model) throw InternalError("Generator: no model");
    impl_->lm = std::move(model);
    // CPU bf16: the AVX512_BF16 decode kernels (model/cpu_decode.h) read the checkpoint's
    // tensors as they are (copying them into huge pages measured no faster and cost ~1 s of
    // start-up); elsewhere the weights are packed once for oneDNN. PDSD_CPU_PACK=1 / 0 forces
    // packing on / off (A/B timing; prefill then runs on the packed copies).
    const char* env = std::getenv("PDSD_CPU_PACK");
    const std::string pack = env ? env : "";
    // A model quantized at load has no float projections left to pack.
    if (impl_->lm->quant_bytes == 0 && (pack == "1" || (pack.empty() && !cpu_decode::cpu_supported()))) {
        impl_->lm->model->pack_cpu_weights();
    }
}

Generator Generator::load(const std::string& dir, const std::string& device, const std::string& dtype, const std::string& quant) {
    LoadOptions o;
    o.device = device;
    o.dtype = dtype;
    o.quant = quant;
    return Generator(std::make_shared<LoadedModel>(load_qwen2(dir, o)));
}

LoadedModel& Generator::model() { return *impl_->lm; }

int64_t Generator::quantize(const std::string& type, const std::string& model_settings_yaml) {
    const std::string t = !type.empty() || model_settings_yaml.empty() ? type : quant::settings_quant(model_settings_yaml);
    release_cache();
    return impl_->lm->quant_bytes = quant::quantize_model(*impl_->lm, quant::parse_type(t, type.empty() ? model_settings_yaml + ": quant" : "--quant"));
}
int64_t Generator::max_context() const { return impl_->lm->config.max_position_embeddings; }
void Generator::release_cache() {
    impl_->graph.reset();  // before the cache it points into
    impl_->cache = KVCache{};
    impl_->fed.clear();
}

GenerationResult Generator::generate(const std::vector<int64_t>& prompt, const GenerationOptions& options,
                                     const TokenCallback& on_token) {
    BatchTokenCallback cb;
    if (on_token) cb = [&](size_t, int64_t t) { return on_token(t); };
    return generate_batch({prompt}, options, cb).at(0);
}

std::vector<GenerationResult> Generator::generate_batch(const std::vector<std::vector<int64_t>>& prompts,
                                                        const GenerationOptions& options,
                                                        const BatchTokenCallback& on_token) {
    LoadedModel& lm = *impl_->lm;
    Resolved r = resolve(options, lm);
    const int64_t B = static_cast<int64_t>(prompts.size());
    int64_t P = 0;
    for (const auto& p : prompts) {
        if (p.empty()) throw UsageError(ErrorInfo{}.at("generate").msg("empty prompt").hint("give at least one token"));
        for (int64_t t : p) {
            if (t < 0 || t >= lm.config.vocab_size) {
                throw UsageError(ErrorInfo{}.at("prompt token").expected("ids in [0, " + std::to_string(lm.config.vocab_size) + ")")
                                     .found(std::to_string(t)));
            }
        }
        P = std::max<int64_t>(P, static_cast<int64_t>(p.size()));
    }
    std::vector<GenerationResult> results(static_cast<size_t>(B));
    if (B == 0) return results;
    const int64_t max_new = std::min(r.max_new_tokens, lm.config.max_position_embeddings - P);
    if (max_new <= 0) return results;

    // Left-padded prompt batch: ids (B, P), mask (B, P), position ids (B, P).
    const int64_t pad = lm.generation.pad_token_id.value_or(0);
    at::Tensor ids = at::full({B, P}, pad, at::kLong), mask = at::zeros({B, P}, at::kLong);
    std::vector<std::vector<int64_t>> seen(prompts.begin(), prompts.end());
    std::vector<int64_t> next_pos(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        const auto& p = prompts[static_cast<size_t>(b)];
        int64_t n = static_cast<int64_t>(p.size());
        ids[b].narrow(0, P - n, n).copy_(at::tensor(p, at::kLong));
        mask[b].narrow(0, P - n, n).fill_(1);
        next_pos[static_cast<size_t>(b)] = n;
        results[static_cast<size_t>(b)].prompt_tokens = n;
    }
    const bool padded = !mask.all().item<bool>();
    at::Tensor pos = (mask.cumsum(1) - 1).clamp_min(0);  // (B, P)

    at::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(r.seed);
    std::vector<int64_t> previous;  // what the cache held, if reusable
    previous.swap(impl_->fed);       // cleared now: an exception below leaves nothing reusable
    KVCache* cache = nullptr;
    int64_t reuse = 0;               // cached prompt positions kept
    if (options.use_cache) {
        KVCache& c = impl_->cache;
        int64_t need = P + max_new;
        bool fresh = c.batch() != B || c.max_len() < need;
        if (fresh) {
            impl_->graph.reset();
            c = KVCache{};  // free the old one before allocating
            int64_t len = std::min(((need + 255) / 256) * 256, std::max(need, lm.config.max_position_embeddings));
            c = KVCache::allocate(lm.config, B, len, lm.model->options());
        }
        c.reset();
        cache = &c;
        if (B == 1 && !fresh && options.reuse_prefix && !previous.empty()) {
            const auto& p = prompts[0];
            while (reuse < static_cast<int64_t>(std::min(previous.size(), p.size())) &&
                   previous[static_cast<size_t>(reuse)] == p[static_cast<size_t>(reuse)]) {
                ++reuse;
            }
            reuse = std::min(reuse, P - 1);  // prefill at least one token: it gives the first logits
            c.length = reuse;                // key_mask[0, :reuse] is still true from the last call
            results[0].reused_prompt_tokens = reuse;
        }
    }

    std::vector<bool> done(static_cast<size_t>(B), false);
    int64_t active = B;
    at::Tensor all_ids = ids, all_mask = mask;  // full sequences, for use_cache == false
    auto t0 = std::chrono::steady_clock::now();
    ForwardOptions fo;
    fo.last_logits_only = true;
    bool graphs = cache && options.cuda_graph && !impl_->graph_failed && DecodeGraph::supported(lm.model->options().device());
    at::Tensor last = lm.model->forward(ids.narrow(1, reuse, P - reuse), padded ? mask : at::Tensor(),
                                        pos.narrow(1, reuse, P - reuse), cache, fo).logits.select(1, 0);  // (B, V)
    std::vector<int64_t> fed = prompts[0];  // batch 1: tokens now in the cache
    for (int64_t step = 0; step < max_new && active > 0; ++step) {
        std::vector<int64_t> chosen = choose(last, seen, done, r, gen, pad);
        for (int64_t b = 0; b < B; ++b) {
            size_t i = static_cast<size_t>(b);
            if (done[i]) continue;
            int64_t tok = chosen[i];
            seen[i].push_back(tok);
            results[i].tokens.push_back(tok);
            bool stop = false;
            if (std::find(r.eos.begin(), r.eos.end(), tok) != r.eos.end()) {
                results[i].reason = StopReason::eos;
                stop = true;
            }
            if (on_token && !on_token(i, tok) && !stop) {
                results[i].reason = StopReason::callback;
                stop = true;
            }
            if (stop) {
                done[i] = true;
                --active;
            }
        }
        double elapsed = seconds_since(t0);
        for (auto& res : results) (step == 0 ? res.prefill_seconds : res.decode_seconds) = elapsed;
        if (active == 0 || step + 1 == max_new) break;
        throw_if_interrupted();

        // Next step: one token per row at its own next position.
        at::Tensor next = at::tensor(chosen, at::kLong).unsqueeze(1);  // (B, 1)
        at::Tensor next_p = at::tensor(next_pos, at::kLong).unsqueeze(1);
        for (auto& p : next_pos) ++p;
        fed.push_back(chosen[0]);
        // One decode step from the captured graph; false when graphs are off or failed.
        auto graph_step = [&]() -> bool {
            if (!graphs) return false;
            try {
                if (!impl_->graph || !impl_->graph->matches(*cache)) impl_->graph = std::make_unique<DecodeGraph>(lm.model, *cache);
                last = impl_->graph->step(next, next_p, cache->length);
                cache->length += 1;
                return true;
            } catch (const c10::Error& e) {
                // Graphs are only a speed-up: if this libtorch/driver cannot capture, say so once
                // and go on without them. A failed capture leaves the cache as the eager step
                // expects (at most this step's keys written at the same slot).
                log::warn("generate", log::cat("CUDA graph capture failed, decoding without graphs: ", e.what_without_backtrace()));
                impl_->graph.reset();
                impl_->graph_failed = true;
                graphs = false;
                return false;
            }
        };
        if (!cache) {
            all_ids = at::cat({all_ids, next}, 1);
            all_mask = at::cat({all_mask, at::ones({B, 1}, at::kLong)}, 1);
            at::Tensor all_pos = (all_mask.cumsum(1) - 1).clamp_min(0);
            last = lm.model->forward(all_ids, padded ? all_mask : at::Tensor(), all_pos, nullptr, fo).logits.select(1, 0);
        } else if (!graph_step()) {
            last = lm.model->forward(next, at::Tensor(), next_p, cache, fo).logits.select(1, 0);
        }
    }
    if (cache && B == 1) impl_->fed = std::move(fed);
    // decode_seconds so far holds the time since t0; make it the time after the first token.
    for (auto& res : results) res.decode_seconds = std::max(0.0, res.decode_seconds - res.prefill_seconds);
    return results;
}

}  // namespace pdsd::model
