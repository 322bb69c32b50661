// POST /v1/rerank (see rerank_route.h).
#include "rerank_route.h"

#include "pdsd/core/error.h"

#include <algorithm>
#include <numeric>

namespace pdsd::serve {

namespace {

constexpr size_t kMaxDocuments = 10000;   // per request (each is one forward of up to max_length tokens)

UsageError field_error(const std::string& field, const std::string& expected, const std::string& found) {
    return UsageError(ErrorInfo{}.at("'" + field + "'").expected(expected).found(found));
}

std::string type_name(const nlohmann::json& v) { return v.is_null() ? "null" : v.type_name(); }

}  // namespace

nlohmann::json rerank_response(const nlohmann::json& body, kb::Reranker* reranker, const std::string& id) {
    if (!body.is_object()) throw field_error("body", "a JSON object", type_name(body));
    if (!reranker)
        throw UsageError(ErrorInfo{}.at("/v1/rerank").msg("no reranker model is loaded")
                             .hint("start pdsd serve --rerank-model DIR (or USE_RERANKER: true with RERANKER_MODEL in kb_settings.yaml)"));
    auto q = body.find("query");
    if (q == body.end() || !q->is_string()) throw field_error("query", "a string", q == body.end() ? "nothing" : type_name(*q));
    auto d = body.find("documents");
    if (d == body.end() || !d->is_array()) throw field_error("documents", "an array of strings", d == body.end() ? "nothing" : type_name(*d));
    if (d->size() > kMaxDocuments) throw field_error("documents", "at most " + std::to_string(kMaxDocuments), std::to_string(d->size()));
    std::vector<std::string> docs;
    docs.reserve(d->size());
    for (size_t i = 0; i < d->size(); ++i) {
        const auto& x = (*d)[i];
        if (x.is_string()) docs.push_back(x.get<std::string>());
        else if (x.is_object() && x.contains("text") && x["text"].is_string()) docs.push_back(x["text"].get<std::string>());   // Cohere's {"text": ...}
        else throw field_error("documents[" + std::to_string(i) + "]", "a string or {\"text\": string}", type_name(x));
    }
    size_t top_n = docs.size();
    if (auto t = body.find("top_n"); t != body.end() && !t->is_null()) {
        if (!t->is_number_integer() || t->get<int64_t>() < 1) throw field_error("top_n", "an integer >= 1", t->dump());
        top_n = std::min(top_n, static_cast<size_t>(t->get<int64_t>()));
    }
    bool return_documents = false;
    if (auto r = body.find("return_documents"); r != body.end() && !r->is_null()) {
        if (!r->is_boolean()) throw field_error("return_documents", "true or false", r->dump());
        return_documents = r->get<bool>();
    }
    if (auto m = body.find("model"); m != body.end() && !m->is_null() && !m->is_string()) throw field_error("model", "a string", type_name(*m));

    std::vector<double> score = reranker->scores(q->get<std::string>(), docs);
    std::vector<size_t> order(docs.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
    nlohmann::json results = nlohmann::json::array();
    for (size_t r = 0; r < top_n; ++r) {
        size_t i = order[r];
        results.push_back({{"index", i}, {"relevance_score", score[i]},
                           {"document", return_documents ? nlohmann::json{{"text", docs[i]}} : nlohmann::json(nullptr)}});
    }
    return {{"id", id}, {"model", reranker->name()}, {"results", results},
            {"meta", {{"api_version", {{"version", "1"}}}, {"billed_units", {{"search_units", 1}}}}}};
}

}  // namespace pdsd::serve
