// Private to src/serve: POST /v1/rerank (also /rerank, /v2/rerank), the rerank API of
// Xinference, llama-server, Cohere and Jina that LangChain / Dify / Chatchat clients call.
//
// Request:  {"model": str (optional, informative), "query": str,
//            "documents": [str | {"text": str}], "top_n": int (default: all),
//            "return_documents": bool (default false; Xinference's default),
//            "max_chunks_per_doc", "return_len": accepted and ignored}
// Response: {"id", "model", "results": [{"index", "relevance_score", "document": {"text"} | null}],
//            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}}
// results are sorted by relevance_score (CrossEncoder's sigmoid of the logit, in (0, 1)),
// best first, at most top_n. A malformed field is a UsageError (400) naming it.
#pragma once

#include "pdsd/kb/reranker.h"

#include <nlohmann/json.hpp>

#include <string>

namespace pdsd::serve {

// `reranker` null: the server was started without one (UsageError with the hint).
nlohmann::json rerank_response(const nlohmann::json& body, kb::Reranker* reranker, const std::string& id);

}  // namespace pdsd::serve
