// PostgreSQL + pgvector knowledge-base store (Chatchat's vs_type "pg"; issue #22). KnowledgeBase and
// the kb verbs run on it when kb_settings.yaml says vs_type: pg (knowledge_base.cpp).
//
// One PostgreSQL database holds every KB: the catalog (knowledge_base, knowledge_file with
// Chatchat's columns), the chunks (text + metadata), BM25 in ordinary tables (kb_terms: each
// term's chunk count; kb_postings: term -> chunk, tf, chunk length, from pdsd's own
// bm25_terms, since PostgreSQL's text search does not split Chinese this way) and, per KB
// with an embedder and per rebuild, kb_vectors_<kb id>_<generation>(chunk_id, embedding
// vector(d)) with an HNSW index (vector_cosine_ops). A KB's vectors get their own table
// because vector(d) fixes d and HNSW needs it, while KBs differ in d; a new one per rebuild
// so the index is built in bulk after the COPY while searches read the previous one.
//
// Scores are the local store's (knowledge_base.h's header comment): bm25 = FTS5's -bm25()
// (same terms, same formula: src/kb/bm25.h), dense = cosine similarity (1 - pgvector's <=>).
//
// Reliability: a KB's rebuild is one transaction; a failure (or a killed process) at any
// point leaves the previous rows, and readers see the old KB until the commit (MVCC: the
// rebuild deletes rows and writes a new vector table; it takes no lock a search waits for).
// The previous generation's vector table is dropped by the next rebuild. Rebuilds of one KB
// from several processes queue on an advisory lock.
//
// The connection: a libpq URI or key=value DSN (kb_settings.yaml's pg_connection_uri). The
// password comes from the environment ($PGPASSWORD, or ~/.pgpass / $PGPASSFILE), never from
// kb_settings.yaml; it never appears in a message (errors name host, port, database, user).
//
// A PgStore is one connection: use it from one thread at a time.
#pragma once

#include "pdsd/kb/knowledge_base.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::kb {

// false when pdsd was built without libpq (libpq-dev): then PgStore's constructor throws
// a ConfigError saying so.
bool pg_store_available();

// The DSN of kb_settings.yaml (`settings_path` names the file in errors): pg_connection_uri,
// checked: set, parseable, and without a password (ConfigError naming the key; the password
// itself is never echoed).
std::string pg_dsn_from_settings(const KbSettings& settings, const std::string& settings_path);

// One chunk as the store writes it. `embedding`: the chunk's vector (any norm; cosine is
// scale-free), empty when the KB has no embedder.
struct PgChunk {
    std::string file_name;   // relative to content/, '/'-separated
    int64_t chunk_index = 0, start_char = 0, end_char = 0;   // code points
    std::string text;
    std::string metadata_json = "{}";   // a JSON object (stored as jsonb)
    std::vector<float> embedding;
};

// A knowledge_file row (Chatchat's columns; pdsd adds sha256).
struct PgFile {
    std::string file_name, file_ext, document_loader_name, text_splitter_name = "ChineseRecursiveTextSplitter", sha256;
    int64_t file_version = 1, file_size = 0, docs_count = 0;
    double file_mtime = 0;   // seconds since the epoch
    std::string create_time;   // read back by list_files ("YYYY-MM-DD HH:MM:SS"); not written
};

// Everything a KB is after a rebuild.
struct PgKbContent {
    std::string kb_name, kb_info, embed_model = "none";
    int64_t dim = 0;   // 0: BM25 only (every chunk's embedding empty); else every embedding has dim floats
    int64_t chunk_size = 0, chunk_overlap = 0;
    std::vector<PgFile> files;
    std::vector<PgChunk> chunks;   // chunk ids are given in this order (ties in search break by id)
};

struct PgKbInfo {
    int64_t id = 0, generation = 0, dim = 0, chunk_count = 0, term_total = 0, file_count = 0;
    int64_t chunk_size = 0, chunk_overlap = 0;
    std::string kb_name, kb_info, vs_type, embed_model;
    std::string vectors_table;   // kb_vectors_<id>_<generation>; "" without vectors
    std::string create_time;     // "YYYY-MM-DD HH:MM:SS"
};

struct PgSearchOptions {
    // HNSW candidate list (pgvector's hnsw.ef_search, 40 by default): recall vs time. A
    // search asks for max(hnsw_ef_search, k), at most 1000 (pgvector's limit); k > 1000 or
    // exact = true scans every vector instead (exact top-k).
    int64_t hnsw_ef_search = 40;
    bool exact = false;
    // BM25: KBs of >= 20000 chunks drop query terms found in more than this fraction of
    // the chunks while a rarer term remains (SearchOptions::bm25_prune_df_ratio).
    double bm25_prune_df_ratio = 0.02;
};

class PgStore {
public:
    // Connects (IoError naming host/port/database/user and a hint when it cannot).
    explicit PgStore(const std::string& dsn);
    ~PgStore();
    PgStore(const PgStore&) = delete;
    PgStore& operator=(const PgStore&) = delete;

    // "host H port P database D user U" of this connection (no password).
    const std::string& describe() const;

    // The pgvector extension and pdsd's tables and indexes, made when missing (idempotent,
    // safe from several processes at once: one advisory lock).
    void ensure_schema();

    // Replace the KB's catalog rows, chunks, postings and vectors with `content` (creating
    // the KB) in one transaction; generation + 1. Checks the content before writing
    // (DataError: an embedding of the wrong width).
    void rebuild_kb(const PgKbContent& content);
    // Drop the KB (its rows and vector table) in one transaction; false when there was none.
    bool drop_kb(const std::string& kb_name);
    std::optional<PgKbInfo> kb_info(const std::string& kb_name);
    // Every KB, by name; a KB's files (its knowledge_file rows), by name.
    std::vector<PgKbInfo> list_kbs();
    std::vector<PgFile> list_files(const std::string& kb_name);
    // Chatchat's update_info; false when there is no such KB.
    bool set_kb_info(const std::string& kb_name, const std::string& info);
    // The chunks of the KB's files whose name matches `like` (SQL LIKE, case-insensitive:
    // ILIKE; "" = every file), by file name (bytewise) then chunk index; score 0.
    std::vector<SearchHit> list_chunks(const std::string& kb_name, const std::string& like);

    // Top-k by cosine similarity (hits best first, ties by chunk id; score = cosine, also in
    // `cosine`, dense_rank set). UsageError when the KB has no vectors or `query` is not dim wide.
    std::vector<SearchHit> dense_top_k(const std::string& kb_name, const std::vector<float>& query, size_t k,
                                       const PgSearchOptions& options = {});
    // Top-k by BM25 (score = FTS5's -bm25() over the same chunks, also in `bm25`, bm25_rank set).
    std::vector<SearchHit> bm25_top_k(const std::string& kb_name, const std::string& query, size_t k,
                                      const PgSearchOptions& options = {});

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pdsd::kb
