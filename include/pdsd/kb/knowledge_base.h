// Knowledge bases on disk, Chatchat layout (docs/knowledge_base.md):
//   <root>/knowledge_base/<kb>/content/...                 the user's files
//   <root>/knowledge_base/<kb>/vector_store/<embed>/index.faiss   only with an embedder
//   <root>/knowledge_base/info.db                          SQLite: knowledge_base,
//        knowledge_file, chunks, and one FTS5 table per KB (chunks_fts_<kb id>) for BM25
// <root> is --root, else $PDSD_ROOT, else ./data.
//
// Reliability: a rebuild of one KB is one SQLite transaction; the FAISS index is
// written to a temp file and renamed after the commit. A rebuild killed at any point
// leaves the previous KB searchable; the next rebuild completes it.
//
// Scores (higher is better in every mode):
//   bm25   score = -bm25() of SQLite FTS5 (FTS5 returns lower-is-better negatives);
//   dense  score = cosine similarity of L2-normalised vectors, in [-1, 1];
//   hybrid score = reciprocal-rank fusion sum w/(60 + rank) over the BM25 and dense lists
//                  (fusion rrf, w = hybrid_weights, 1 and 1 by default), or with fusion
//                  weighted: w_bm25 * minmax(bm25) + w_dense * minmax(cosine) in [0, w_bm25 + w_dense];
//   reranked       score = the cross-encoder's relevance, sigmoid(logit) in (0, 1) (reranker.h).
// score_threshold keeps hits with score >= threshold: on the BM25 score in bm25 mode,
// on the cosine in dense mode and on the dense list before fusion in hybrid mode. It is a
// retrieval threshold, applied before the reranker (which then only sees kept candidates).
//
// The ranking stage (KnowledgeBase::search), in order:
//   candidates (BM25 list, dense list, or both; `candidates` deep each)
//   -> threshold (per list, as above) -> fusion (hybrid: rrf | weighted)
//   -> rerank (optional: the best rerank_top_n fused candidates rescored by a
//      cross-encoder, the others dropped) -> top_k.
#pragma once

#include "pdsd/kb/embedder.h"
#include "pdsd/kb/reranker.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::kb {

// --root, else $PDSD_ROOT, else "./data" (made absolute).
std::string resolve_root(const std::string& root_option);

// The vector_store/<name> folder name of an embed_model: a path's last component,
// ':' replaced by '_'.
std::string embed_model_store_name(const std::string& embed_model);

struct KbPaths {
    std::string root;                              // data root
    std::string kb_root() const;                   // <root>/knowledge_base
    std::string info_db() const;                   // <root>/knowledge_base/info.db
    std::string kb_dir(const std::string& kb) const;
    std::string content_dir(const std::string& kb) const;
    std::string vector_store_dir(const std::string& kb, const std::string& embed_model) const;
    std::string index_path(const std::string& kb, const std::string& embed_model) const;
};

// Ranges of the counts read from kb_settings.yaml, the CLI and requests (checked where
// read: a negative value must not wrap when cast to size_t).
constexpr int64_t kMaxChunkSize = 1000000;   // characters
constexpr int64_t kMaxTopK = 10000;

// kb_settings.yaml (<root>/kb_settings.yaml); missing file -> defaults.
struct KbSettings {
    int64_t chunk_size = 750;
    int64_t chunk_overlap = 150;
    int64_t top_k = 3;
    double score_threshold = 0.0;
    std::string search_mode = "bm25";   // bm25 | dense | hybrid
    std::string embed_model = "none";      // none | hash-ngram | a BERT/bge folder or a name under <root>/models
    std::string query_instruction = "auto"; // dense queries: auto (bge's) | none | the text to prepend
    std::string embed_dtype = "auto";       // auto (bf16 on AVX512-BF16/AMX CPUs, else fp32) | fp32 | bf16
    // Dense index (docs/knowledge_base.md, "Vector index"): auto = exact flat below
    // ivf_min_chunks chunks, IVF at or above; flat = always exact (IndexIDMap(IndexFlatIP));
    // ivf = always IndexIVFFlat (inner product, ids stored in the inverted lists).
    // The type is chosen when the vector store is built from scratch (kb -r, or a
    // re-embed of a stale store); kb -i keeps adding to the existing index.
    std::string vector_index = "auto";      // auto | flat | ivf
    int64_t ivf_min_chunks = 50000;
    int64_t ivf_nlist = 0;                  // 0: 4*sqrt(n), at most n/39 and 65536
    int64_t ivf_nprobe = 0;                 // lists probed per query; 0: ceil(nlist / 4)
    // IVF search kernel: int8 | fp16 = a compact copy of the lists (the configured one made
    // when the index is loaded, another on first use; +25 % / +50 % of the index's memory)
    // scanned with AVX-512, the best candidates rescored in fp32 (same probed lists and
    // exact fp32 scores as FAISS; src/kb/ivf_compact.h); faiss = FAISS's own fp32 scan.
    // CPUs without AVX-512 (or dims not a multiple of 32 / 16) always use faiss.
    std::string ivf_scan = "int8";
    // Ranking stage (see the header comment). Hybrid fusion: rrf | weighted, with the
    // weights of the BM25 and the dense list (Chatchat's EnsembleRetriever: 0.5, 0.5).
    std::string fusion = "rrf";
    std::vector<double> hybrid_weights = {1.0, 1.0};
    // Chatchat's reranker keys: off unless USE_RERANKER; RERANKER_MODEL is a cross-encoder
    // folder or a name under <root>/models; RERANKER_MAX_LENGTH tokens per (query, chunk) pair.
    bool use_reranker = false;
    std::string reranker_model = "bge-reranker-large";
    int64_t reranker_max_length = 1024;
    int64_t rerank_top_n = 20;              // fused candidates the reranker rescores
    // The store (Chatchat's vs_type): faiss = this folder's FAISS + SQLite; pg = PostgreSQL +
    // pgvector at pg_connection_uri (a libpq URI without the password: $PGPASSWORD or
    // ~/.pgpass; pdsd/kb/pg_store.h). Every kb verb and search runs on the one named here
    // (docs/knowledge_base.md, "PostgreSQL store"); vector_index flat on pg = exact scans.
    std::string vs_type = "faiss";
    std::string pg_connection_uri;
};
KbSettings load_kb_settings(const std::string& root);

// `pdsd init`: folders, the samples KB copied from `samples_dir`, default yaml configs
// (existing files are kept). Returns what it created, one line each.
std::vector<std::string> init_root(const std::string& root, const std::string& samples_dir);
// Where the shipped samples are: next to the binary (../share/pdsd/samples,
// ../share/samples) or the source tree (share/samples). "" when not found.
std::string find_samples_dir(const std::string& exe_path);

enum class UpdateMode {
    recreate,      // -r: drop the KB's chunks and re-index every file in content/
    increment,     // -i: index new files, re-index changed ones (sha256), drop deleted ones
    update_in_db,  // -u: re-index files already in the DB (from content/)
    none,          // only prune
};

struct UpdateOptions {
    std::vector<std::string> kb_names;   // empty: every folder under knowledge_base/
    UpdateMode mode = UpdateMode::recreate;
    bool prune_db = false;       // delete DB entries of files gone from content/
    bool prune_folder = false;   // delete files in content/ that are not in the DB
    std::string embed_model;     // "" -> kb_settings.yaml's; "none" -> BM25 only
    std::string vector_index;    // "" -> kb_settings.yaml's vector_index (auto | flat | ivf)
    int64_t chunk_size = -1;     // -1 -> settings
    int64_t chunk_overlap = -1;
    bool progress = true;
};

struct FileChange {
    std::string kb, file, action;   // added | updated | removed | unchanged | skipped | failed
    size_t chunks = 0;
    std::string note;
};
struct UpdateReport {
    std::vector<FileChange> files;
    size_t chunks_written = 0;
    size_t chunks_capped = 0;      // chunks longer than the embedder's token cap (embedded truncated)
    size_t embed_token_cap = 0;    // that cap (0: no embedder or no cap)
    double seconds = 0;
    size_t count(const std::string& action) const;
};

UpdateReport update_knowledge_bases(const std::string& root, const UpdateOptions& options);
// Copy files into <kb>/content (creating the KB) and index them (increment).
UpdateReport add_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                       const UpdateOptions& options);
// Remove files from the DB, the index and content/.
UpdateReport remove_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                          const UpdateOptions& options);

// Drop a knowledge base: its rows in info.db (one transaction) and its folder
// (content/ and vector_store/). Returns false when there was nothing to delete.
bool delete_knowledge_base(const std::string& root, const std::string& kb);

// The files of one knowledge base: those in content/ and those in info.db (Chatchat's
// list_files details), sorted by name. Names are relative to content/ ('/'-separated).
struct KbFileInfo {
    std::string file_name, file_ext, document_loader, text_splitter, create_time;
    int64_t file_version = 0, docs_count = 0;
    bool in_folder = false, in_db = false;
};
std::vector<KbFileInfo> list_kb_files(const std::string& root, const std::string& kb);

struct KbInfo {
    std::string name, info, vs_type, embed_model, create_time;
    int64_t file_count = 0, chunk_count = 0;
    int64_t chunk_size = 0, chunk_overlap = 0;   // as the KB was last built (0: unknown)
    bool in_db = false, has_folder = false;
};
std::vector<KbInfo> list_knowledge_bases(const std::string& root);

// `pdsd kb migrate --to pg|local`: rebuild `kb_names` (empty: every KB in the current store)
// from content/ into the other store, each with its embed_model, chunk sizes and kb_info,
// then set kb_settings.yaml's vs_type to it (only when all succeeded). The old store's rows
// stay. UsageError when `to` is the current store or not pg / local.
UpdateReport migrate_knowledge_bases(const std::string& root, const std::string& to, const std::vector<std::string>& kb_names,
                                     bool progress);

struct SearchOptions {
    size_t top_k = 3;
    std::optional<double> score_threshold;   // unset: kb_settings.yaml's
    std::string mode = "bm25";               // bm25 | dense | hybrid
    bool explain = false;                    // also return dropped candidates
    size_t candidates = 50;                  // per-list depth before threshold/fusion
    // KBs with >= 20000 chunks: query terms found in more than this fraction of the
    // chunks are dropped while a rarer term remains (speed; 1.0 = never).
    double bm25_prune_df_ratio = 0.02;
    // IVF vector stores: inverted lists probed per query; 0 = kb_settings.yaml's
    // ivf_nprobe; >= nlist = exhaustive (the exact flat result). Ignored for flat.
    int64_t nprobe = 0;
    // IVF vector stores: "" = kb_settings.yaml's ivf_scan; fp16 | int8 | faiss (see KbSettings).
    std::string ivf_scan = "";
    // How the BM25 list is scored: "fts5" = FTS5 MATCH + ORDER BY bm25(); "postings" =
    // the terms' postings read from FTS5 (fts5vocab 'instance') and scored here with FTS5's
    // formula (identical scores, several times faster at 100k chunks; query terms that
    // are not single FTS5 tokens are dropped, as the pruning of large KBs does anyway);
    // "auto" = postings for KBs with >= 20000 chunks, fts5 below.
    std::string bm25_scorer = "auto";
    // Hybrid: run the dense search on a second thread beside BM25 (wall ~ max of the two
    // on an idle 2-core box); false: one after the other on the calling thread.
    bool hybrid_parallel = true;
    // Hybrid fusion (see the header comment): "rrf" | "weighted"; weights of the BM25 and
    // the dense list.
    std::string fusion = "rrf";
    double bm25_weight = 1.0, dense_weight = 1.0;
    // Rerank stage: null = off. The best rerank_top_n candidates after fusion are
    // rescored (score = relevance in (0, 1)); candidates beyond them are dropped.
    std::shared_ptr<Reranker> reranker;
    size_t rerank_top_n = 20;
};

// What a caller may override on top of kb_settings.yaml (CLI flags, request fields):
// unset = the setting. rerank_model: a folder / name ("none" = off even with USE_RERANKER).
struct SearchOverrides {
    std::optional<int64_t> top_k, rerank_top_n;
    std::optional<double> score_threshold;
    std::optional<std::string> mode, fusion, rerank_model;
};
// The one place settings become SearchOptions: kb_settings.yaml's search keys with
// `overrides` applied, checked (UsageError naming the field), and the reranker loaded
// (shared_reranker, once per model per process) when USE_RERANKER or rerank_model asks.
// score_threshold is always set (the override, else the setting).
SearchOptions make_search_options(const std::string& root, const KbSettings& settings, const SearchOverrides& overrides = {});

struct SearchHit {
    int64_t chunk_id = 0;
    std::string kb, file_name, text;
    int64_t chunk_index = 0, start_char = 0, end_char = 0;
    double score = 0;                  // the mode's score (see the header comment)
    std::optional<double> bm25;        // -bm25(), when the chunk is in the BM25 list
    std::optional<double> cosine;      // when the chunk is in the dense list
    std::optional<size_t> bm25_rank, dense_rank;   // 1-based
    std::optional<double> fused;       // the fusion (or single-list) score before reranking
    std::optional<double> rerank;      // cross-encoder relevance, when reranked
    std::optional<size_t> fused_rank;  // 1-based rank after fusion, when reranked
    bool kept = true;
    std::string reason;                // why kept/dropped (explain)
};

// The chunks of `kb`'s files whose name matches `file_name` as SQL LIKE does (Chatchat's
// list_docs: % any run, _ one character, ASCII case-insensitive; "" = every file), by file
// name then chunk index; score 0, kept. Chatchat's search_docs with a file_name and no query
// (its KB page's document view). IoError/DataError when the KB is not in info.db.
std::vector<SearchHit> list_chunks(const std::string& root, const std::string& kb, const std::string& file_name);

// A file's identity and contents stamp: inode, mtime (ns) and size; exists false when
// absent. A rename over the file (how index.faiss is replaced) changes the inode.
struct FileStamp {
    bool exists = false;
    uint64_t inode = 0;
    int64_t mtime_ns = 0;
    uint64_t size = 0;
    bool operator==(const FileStamp& o) const {
        return exists == o.exists && inode == o.inode && mtime_ns == o.mtime_ns && size == o.size;
    }
    bool operator!=(const FileStamp& o) const { return !(*this == o); }
};
FileStamp file_stamp(const std::string& path);

// How a KB finds its embedder when a dense search first needs one: the KB's stored
// embed_model -> an embedder, or null to open it from kb_settings.yaml as `kb -r -e` does.
using EmbedderLookup = std::function<std::shared_ptr<Embedder>(const std::string& embed_model)>;

// A KB opened for searching: a small pool of SQLite read connections, the FAISS index and
// the embedder, loaded on first dense use. Thread-safe: search() may run on several
// threads at once; each search leases its own read connection, the index is read-only
// once loaded, and only the embedder call is serialised (thread_safe_embedder), so a
// BM25 search never waits for a dense one. rag::Retriever keeps these open per (root, KB).
class KnowledgeBase {
public:
    // Throws IoError/DataError when the KB is not in info.db. `embedder` may be null
    // (then it is opened from kb_settings.yaml on first dense use); otherwise it must
    // match the KB's embed_model.
    KnowledgeBase(const std::string& root, const std::string& kb_name, std::shared_ptr<Embedder> embedder = nullptr);
    KnowledgeBase(const std::string& root, const std::string& kb_name, EmbedderLookup lookup);
    ~KnowledgeBase();
    KnowledgeBase(const KnowledgeBase&) = delete;
    KnowledgeBase& operator=(const KnowledgeBase&) = delete;

    // Kept hits, best first, at most top_k; with explain, dropped candidates follow
    // (kept == false). This is what the RAG layer calls.
    std::vector<SearchHit> search(const std::string& query, const SearchOptions& options) const;
    const std::string& name() const;
    const std::string& embed_model() const;   // "none" when BM25 only
    int64_t chunk_count() const;
    // The KB's knowledge_base.generation at open (+1 per committed update).
    int64_t generation() const;
    // kb_settings.yaml as read at open.
    const KbSettings& settings() const;
    // false once the KB was written or dropped since this object opened it (its id and
    // generation in info.db), or index.faiss / kb_settings.yaml changed (FileStamp), or
    // info.db itself was replaced (its inode):
    // one indexed SELECT on a pooled connection and three stat() calls (~10-20 us).
    bool is_current() const;
    // The dense index type, "flat" or "ivf" (nlist, nprobe filled for ivf); loads the
    // vector store (throws as dense search does when there is none).
    struct VectorIndexInfo { std::string type; int64_t ntotal = 0, dim = 0, nlist = 0, nprobe = 0; };
    VectorIndexInfo vector_index_info() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ---- Chatchat drop-in helpers (pdsd serve's Chatchat routes, pdsd init) ----
// The embedder of `spec` resolved as `kb -r -e SPEC` does: a folder path, a name under
// <root>/models, or a registered name (hash-ngram, ...); configured from kb_settings.yaml.
// nullptr for "none".
std::unique_ptr<Embedder> open_embed_model(const std::string& root, const std::string& spec);
// Re-index `files` (relative to content/) that are already in the DB (Chatchat's update_docs).
UpdateReport update_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                          const UpdateOptions& options);
// Store the knowledge base's kb_info (Chatchat's update_info). false: no such KB.
bool set_kb_info(const std::string& root, const std::string& kb, const std::string& info);
// Model settings (<root>/model_settings.yaml, pdsd init): the chat model folder that `chat`
// and `serve` load. `model_option` (--model) wins: a folder, else a name under <root>/models.
// Then llm_model_path (relative to the cwd, then to the root), then default_llm_model as a
// name under <root>/models. "" : no model (retrieval-only; also `--model none`, which skips
// the settings file). A given --model that resolves to nothing is an IoError.
std::string resolve_llm_model_dir(const std::string& root, const std::string& model_option);
// Set top-level `key: value` lines of a settings YAML written by pdsd init, keeping the
// comments; keys not present are appended. (pdsd init -l/-e/-x.)
void set_settings_keys(const std::string& yaml_path, const std::vector<std::pair<std::string, std::string>>& keys);

}  // namespace pdsd::kb
