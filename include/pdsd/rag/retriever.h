// rag::Retriever: the process's opened knowledge bases, their embedders and settings, for
// every reader of a KB (pdsd serve's KB routes, `kb search`, `kb eval`).
//
// Opening a KB costs a SQLite open, kb_settings.yaml, maybe an embedding model, and on the
// first dense search index.faiss plus its compact IVF copy (0.3-0.9 s at 100k chunks), so
// a KB is opened once per (root, name) and kept. Each get() checks it is still current
// (KnowledgeBase::is_current: the KB's generation in info.db, bumped by every committed
// update, and the stamps of index.faiss, kb_settings.yaml and info.db), ~10-20 us; a stale one is
// replaced by a fresh open. Callers hold a shared_ptr, so a search in flight keeps the old
// object alive while the next get() opens the new one.
//
// Thread-safe, and readers never wait on each other: the cache lock is held only to look
// up or swap a pointer (opening happens outside it), KnowledgeBase::search is thread-safe,
// and embedders are shared as thread_safe_embedder wrappers (only embed() is serialised;
// a BM25 search takes no embedder lock).
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace pdsd::rag {

class Retriever {
public:
    Retriever() = default;
    Retriever(const Retriever&) = delete;
    Retriever& operator=(const Retriever&) = delete;

    // An embedder the Retriever hands to KBs whose stored embed_model is one of `specs`
    // (e.g. pdsd serve -e's, under its spec, its resolved path and its name()); stored
    // as thread_safe_embedder(e), which is returned (share it for other uses of the model,
    // such as /v1/embeddings, so they take the same lock).
    std::shared_ptr<kb::Embedder> add_embedder(const std::vector<std::string>& specs, std::shared_ptr<kb::Embedder> e);

    // The embedder for a KB's stored embed_model under `root` (null for "none"): one
    // added above, else opened once (kb::open_embed_model) and kept. Thread-safe.
    std::shared_ptr<kb::Embedder> embedder(const std::string& root, const std::string& embed_model);

    // The KB `name` under data root `root`, opened on first use and reopened when written
    // since (see the header comment). Throws what KnowledgeBase's constructor throws (the
    // KB is not in info.db: DataError; no info.db: IoError).
    std::shared_ptr<const kb::KnowledgeBase> get(const std::string& root, const std::string& name);

    // <root>/kb_settings.yaml, re-read only when its FileStamp changed.
    kb::KbSettings settings(const std::string& root);

    // Drop the cached KBs under `root` (a temp KB's folder removed, ...).
    void forget(const std::string& root);

    // KnowledgeBase objects constructed so far (tests: repeated gets reuse one).
    int64_t opens() const;

private:
    using Key = std::pair<std::string, std::string>;   // (root, name)
    struct Settings { kb::FileStamp stamp; kb::KbSettings value; };
    mutable std::mutex mu_;   // guards the maps and the counter only; never held while opening
    std::map<Key, std::shared_ptr<const kb::KnowledgeBase>> kbs_;
    std::map<std::string, std::shared_ptr<kb::Embedder>> added_;       // add_embedder's, by spec
    std::map<Key, std::shared_ptr<kb::Embedder>> opened_;              // embedder()'s, by (root, spec)
    std::mutex open_mu_;      // one embedder open at a time (a model load; rare)
    std::map<std::string, Settings> settings_;                         // by root
    int64_t opens_ = 0;
};

}  // namespace pdsd::rag
