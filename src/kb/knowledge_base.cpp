// Knowledge bases: folder scan, loaders + splitter, SQLite (chunks + FTS5 BM25),
// FAISS (IndexIDMap over IndexFlatIP, or IndexIVFFlat for large KBs) and search. SQLite and FAISS stay in this file.
// vs_type pg: the same scan, loaders, splitter and embedder feed kb::PgStore (pg_store.h), and
// search takes its candidate lists from it; the ranking stage is shared ("vs_type pg" sections).
#include "pdsd/kb/knowledge_base.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"
#include "pdsd/core/progress.h"
#include "pdsd/kb/loader.h"
#include "pdsd/kb/pg_store.h"
#include "pdsd/kb/splitter.h"
#include "pdsd/kb/text.h"
#include "bm25.h"
#include "ivf_compact.h"
#include "sqlite_db.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include <omp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pdsd::kb {

namespace fs = std::filesystem;
using detail::Db;
using detail::Stmt;
using fidx_t = faiss::Index::idx_t;

// ---- paths and settings --------------------------------------------------------

std::string resolve_root(const std::string& root_option) {
    std::string r = root_option;
    if (r.empty()) {
        const char* env = std::getenv("PDSD_ROOT");
        r = (env && *env) ? env : "data";
    }
    return fs::absolute(fs::path(r)).lexically_normal().string();
}

namespace {
// create_directories with a user error (exit 1) instead of a filesystem_error: --root or
// a folder on the way is a file, or not writable.
void make_dirs(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir))
        throw IoError(ErrorInfo{dir}.msg("cannot create the folder").found(ec ? ec.message() : "not a folder")
                          .hint("--root (or $PDSD_ROOT) must be a writable folder, not a file"));
}
}  // namespace

std::string KbPaths::kb_root() const { return (fs::path(root) / "knowledge_base").string(); }
std::string KbPaths::info_db() const { return (fs::path(kb_root()) / "info.db").string(); }
std::string KbPaths::kb_dir(const std::string& kb) const { return (fs::path(kb_root()) / kb).string(); }
std::string KbPaths::content_dir(const std::string& kb) const { return (fs::path(kb_dir(kb)) / "content").string(); }
std::string embed_model_store_name(const std::string& embed_model) {
    // A model given by path is stored under its folder name, as Chatchat names
    // vector_store/<embed_model> after the model.
    std::string m = embed_model;
    while (m.size() > 1 && m.back() == '/') m.pop_back();
    if (m.find('/') != std::string::npos) m = fs::path(m).filename().string();
    std::replace(m.begin(), m.end(), ':', '_');
    return m;
}

std::string KbPaths::vector_store_dir(const std::string& kb, const std::string& embed_model) const {
    std::string m = embed_model_store_name(embed_model);
    return (fs::path(kb_dir(kb)) / "vector_store" / m).string();
}
std::string KbPaths::index_path(const std::string& kb, const std::string& embed_model) const {
    return (fs::path(vector_store_dir(kb, embed_model)) / "index.faiss").string();
}

KbSettings load_kb_settings(const std::string& root) {
    KbSettings s;
    std::string path = (fs::path(root) / "kb_settings.yaml").string();
    if (!fs::exists(path)) return s;
    ConfigSchema schema("kb_settings");
    schema.add("chunk_size", &s.chunk_size, "characters per chunk (code points)");
    schema.add("chunk_overlap", &s.chunk_overlap, "overlap between chunks (code points)");
    schema.add("top_k", &s.top_k, "chunks returned by a search");
    schema.add("score_threshold", &s.score_threshold, "keep hits with score >= threshold");
    schema.add("search_mode", &s.search_mode, "bm25 | dense | hybrid");
    schema.add("embed_model", &s.embed_model, "embedding model, or none");
    schema.add("query_instruction", &s.query_instruction, "prepended to dense queries: auto | none | text");
    schema.add("embed_dtype", &s.embed_dtype, "compute dtype of the embedding model: auto (bf16 on CPUs with native bf16, else fp32) | fp32 | bf16");
    schema.add("vector_index", &s.vector_index, "dense index: auto | flat | ivf");
    schema.add("ivf_min_chunks", &s.ivf_min_chunks, "auto: IVF when a full build embeds at least this many chunks");
    schema.add("ivf_nlist", &s.ivf_nlist, "IVF inverted lists (0: 4*sqrt(n), at most n/39)");
    schema.add("ivf_nprobe", &s.ivf_nprobe, "IVF lists probed per query (0: default)");
    schema.add("ivf_scan", &s.ivf_scan, "IVF search kernel: int8 | fp16 (compact copies, AVX-512) | faiss");
    std::vector<std::string> weights;
    schema.add("fusion", &s.fusion, "hybrid fusion: rrf (weighted reciprocal rank) | weighted (min-max scores)");
    schema.add("hybrid_weights", &weights, "weights of the BM25 and the dense list in hybrid fusion, e.g. [0.5, 0.5]");
    schema.add("USE_RERANKER", &s.use_reranker, "rerank retrieved chunks with a cross-encoder (Chatchat's key)");
    schema.add("RERANKER_MODEL", &s.reranker_model, "cross-encoder folder or name under <root>/models (bge-reranker-*)");
    schema.add("RERANKER_MAX_LENGTH", &s.reranker_max_length, "tokens per (query, chunk) pair given to the reranker");
    schema.add("rerank_top_n", &s.rerank_top_n, "fused candidates the reranker rescores before top_k");
    schema.add("vs_type", &s.vs_type, "knowledge-base store: faiss (local folder) | pg (PostgreSQL + pgvector)");
    schema.add("pg_connection_uri", &s.pg_connection_uri, "vs_type pg: postgresql://USER@HOST:PORT/DB (password from $PGPASSWORD)");
    schema.load_yaml(path);
    if (s.vs_type != "faiss" && s.vs_type != "pg")
        throw ConfigError(ErrorInfo{path}.at("vs_type").expected("faiss or pg").found(s.vs_type)
                              .hint("Chatchat's milvus / es / chromadb stores are not in pdsd"));
    if (!weights.empty()) {
        if (weights.size() != 2)
            throw ConfigError(ErrorInfo{path}.at("hybrid_weights").expected("two numbers [bm25, dense]").found(std::to_string(weights.size()) + " values"));
        s.hybrid_weights.clear();
        for (auto& w : weights) {
            char* end = nullptr;
            double v = std::strtod(w.c_str(), &end);
            if (end == w.c_str() || *end || !(v >= 0) || v > 1e6)
                throw ConfigError(ErrorInfo{path}.at("hybrid_weights").expected("numbers >= 0").found(w));
            s.hybrid_weights.push_back(v);
        }
    }
    if (s.fusion != "rrf" && s.fusion != "weighted")
        throw ConfigError(ErrorInfo{path}.at("fusion").expected("rrf or weighted").found(s.fusion));
    check_int_in_range(s.reranker_max_length, path + ": RERANKER_MAX_LENGTH", 5, 1000000);
    check_int_in_range(s.rerank_top_n, path + ": rerank_top_n", 1, kMaxTopK);
    if (s.ivf_scan != "fp16" && s.ivf_scan != "int8" && s.ivf_scan != "faiss")
        throw ConfigError(ErrorInfo{path}.at("ivf_scan").expected("fp16, int8 or faiss").found(s.ivf_scan));
    if (s.vector_index != "auto" && s.vector_index != "flat" && s.vector_index != "ivf")
        throw ConfigError(ErrorInfo{path}.at("vector_index").expected("auto, flat or ivf").found(s.vector_index));
    // Counts are cast to size_t later: a negative one must not wrap to 2^64-3.
    check_int_in_range(s.chunk_size, path + ": chunk_size", 1, kMaxChunkSize);
    check_int_in_range(s.chunk_overlap, path + ": chunk_overlap", 0, kMaxChunkSize);
    check_int_in_range(s.top_k, path + ": top_k", 1, kMaxTopK);
    if (s.ivf_min_chunks < 1 || s.ivf_nlist < 0 || s.ivf_nprobe < 0)
        throw ConfigError(ErrorInfo{path}.at("ivf_min_chunks/ivf_nlist/ivf_nprobe")
                              .expected("ivf_min_chunks >= 1, ivf_nlist >= 0, ivf_nprobe >= 0").found("a value out of range"));
    return s;
}

namespace {

std::string now_string() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    return buf;
}

std::string settings_path(const std::string& root) { return (fs::path(root) / "kb_settings.yaml").string(); }

bool on_pg(const KbSettings& settings) { return settings.vs_type == "pg"; }

// vs_type pg: one connection to kb_settings.yaml's server, the schema made when missing
// (ConfigError naming the file's key, or IoError naming the server).
std::unique_ptr<PgStore> open_pg(const KbSettings& settings, const std::string& root) {
    auto store = std::make_unique<PgStore>(pg_dsn_from_settings(settings, settings_path(root)));
    store->ensure_schema();
    return store;
}

void validate_kb_name(const std::string& kb) {
    if (kb.empty() || kb == "." || kb == ".." || kb.find('/') != std::string::npos ||
        kb.find('\\') != std::string::npos || kb.find('\0') != std::string::npos)
        throw UsageError(ErrorInfo{}.at("--kb-name").msg("invalid knowledge-base name").found("'" + kb + "'")
                             .hint("use a plain folder name such as samples"));
}

// Migration for Chatchat's own SQLAlchemy models: its KnowledgeFileModel selects every
// column it declares, and its web UI's KB page reads info.db through it, so a column pdsd
// does not use must still exist. custom_docs (Chatchat: "the file's docs were edited by
// hand") is always 0 in pdsd. Added to databases made before it existed, too.
void add_chatchat_file_columns(Db& db) {
    Stmt cols(db, "SELECT 1 FROM pragma_table_info('knowledge_file') WHERE name = 'custom_docs'");
    if (!cols.step()) db.exec("ALTER TABLE knowledge_file ADD COLUMN custom_docs INTEGER DEFAULT 0");
}

// knowledge_base.generation: +1 with every committed update of the KB (update_one), so a
// process holding the KB open (rag::Retriever) sees a write by any process with one
// indexed SELECT. The AUTOINCREMENT id changes when a KB is dropped and made again, so
// (id, generation) never repeats. Added to databases made before it existed.
void add_generation_column(Db& db) {
    Stmt cols(db, "SELECT 1 FROM pragma_table_info('knowledge_base') WHERE name = 'generation'");
    if (!cols.step()) db.exec("ALTER TABLE knowledge_base ADD COLUMN generation INTEGER DEFAULT 0");
}

void ensure_schema(Db& db) {
    db.exec("PRAGMA journal_mode=WAL");
    db.exec("PRAGMA synchronous=NORMAL");
    db.exec(R"(CREATE TABLE IF NOT EXISTS knowledge_base(
        id INTEGER PRIMARY KEY AUTOINCREMENT, kb_name TEXT NOT NULL UNIQUE, kb_info TEXT,
        vs_type TEXT, embed_model TEXT, file_count INTEGER DEFAULT 0, create_time TEXT,
        chunk_size INTEGER, chunk_overlap INTEGER);
      CREATE TABLE IF NOT EXISTS knowledge_file(
        id INTEGER PRIMARY KEY AUTOINCREMENT, file_name TEXT NOT NULL, file_ext TEXT, kb_name TEXT NOT NULL,
        document_loader_name TEXT, text_splitter_name TEXT, file_version INTEGER DEFAULT 1,
        file_mtime REAL, file_size INTEGER, sha256 TEXT, docs_count INTEGER, create_time TEXT,
        UNIQUE(kb_name, file_name));
      CREATE TABLE IF NOT EXISTS chunks(
        id INTEGER PRIMARY KEY AUTOINCREMENT, kb_name TEXT NOT NULL, file_name TEXT NOT NULL,
        chunk_index INTEGER, text TEXT, start_char INTEGER, end_char INTEGER, token_count INTEGER);
      CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks(kb_name, file_name);)");
    add_chatchat_file_columns(db);
    add_generation_column(db);
}

std::string fts_table(int64_t kb_id) { return "chunks_fts_" + std::to_string(kb_id); }

// FTS5 MATCH expression: the terms OR-ed, each quoted.
std::string match_expression(const std::vector<std::string>& terms) {
    std::string out;
    for (auto& t : terms) {
        std::string q;
        for (char c : t) { q += c; if (c == '"') q += '"'; }
        if (!out.empty()) out += " OR ";
        out += "\"" + q + "\"";
    }
    return out;
}

struct FolderFile {
    std::string rel;    // POSIX path relative to content/
    std::string abs;
    int64_t size = 0;
    double mtime = 0;
    std::string sha256;
};

// True when `p` (a symlink) resolves to a place inside `content_canon`.
bool link_stays_inside(const fs::path& p, const fs::path& content_canon) {
    std::error_code ec;
    fs::path target = fs::canonical(p, ec);
    if (ec) return false;   // dangling or a loop
    auto rel = target.lexically_relative(content_canon);
    return !rel.empty() && *rel.begin() != "..";
}

// The files of content/. Symlinks are not followed out of content/ (an uploaded or
// planted link to /etc/passwd or ~/.ssh must not be indexed and served): such links,
// and symlinked folders (loops), are refused with a warning in `refused` (rel -> why).
std::vector<FolderFile> list_folder(const std::string& content,
                                    std::vector<std::pair<std::string, std::string>>* refused = nullptr) {
    std::vector<FolderFile> out;
    if (!fs::is_directory(content)) return out;
    std::error_code cec;
    fs::path content_canon = fs::canonical(content, cec);
    auto opts = fs::directory_options::skip_permission_denied;   // never follow_directory_symlink
    for (auto it = fs::recursive_directory_iterator(content, opts); it != fs::recursive_directory_iterator(); ++it) {
        std::string base = it->path().filename().string();
        if (is_skipped_name(base)) {
            if (it->is_directory()) it.disable_recursion_pending();
            continue;
        }
        std::error_code ec;
        if (it->is_symlink(ec)) {
            std::string rel = it->path().lexically_relative(content).generic_string();
            std::string why = !link_stays_inside(it->path(), content_canon) ? "symlink pointing outside content/ refused"
                              : fs::is_directory(it->path(), ec)            ? "symlinked folder not followed"
                                                                             : "";
            if (!why.empty()) {
                log::warn("kb", log::cat(content, "/", rel, ": ", why));
                if (refused) refused->emplace_back(rel, why);
                continue;
            }
        }
        if (!it->is_regular_file(ec)) continue;
        FolderFile f;
        f.abs = it->path().string();
        f.rel = it->path().lexically_relative(content).generic_string();
        f.size = static_cast<int64_t>(it->file_size());
        auto ft = fs::last_write_time(it->path());
        f.mtime = std::chrono::duration<double>(ft.time_since_epoch()).count();
        out.push_back(std::move(f));
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.rel < b.rel; });
    return out;
}

std::vector<std::string> kb_folders(const KbPaths& p) {
    std::vector<std::string> out;
    if (!fs::is_directory(p.kb_root())) return out;
    for (auto& e : fs::directory_iterator(p.kb_root()))
        if (e.is_directory() && !is_skipped_name(e.path().filename().string())) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

// `-e` / embed_model as stored in info.db: a relative path to an existing folder is
// made absolute (so searches from another directory find the model); names are kept.
std::string embed_model_spec(const std::string& spec) {
    if (spec.empty() || spec == "none" || spec.rfind("hash-ngram", 0) == 0) return spec;
    std::error_code ec;
    if (fs::path(spec).is_relative() && fs::is_directory(spec, ec)) return fs::absolute(spec).lexically_normal().string();
    return spec;
}

// The embedder of a stored spec: a folder path, a name under <root>/models, or a
// registered name; configured from kb_settings.yaml.
std::unique_ptr<Embedder> open_embedder(const std::string& root, const std::string& spec, const KbSettings& settings) {
    std::string target = spec;
    std::error_code ec;
    fs::path under_root = fs::path(root) / "models" / spec;
    if (!spec.empty() && spec != "none" && spec.rfind("hash-ngram", 0) != 0 && fs::path(spec).is_relative() &&
        !fs::is_directory(spec, ec) && fs::is_directory(under_root, ec))
        target = under_root.string();
    std::unique_ptr<Embedder> e = make_embedder(target);
    if (e) {
        EmbedderOptions eo;
        eo.query_instruction = settings.query_instruction;
        eo.dtype = settings.embed_dtype;
        e->configure(eo);
    }
    return e;
}

struct KbRow {
    int64_t id = 0, generation = 0;
    std::string name, embed_model = "none";
    bool exists = false;
};

KbRow get_kb(Db& db, const std::string& kb) {
    KbRow r;
    r.name = kb;
    Stmt st(db, "SELECT id, embed_model, generation FROM knowledge_base WHERE kb_name = ?");
    st.bind(1, kb);
    if (st.step()) {
        r.id = st.i64(0);
        r.embed_model = st.text(1).empty() ? "none" : st.text(1);
        r.generation = st.i64(2);
        r.exists = true;
    }
    return r;
}

KbRow ensure_kb(Db& db, const std::string& kb, const std::string& embed_model) {
    KbRow r = get_kb(db, kb);
    if (!r.exists) {
        Stmt ins(db, "INSERT INTO knowledge_base(kb_name, kb_info, vs_type, embed_model, file_count, create_time) "
                     "VALUES(?, ?, 'faiss', ?, 0, ?)");
        ins.bind(1, kb).bind(2, "关于" + kb + "的知识库").bind(3, embed_model).bind(4, now_string());
        ins.run();
        r = get_kb(db, kb);
    }
    db.exec("CREATE VIRTUAL TABLE IF NOT EXISTS " + fts_table(r.id) +
            " USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0')");
    return r;
}

// ---- FAISS ---------------------------------------------------------------------
//
// Two index types, both inner product on unit vectors (= cosine), both keyed by chunk id:
//  - flat: IndexIDMap(IndexFlatIP), exact. Its remove_ids removes from the flat codes
//    and the id_map together (the flat index renumbers, which IndexIDMap assumes).
//  - ivf:  IndexIVFFlat(IndexFlatIP quantizer, METRIC_INNER_PRODUCT) holding the chunk
//    ids itself in its inverted lists (add_with_ids); remove_ids scans the lists. It is
//    NOT wrapped in IndexIDMap: IVF does not renumber on removal, so IndexIDMap's
//    id_map would go out of step.

using IdMap = faiss::IndexIDMap;
using faiss::IndexIVFFlat;

// nprobe when kb_settings.yaml says 0: a quarter of the lists. On the 100k-chunk bench
// (hash-ngram-1024 vectors, which cluster poorly: a worst case for IVF) this is the
// smallest simple rule with recall@10 >= 0.95 against flat (nprobe 256 of 1265: 0.947,
// 384: 0.977); see docs/knowledge_base.md "Vector index".
size_t ivf_default_nprobe(const KbSettings& settings, size_t nlist) {
    if (settings.ivf_nprobe > 0) return static_cast<size_t>(settings.ivf_nprobe);
    return std::max<size_t>(1, (nlist + 3) / 4);
}

std::unique_ptr<faiss::Index> new_flat_index(int dim) {
    auto* flat = new faiss::IndexFlatIP(dim);
    auto idx = std::make_unique<IdMap>(flat);
    idx->own_fields = true;
    return idx;
}

int64_t ivf_nlist_for(int64_t n, int64_t configured) {
    int64_t nl = configured > 0 ? configured : static_cast<int64_t>(std::lround(4.0 * std::sqrt(static_cast<double>(n))));
    // k-means wants ~39+ training points per centroid; never more lists than points.
    if (configured <= 0) nl = std::min<int64_t>(nl, n / 39);
    return std::clamp<int64_t>(nl, 1, std::min<int64_t>(65536, std::max<int64_t>(1, n)));
}

// Train an IVF on a deterministic sample of `x` (n x dim, row-major) and add all rows
// under `ids`. Spherical k-means: centroids stay unit-norm, as the vectors are.
std::unique_ptr<faiss::Index> build_ivf_index(int dim, const std::vector<float>& x, const std::vector<fidx_t>& ids,
                                              const KbSettings& settings) {
    const int64_t n = static_cast<int64_t>(ids.size());
    const int64_t nlist = ivf_nlist_for(n, settings.ivf_nlist);
    auto* quantizer = new faiss::IndexFlatIP(dim);
    auto ivf = std::make_unique<IndexIVFFlat>(quantizer, dim, static_cast<size_t>(nlist), faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;
    ivf->cp.spherical = true;
    ivf->cp.niter = 10;            // k-means iterations: 10 is within noise of 25 for recall here
    ivf->cp.seed = 1234;
    ivf->cp.verbose = false;
    // Training sample: every step-th vector, at most 40 per list (k-means time is
    // O(sample * nlist * dim * niter)).
    const int64_t want = std::min<int64_t>(n, 40 * nlist);
    std::vector<float> sample;
    const float* train = x.data();
    if (want < n) {
        sample.reserve(static_cast<size_t>(want) * dim);
        const double step = static_cast<double>(n) / static_cast<double>(want);
        for (int64_t i = 0; i < want; ++i) {
            const float* row = x.data() + static_cast<size_t>(static_cast<int64_t>(i * step)) * dim;
            sample.insert(sample.end(), row, row + dim);
        }
        train = sample.data();
    }
    ivf->cp.max_points_per_centroid = static_cast<int>(std::max<int64_t>(40, want / nlist + 1));
    ivf->train(want, train);
    ivf->add_with_ids(n, x.data(), ids.data());
    ivf->nprobe = ivf_default_nprobe(settings, ivf->nlist);
    return ivf;
}

const IndexIVFFlat* as_ivf(const faiss::Index& idx) { return dynamic_cast<const IndexIVFFlat*>(&idx); }

std::unique_ptr<faiss::Index> read_index(const std::string& path) {
    std::unique_ptr<faiss::Index> raw;
    try {
        raw.reset(faiss::read_index(path.c_str()));
    } catch (const std::exception& e) {
        throw IoError(ErrorInfo{path}.msg("cannot read the FAISS index").found(e.what())
                          .hint("rebuild it with pdsd kb -r -n <kb> -e <model>"));
    }
    if (auto* m = dynamic_cast<IdMap*>(raw.get())) {
        auto* flat = dynamic_cast<faiss::IndexFlat*>(m->index);
        if (flat && flat->metric_type == faiss::METRIC_INNER_PRODUCT) return raw;
    } else if (auto* ivf = dynamic_cast<IndexIVFFlat*>(raw.get())) {
        if (ivf->metric_type == faiss::METRIC_INNER_PRODUCT && ivf->is_trained) return raw;
    }
    throw FormatError(ErrorInfo{path}.expected("IndexIDMap over IndexFlatIP, or IndexIVFFlat with inner product")
                          .found("another FAISS index type").hint("rebuild it with pdsd kb -r -n <kb> -e <model>"));
}

// Temp index files of rebuilds that were killed (.index.faiss.tmp.<pid> whose process is
// gone): removed at the start of the next update of that KB, so they do not pile up.
void remove_stale_temp_files(const KbPaths& paths, const std::string& kb) {
    std::error_code ec;
    fs::path vs = fs::path(paths.kb_dir(kb)) / "vector_store";
    if (!fs::is_directory(vs, ec)) return;
    const std::string prefix = ".index.faiss.tmp.";
    for (auto& store : fs::directory_iterator(vs, ec)) {
        if (!store.is_directory(ec) || store.is_symlink(ec)) continue;
        for (auto& e : fs::directory_iterator(store.path(), ec)) {
            std::string n = e.path().filename().string();
            if (n.rfind(prefix, 0) != 0) continue;
            long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
            if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;   // still running
            std::error_code rec;
            fs::remove(e.path(), rec);
            if (!rec) log::info("kb", log::cat("removed ", e.path().string(), " (left by an interrupted rebuild)"));
        }
    }
}

// Write to a dot-temp file in the same folder; the caller renames after the DB commit.
std::string write_index_temp(const faiss::Index& idx, const std::string& path) {
    fs::create_directories(fs::path(path).parent_path());
    std::string tmp = (fs::path(path).parent_path() / (".index.faiss.tmp." + std::to_string(::getpid()))).string();
    try {
        faiss::write_index(&idx, tmp.c_str());
    } catch (const std::exception& e) {
        throw IoError(ErrorInfo{tmp}.msg("cannot write the FAISS index").found(e.what()));
    }
    return tmp;
}

// The index agrees with the DB when it holds exactly the KB's chunk ids: compared by
// count, sum and sum of squares (mod 2^64) of the ids.
bool index_matches_db(const faiss::Index& idx, Db& db, const std::string& kb) {
    Stmt st(db, "SELECT id FROM chunks WHERE kb_name = ?");
    st.bind(1, kb);
    int64_t n = 0;
    uint64_t sum = 0, sq = 0;
    while (st.step()) {
        uint64_t id = static_cast<uint64_t>(st.i64(0));
        ++n; sum += id; sq += id * id;
    }
    if (idx.ntotal != n) return false;
    uint64_t s = 0, q = 0;
    auto acc = [&](fidx_t id) { uint64_t u = static_cast<uint64_t>(id); s += u; q += u * u; };
    if (auto* m = dynamic_cast<const IdMap*>(&idx)) {
        if (static_cast<int64_t>(m->id_map.size()) != n) return false;
        for (auto id : m->id_map) acc(id);
    } else if (auto* ivf = as_ivf(idx)) {
        const faiss::InvertedLists* il = ivf->invlists;
        int64_t cnt = 0;
        for (size_t l = 0; l < il->nlist; ++l) {
            size_t ls = il->list_size(l);
            if (ls == 0) continue;
            faiss::InvertedLists::ScopedIds ids(il, l);
            for (size_t j = 0; j < ls; ++j) acc(ids[j]);
            cnt += static_cast<int64_t>(ls);
        }
        if (cnt != n) return false;
    } else {
        return false;
    }
    return s == sum && q == sq;
}

void remove_chunk_ids(faiss::Index& idx, const std::vector<fidx_t>& del) {
    if (del.empty()) return;
    faiss::IDSelectorBatch sel(del.size(), del.data());
    idx.remove_ids(sel);   // IndexIDMap: flat + id_map; IVF: scans its lists for the ids
}

// Embeds `texts` in batches of 64 and hands each batch (n vectors, row-major, with their
// ids) to `sink`. Chunks longer than the embedder's token cap are embedded truncated;
// each one is logged (file#chunk, tokens) and counted. `labels[i]` names chunk i.
size_t embed_batches(Embedder& emb, const std::vector<int64_t>& ids, const std::vector<std::string>& texts,
                     const std::vector<std::string>& labels, const std::string& kb, Progress* progress,
                     const std::function<void(fidx_t n, const float* x, const fidx_t* ids)>& sink) {
    size_t capped = 0;
    if (size_t cap = emb.max_tokens()) {
        for (size_t i = 0; i < texts.size(); ++i) {
            size_t n = emb.token_count(texts[i]);
            if (n <= cap) continue;
            ++capped;
            log::warn("kb", log::cat(kb, "/", i < labels.size() ? labels[i] : std::to_string(ids[i]), ": ", n,
                                     " embedding tokens > cap ", cap, " of ", emb.name(),
                                     "; the chunk is embedded truncated (BM25 still sees all of it)"));
        }
    }
    const size_t batch = 64;
    for (size_t b = 0; b < ids.size(); b += batch) {
        throw_if_interrupted();
        size_t e = std::min(ids.size(), b + batch);
        std::vector<std::string> part(texts.begin() + b, texts.begin() + e);
        auto vecs = emb.embed(part, false);
        if (vecs.size() != part.size())
            throw InternalError(ErrorInfo{}.at("embedder " + emb.name()).expected(std::to_string(part.size()) + " vectors")
                                    .found(std::to_string(vecs.size())));
        std::vector<float> flat;
        flat.reserve(vecs.size() * emb.dim());
        for (auto& v : vecs) {
            if (static_cast<int>(v.size()) != emb.dim())
                throw InternalError(ErrorInfo{}.at("embedder " + emb.name()).expected("dim " + std::to_string(emb.dim()))
                                        .found(std::to_string(v.size())));
            flat.insert(flat.end(), v.begin(), v.end());
        }
        std::vector<fidx_t> fid(ids.begin() + b, ids.begin() + e);
        sink(static_cast<fidx_t>(fid.size()), flat.data(), fid.data());
        if (progress) progress->set_note("embedded " + std::to_string(e) + "/" + std::to_string(ids.size()));
    }
    return capped;
}

// ---- one KB update -------------------------------------------------------------

struct DbFile {
    std::string sha256;
};

void delete_file_rows(Db& db, const KbRow& kb, const std::string& file) {
    Stmt f(db, "DELETE FROM " + fts_table(kb.id) + " WHERE rowid IN (SELECT id FROM chunks WHERE kb_name = ? AND file_name = ?)");
    f.bind(1, kb.name).bind(2, file).run();
    Stmt c(db, "DELETE FROM chunks WHERE kb_name = ? AND file_name = ?");
    c.bind(1, kb.name).bind(2, file).run();
    Stmt k(db, "DELETE FROM knowledge_file WHERE kb_name = ? AND file_name = ?");
    k.bind(1, kb.name).bind(2, file).run();
}

// One file loaded and split as both stores index it: its chunks in order, the loader's
// name, the bytes' sha256 and the loader's warnings. Throws what the loader throws.
struct FileChunks {
    std::vector<TextChunk> chunks;
    std::string loader, sha256;
    std::vector<std::string> warnings;
};
FileChunks chunk_file(const FolderFile& f, const SplitterOptions& split) {
    check_file_size(f.rel, static_cast<uint64_t>(f.size));   // before reading it into memory
    std::string bytes = read_file(f.abs);
    FileChunks out;
    out.sha256 = sha256_hex(bytes);
    LoadedFile lf = load_bytes(f.rel, bytes);
    out.loader = lf.loader;
    out.warnings = lf.warnings;
    for (const auto& d : lf.docs) {
        if (d.split) {
            for (auto& c : split_text(d.text, split)) out.chunks.push_back(std::move(c));
            continue;
        }
        // CSV rows are stored whole, stripped like Chatchat's documents.
        auto u = utf8_to_u32(d.text);
        size_t b = 0, e = u.size();
        while (b < e && is_py_space(u[b])) ++b;
        while (e > b && is_py_space(u[e - 1])) --e;
        if (e > b) out.chunks.push_back({u32_to_utf8(std::u32string_view(u).substr(b, e - b)), b, e});
    }
    if (out.chunks.empty()) out.warnings.push_back("no chunks");
    return out;
}

struct Indexer {
    Db& db;
    KbRow kb;
    SplitterOptions split;
    Stmt ins_chunk, ins_fts, ins_file, max_version;
    std::vector<int64_t> new_ids;
    std::vector<std::string> new_texts;
    std::vector<std::string> new_labels;   // "file#chunk_index" of new_texts
    bool collect_texts;

    Indexer(Db& d, const KbRow& k, SplitterOptions s, bool collect)
        : db(d), kb(k), split(s),
          ins_chunk(d, "INSERT INTO chunks(kb_name, file_name, chunk_index, text, start_char, end_char, token_count) "
                       "VALUES(?, ?, ?, ?, ?, ?, ?)"),
          ins_fts(d, "INSERT INTO " + fts_table(k.id) + "(rowid, terms) VALUES(?, ?)"),
          ins_file(d, "INSERT INTO knowledge_file(file_name, file_ext, kb_name, document_loader_name, text_splitter_name, "
                      "file_version, file_mtime, file_size, sha256, docs_count, create_time) "
                      "VALUES(?, ?, ?, ?, 'ChineseRecursiveTextSplitter', ?, ?, ?, ?, ?, ?)"),
          max_version(d, "SELECT file_version FROM knowledge_file WHERE kb_name = ? AND file_name = ?"),
          collect_texts(collect) {}

    // Returns the number of chunks written; `version` is the new file_version.
    size_t index_file(const FolderFile& f, int64_t version, std::vector<std::string>& warnings) {
        FileChunks fc = chunk_file(f, split);
        warnings = fc.warnings;
        size_t idx = 0;
        for (auto& c : fc.chunks) {
            ins_chunk.bind(1, kb.name).bind(2, f.rel).bind(3, static_cast<int64_t>(idx++)).bind(4, c.text)
                .bind(5, c.start).bind(6, c.end).bind(7, count_terms(c.text));
            ins_chunk.run();
            int64_t id = sqlite3_last_insert_rowid(db.get());
            ins_fts.bind(1, id).bind(2, detail::indexed_terms(c.text));
            ins_fts.run();
            if (collect_texts) {
                new_ids.push_back(id);
                new_texts.push_back(c.text);
                new_labels.push_back(f.rel + "#" + std::to_string(idx - 1));
            }
        }
        ins_file.bind(1, f.rel).bind(2, file_extension(f.rel)).bind(3, kb.name).bind(4, fc.loader).bind(5, version)
            .bind(6, f.mtime).bind(7, f.size).bind(8, fc.sha256).bind(9, idx).bind(10, now_string());
        ins_file.run();
        return idx;
    }
};

// What an update of either store starts from: the embedder (opened before any work: fail
// fast; null for none), its stored name and the splitter's sizes (checked).
struct UpdateSetup {
    std::string embed_name;
    std::unique_ptr<Embedder> embedder;
    SplitterOptions split;
};
UpdateSetup update_setup(const KbPaths& paths, const UpdateOptions& opt, const KbSettings& settings) {
    UpdateSetup u;
    u.embed_name = embed_model_spec(!opt.embed_model.empty() ? opt.embed_model : settings.embed_model);
    u.embedder = open_embedder(paths.root, u.embed_name, settings);
    if (!u.embedder) u.embed_name = "none";
    u.split.chunk_size = static_cast<size_t>(opt.chunk_size > 0 ? opt.chunk_size : settings.chunk_size);
    u.split.chunk_overlap = static_cast<size_t>(opt.chunk_overlap >= 0 ? opt.chunk_overlap : settings.chunk_overlap);
    split_text("", u.split);   // validates the sizes
    return u;
}

// The supported files of the KB's content/ folder; refused links and unsupported formats
// go to `report` as skipped.
std::vector<FolderFile> scan_content(const KbPaths& paths, const std::string& kb_name, UpdateReport& report) {
    const std::string content = paths.content_dir(kb_name);
    log::info("kb", log::cat("scanning ", content));
    std::vector<std::pair<std::string, std::string>> refused;
    std::vector<FolderFile> folder = list_folder(content, &refused);
    for (auto& [rel, why] : refused) report.files.push_back({kb_name, rel, "skipped", 0, why});
    std::vector<FolderFile> unsupported;
    folder.erase(std::remove_if(folder.begin(), folder.end(), [&](const FolderFile& f) {
                     if (is_supported_extension(file_extension(f.rel))) return false;
                     unsupported.push_back(f);
                     return true;
                 }), folder.end());
    for (auto& f : unsupported) {
        report.files.push_back({kb_name, f.rel, "skipped", 0, "unsupported format " + file_extension(f.rel)});
        log::warn("kb", log::cat(kb_name, "/", f.rel, ": skipped, unsupported format"));
    }
    return folder;
}

// In a catch block: a file the loaders could not index (DataError, FormatError, IoError:
// malformed, hostile, unreadable) is marked failed and the caller indexes the rest; anything
// else is rethrown and stops the update.
void mark_failed(const Error& e, const std::string& kb_name, const std::string& rel, UpdateReport& report, Progress& progress) {
    if (!dynamic_cast<const DataError*>(&e) && !dynamic_cast<const FormatError*>(&e) && !dynamic_cast<const IoError*>(&e))
        throw;   // the caller's exception, unchanged
    report.files.push_back({kb_name, rel, "failed", 0, e.what()});
    log::warn("kb", log::cat(kb_name, "/", rel, ": ", e.what()));
    progress.advance(1, 0);
}

// The loader's warnings of one file, logged, as one report note.
std::string warnings_note(const std::string& kb_name, const std::string& rel, const std::vector<std::string>& warnings) {
    std::string note;
    for (auto& w : warnings) {
        note += (note.empty() ? "" : "; ") + w;
        log::warn("kb", log::cat(kb_name, "/", rel, ": ", w));
    }
    return note;
}

void update_one(const KbPaths& paths, Db& db, const std::string& kb_name, const UpdateOptions& opt,
                const KbSettings& settings, const std::vector<std::string>* only_files, UpdateReport& report) {
    validate_kb_name(kb_name);
    UpdateSetup setup = update_setup(paths, opt, settings);
    std::string& embed_name = setup.embed_name;
    std::unique_ptr<Embedder>& embedder = setup.embedder;
    const SplitterOptions& split = setup.split;
    remove_stale_temp_files(paths, kb_name);
    std::vector<FolderFile> folder = scan_content(paths, kb_name, report);

    // The whole update of this KB is one transaction: killed half-way, nothing changes.
    db.exec("BEGIN IMMEDIATE");
    try {
        KbRow kb = ensure_kb(db, kb_name, embed_name);
        bool embed_changed = kb.embed_model != embed_name;
        std::map<std::string, DbFile> in_db;
        {
            Stmt st(db, "SELECT file_name, sha256 FROM knowledge_file WHERE kb_name = ?");
            st.bind(1, kb_name);
            while (st.step()) in_db[st.text(0)] = {st.text(1)};
        }
        std::map<std::string, const FolderFile*> in_folder;
        for (auto& f : folder) in_folder[f.rel] = &f;

        // Decide per file. sha256 of folder files is computed only where needed.
        std::vector<std::pair<const FolderFile*, std::string>> todo;   // file, action
        std::vector<std::string> to_remove;
        auto wanted = [&](const std::string& rel) {
            return !only_files || std::find(only_files->begin(), only_files->end(), rel) != only_files->end();
        };
        if (opt.mode == UpdateMode::recreate) {
            db.exec("DELETE FROM " + fts_table(kb.id));
            Stmt c(db, "DELETE FROM chunks WHERE kb_name = ?");
            c.bind(1, kb_name).run();
            Stmt k(db, "DELETE FROM knowledge_file WHERE kb_name = ?");
            k.bind(1, kb_name).run();
            for (auto& f : folder) todo.push_back({&f, in_db.count(f.rel) ? "updated" : "added"});
            for (auto& [name, _] : in_db)
                if (!in_folder.count(name)) report.files.push_back({kb_name, name, "removed", 0, "gone from content/"});
            in_db.clear();
        } else if (opt.mode == UpdateMode::increment) {
            for (auto& f : folder) {
                if (!wanted(f.rel)) continue;
                auto it = in_db.find(f.rel);
                if (it == in_db.end()) { todo.push_back({&f, "added"}); continue; }
                std::string sha = sha256_file(f.abs);
                if (sha != it->second.sha256) todo.push_back({&f, "updated"});
                else report.files.push_back({kb_name, f.rel, "unchanged", 0, ""});
            }
            for (auto& [name, _] : in_db)
                if (!in_folder.count(name) && wanted(name)) to_remove.push_back(name);
        } else if (opt.mode == UpdateMode::update_in_db) {
            for (auto& [name, _] : in_db) {
                if (!wanted(name)) continue;
                auto it = in_folder.find(name);
                if (it == in_folder.end()) report.files.push_back({kb_name, name, "skipped", 0, "in the DB but not in content/ (use --prune-db)"});
                else todo.push_back({it->second, "updated"});
            }
        }
        if (opt.prune_db)
            for (auto& [name, _] : in_db)
                if (!in_folder.count(name) && std::find(to_remove.begin(), to_remove.end(), name) == to_remove.end())
                    to_remove.push_back(name);

        // Dense index: start from the existing one when it agrees with the DB; otherwise
        // a new one is built after the files are indexed (its type depends on the count).
        std::unique_ptr<faiss::Index> index;
        bool full_reembed = false, fresh_index = false;
        if (embedder) {
            std::string ipath = paths.index_path(kb_name, embed_name);
            if (opt.mode != UpdateMode::recreate && !embed_changed && fs::exists(ipath)) {
                index = read_index(ipath);
                if (index->d != embedder->dim() || !index_matches_db(*index, db, kb_name)) {
                    log::warn("kb", log::cat(kb_name, ": the vector store does not match the DB; re-embedding every chunk"));
                    index.reset();
                }
            }
            if (!index) {
                fresh_index = true;
                full_reembed = opt.mode != UpdateMode::recreate;
            }
        }

        // Removed files first (their chunk ids leave the index too).
        for (auto& name : to_remove) {
            if (index) {
                Stmt ids(db, "SELECT id FROM chunks WHERE kb_name = ? AND file_name = ?");
                ids.bind(1, kb_name).bind(2, name);
                std::vector<fidx_t> del;
                while (ids.step()) del.push_back(ids.i64(0));
                remove_chunk_ids(*index, del);
            }
            delete_file_rows(db, kb, name);
            report.files.push_back({kb_name, name, "removed", 0, opt.mode == UpdateMode::increment ? "gone from content/" : "pruned"});
        }

        Indexer ix(db, kb, split, embedder != nullptr);
        Progress progress("kb " + kb_name, todo.size(), "files", "chunks",
                          opt.progress ? Progress::Style::automatic : Progress::Style::silent);
        for (auto& [f, action] : todo) {
            throw_if_interrupted();
            progress.set_note(f->rel);
            int64_t version = 1;
            if (action == "updated") {
                Stmt v(db, "SELECT file_version FROM knowledge_file WHERE kb_name = ? AND file_name = ?");
                v.bind(1, kb_name).bind(2, f->rel);
                if (v.step()) version = v.i64(0) + 1;
                if (index) {
                    Stmt ids(db, "SELECT id FROM chunks WHERE kb_name = ? AND file_name = ?");
                    ids.bind(1, kb_name).bind(2, f->rel);
                    std::vector<fidx_t> del;
                    while (ids.step()) del.push_back(ids.i64(0));
                    remove_chunk_ids(*index, del);
                }
                delete_file_rows(db, kb, f->rel);
            }
            std::vector<std::string> warnings;
            size_t n = 0;
            try {
                n = ix.index_file(*f, version, warnings);
            } catch (const Error& e) {
                mark_failed(e, kb_name, f->rel, report, progress);
                continue;
            }
            report.files.push_back({kb_name, f->rel, action, n, warnings_note(kb_name, f->rel, warnings)});
            report.chunks_written += n;
            progress.advance(1, n);
        }

        std::string tmp_index;
        if (embedder) {
            std::vector<int64_t> ids = ix.new_ids;
            std::vector<std::string> texts = ix.new_texts;
            std::vector<std::string> labels = ix.new_labels;
            if (full_reembed) {
                ids.clear();
                texts.clear();
                labels.clear();
                Stmt all(db, "SELECT id, text, file_name, chunk_index FROM chunks WHERE kb_name = ? ORDER BY id");
                all.bind(1, kb_name);
                while (all.step()) {
                    ids.push_back(all.i64(0));
                    texts.push_back(all.text(1));
                    labels.push_back(all.text(2) + "#" + std::to_string(all.i64(3)));
                }
            }
            const std::string vi = !opt.vector_index.empty() ? opt.vector_index : settings.vector_index;
            if (vi != "auto" && vi != "flat" && vi != "ivf")
                throw UsageError(ErrorInfo{}.at("--vector-index").expected("auto, flat or ivf").found(vi));
            const bool ivf = fresh_index && !ids.empty() &&
                             (vi == "ivf" || (vi == "auto" && static_cast<int64_t>(ids.size()) >= settings.ivf_min_chunks));
            log::info("kb", log::cat(kb_name, ": embedding ", ids.size(), " chunks with ", embedder->name(),
                                     fresh_index ? (ivf ? " into a new IVF index" : " into a new flat index") : ""));
            std::vector<fidx_t> fids;
            if (ivf) {
                // IVF is trained on the vectors themselves: embed everything first.
                std::vector<float> x;
                x.reserve(ids.size() * static_cast<size_t>(embedder->dim()));
                fids.reserve(ids.size());
                report.chunks_capped += embed_batches(*embedder, ids, texts, labels, kb_name, &progress,
                                                      [&](fidx_t n, const float* v, const fidx_t* id) {
                                                          x.insert(x.end(), v, v + n * embedder->dim());
                                                          fids.insert(fids.end(), id, id + n);
                                                      });
                auto t0 = std::chrono::steady_clock::now();
                index = build_ivf_index(embedder->dim(), x, fids, settings);
                log::info("kb", log::cat(kb_name, ": IVF trained and filled: nlist ", as_ivf(*index)->nlist, ", ",
                                         ids.size(), " vectors, ",
                                         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s"));
            } else {
                if (!index) index = new_flat_index(embedder->dim());
                report.chunks_capped += embed_batches(*embedder, ids, texts, labels, kb_name, &progress,
                                                      [&](fidx_t n, const float* v, const fidx_t* id) {
                                                          index->add_with_ids(n, v, id);
                                                      });
            }
            report.embed_token_cap = embedder->max_tokens();
            tmp_index = write_index_temp(*index, paths.index_path(kb_name, embed_name));
        }
        progress.finish();

        Stmt upd(db, "UPDATE knowledge_base SET embed_model = ?, vs_type = ?, chunk_size = ?, chunk_overlap = ?, "
                     "file_count = (SELECT count(*) FROM knowledge_file WHERE kb_name = ?), generation = generation + 1 WHERE id = ?");
        upd.bind(1, embed_name).bind(2, std::string(embedder ? "faiss" : "bm25")).bind(3, split.chunk_size)
            .bind(4, split.chunk_overlap).bind(5, kb_name).bind(6, kb.id);
        upd.run();
        db.exec("COMMIT");
        // After the commit: the index that matches the committed DB replaces the old one.
        // A kill between the two leaves a stale index, detected (ids differ) and rebuilt
        // from the stored chunk texts by the next -i/-r.
        if (!tmp_index.empty()) fs::rename(tmp_index, paths.index_path(kb_name, embed_name));
    } catch (...) {
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }

    if (opt.prune_folder) {
        Stmt st(db, "SELECT 1 FROM knowledge_file WHERE kb_name = ? AND file_name = ?");
        for (auto& f : folder) {
            st.bind(1, kb_name).bind(2, f.rel);
            bool known = st.step();
            st.reset();
            if (!known) {
                fs::remove(f.abs);
                report.files.push_back({kb_name, f.rel, "removed", 0, "pruned from content/"});
            }
        }
    }
}

std::unique_ptr<Db> open_db(const KbPaths& p, bool create) {
    if (create) make_dirs(p.kb_root());
    else if (!fs::exists(p.info_db()))
        throw IoError(ErrorInfo{p.info_db()}.msg("no knowledge-base database").hint("run `pdsd init` then `pdsd kb -r`"));
    auto db = std::make_unique<Db>(p.info_db(), create);
    ensure_schema(*db);
    return db;
}

// ---- vs_type pg: updates -----------------------------------------------------------

// What an update of a pg KB writes: the folder files of the new content, each with its
// action (added | updated | unchanged) and file_version.
struct PgPlanned {
    const FolderFile* file;
    std::string action;
    int64_t version;
};

// The files the local store would hold after this update (update_one's per-mode rules,
// sha256 against the store's), and the removed ones reported. Returns whether anything
// changes. DB files gone from content/ that the local store would keep (not named by kb
// rm, or -u without --prune-db) are dropped too: a pg update rewrites the whole KB.
bool plan_pg_update(const std::string& kb_name, const UpdateOptions& opt, const std::vector<FolderFile>& folder,
                    const std::map<std::string, PgFile>& before, const std::vector<std::string>* only_files,
                    std::vector<PgPlanned>& plan, UpdateReport& report) {
    auto wanted = [&](const std::string& rel) {
        return !only_files || std::find(only_files->begin(), only_files->end(), rel) != only_files->end();
    };
    bool changed = opt.mode == UpdateMode::recreate;
    std::set<std::string> in_folder;
    for (auto& f : folder) {
        in_folder.insert(f.rel);
        auto it = before.find(f.rel);
        const int64_t v = it == before.end() ? 1 : it->second.file_version;
        if (opt.mode == UpdateMode::recreate) {
            plan.push_back({&f, it == before.end() ? "added" : "updated", 1});
        } else if (it == before.end()) {
            if (opt.mode == UpdateMode::increment && wanted(f.rel)) plan.push_back({&f, "added", 1}), changed = true;
        } else if (wanted(f.rel) && (opt.mode == UpdateMode::update_in_db ||
                                     (opt.mode == UpdateMode::increment && sha256_file(f.abs) != it->second.sha256))) {
            plan.push_back({&f, "updated", v + 1});
            changed = true;
        } else {
            plan.push_back({&f, "unchanged", v});
            if (opt.mode == UpdateMode::increment && wanted(f.rel)) report.files.push_back({kb_name, f.rel, "unchanged", 0, ""});
        }
    }
    for (auto& [name, _] : before) {
        if (in_folder.count(name)) continue;
        const bool dropped_anyway = !opt.prune_db && opt.mode != UpdateMode::recreate &&
                                    !(opt.mode == UpdateMode::increment && wanted(name));
        report.files.push_back({kb_name, name, "removed", 0,
                                dropped_anyway ? "gone from content/ (a PostgreSQL update rewrites the whole KB)"
                                : opt.prune_db ? "pruned" : "gone from content/"});
        changed = true;
    }
    return changed;
}

// An update on PostgreSQL: content/ scanned, loaded, split and embedded as update_one does,
// then the whole KB written by PgStore::rebuild_kb in one transaction (chunk ids in file then
// chunk order, as the local store assigns them). -i / -u / kb add / rm decide per file as the
// local store does (sha256 against the store's catalog), but a change re-embeds every file
// of the KB (a per-file increment in PostgreSQL is left: docs/knowledge_base.md).
void update_one_pg(const KbPaths& paths, const std::string& kb_name, const UpdateOptions& opt, const KbSettings& settings,
                   const std::vector<std::string>* only_files, UpdateReport& report) {
    validate_kb_name(kb_name);
    std::unique_ptr<PgStore> store = open_pg(settings, paths.root);   // before any work: fail fast
    UpdateSetup setup = update_setup(paths, opt, settings);
    std::vector<FolderFile> folder = scan_content(paths, kb_name, report);
    std::map<std::string, PgFile> before;
    for (auto& f : store->list_files(kb_name)) before[f.file_name] = f;
    std::vector<PgPlanned> plan;
    const bool changed = plan_pg_update(kb_name, opt, folder, before, only_files, plan, report);
    // Also written: a KB not in the store yet (create_knowledge_base's empty one) or one
    // embedded with another model (every chunk re-embedded, as the local store does).
    const auto info = store->kb_info(kb_name);
    if (!changed && info && info->embed_model == setup.embed_name && !opt.prune_folder) return;

    PgKbContent c;
    c.kb_name = kb_name;   // kb_info stays (a new KB gets the default)
    c.embed_model = setup.embed_name;
    c.dim = setup.embedder ? setup.embedder->dim() : 0;
    c.chunk_size = static_cast<int64_t>(setup.split.chunk_size);
    c.chunk_overlap = static_cast<int64_t>(setup.split.chunk_overlap);
    Progress progress("kb " + kb_name, plan.size(), "files", "chunks",
                      opt.progress ? Progress::Style::automatic : Progress::Style::silent);
    std::set<std::string> indexed;
    for (auto& [f, action, version] : plan) {
        throw_if_interrupted();
        progress.set_note(f->rel);
        FileChunks fc;
        try {
            fc = chunk_file(*f, setup.split);
        } catch (const Error& e) {
            mark_failed(e, kb_name, f->rel, report, progress);
            continue;
        }
        indexed.insert(f->rel);
        for (size_t i = 0; i < fc.chunks.size(); ++i) {
            PgChunk ch;
            ch.file_name = f->rel;
            ch.chunk_index = static_cast<int64_t>(i);
            ch.start_char = static_cast<int64_t>(fc.chunks[i].start);
            ch.end_char = static_cast<int64_t>(fc.chunks[i].end);
            ch.text = std::move(fc.chunks[i].text);
            c.chunks.push_back(std::move(ch));
        }
        PgFile pf;
        pf.file_name = f->rel, pf.file_ext = file_extension(f->rel), pf.document_loader_name = fc.loader, pf.sha256 = fc.sha256;
        pf.file_size = f->size, pf.file_mtime = f->mtime, pf.docs_count = static_cast<int64_t>(fc.chunks.size());
        pf.file_version = version;
        c.files.push_back(pf);
        progress.advance(1, fc.chunks.size());
        if (action == "unchanged") continue;
        report.files.push_back({kb_name, f->rel, action, fc.chunks.size(), warnings_note(kb_name, f->rel, fc.warnings)});
        report.chunks_written += fc.chunks.size();
    }
    if (setup.embedder) {
        std::vector<int64_t> ids(c.chunks.size());
        std::vector<std::string> texts, labels;
        for (size_t i = 0; i < c.chunks.size(); ++i) {
            ids[i] = static_cast<int64_t>(i);
            texts.push_back(c.chunks[i].text);
            labels.push_back(c.chunks[i].file_name + "#" + std::to_string(c.chunks[i].chunk_index));
        }
        log::info("kb", log::cat(kb_name, ": embedding ", ids.size(), " chunks with ", setup.embedder->name(), " into PostgreSQL"));
        const size_t dim = static_cast<size_t>(c.dim);
        report.chunks_capped += embed_batches(*setup.embedder, ids, texts, labels, kb_name, &progress,
                                              [&](fidx_t n, const float* v, const fidx_t* id) {
                                                  for (fidx_t i = 0; i < n; ++i)
                                                      c.chunks[static_cast<size_t>(id[i])].embedding.assign(v + i * dim, v + (i + 1) * dim);
                                              });
        report.embed_token_cap = setup.embedder->max_tokens();
    }
    progress.finish();
    store->rebuild_kb(c);
    if (opt.prune_folder)
        for (auto& f : folder)
            if (!indexed.count(f.rel)) {
                fs::remove(f.abs);
                report.files.push_back({kb_name, f.rel, "removed", 0, "pruned from content/"});
            }
}

// One KB's update on the store kb_settings.yaml names (`create`: info.db may be made).
void update_kb(const KbPaths& paths, const std::string& kb_name, const UpdateOptions& opt, const KbSettings& settings,
               const std::vector<std::string>* only_files, UpdateReport& report, bool create) {
    if (on_pg(settings)) {
        update_one_pg(paths, kb_name, opt, settings, only_files, report);
        return;
    }
    auto db = open_db(paths, create);
    update_one(paths, *db, kb_name, opt, settings, only_files, report);
}

}  // namespace

size_t UpdateReport::count(const std::string& action) const {
    return static_cast<size_t>(std::count_if(files.begin(), files.end(), [&](auto& f) { return f.action == action; }));
}

UpdateReport update_knowledge_bases(const std::string& root, const UpdateOptions& options) {
    auto t0 = std::chrono::steady_clock::now();
    KbPaths paths{root};
    KbSettings settings = load_kb_settings(root);
    make_dirs(paths.kb_root());   // either store: a --root that is a file is an IoError naming it
    std::vector<std::string> kbs = options.kb_names;
    if (kbs.empty()) kbs = kb_folders(paths);
    if (kbs.empty())
        throw UsageError(ErrorInfo{paths.kb_root()}.msg("no knowledge bases found")
                             .hint("run `pdsd init`, or create knowledge_base/<name>/content/ with your files"));
    UpdateReport report;
    for (auto& kb : kbs) {
        validate_kb_name(kb);
        if (!fs::is_directory(paths.content_dir(kb)) && options.mode != UpdateMode::none && options.mode != UpdateMode::update_in_db)
            throw UsageError(ErrorInfo{paths.content_dir(kb)}.msg("knowledge base folder not found")
                                 .hint("create it and put your documents there, or check --kb-name"));
        update_kb(paths, kb, options, settings, nullptr, report, /*create=*/true);
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
}

namespace {
// kb add / kb rm: the named content/ files (relative paths) are re-indexed incrementally.
UpdateReport reindex_files(const std::string& root, const KbPaths& paths, const std::string& kb,
                           const std::vector<std::string>& rels, const UpdateOptions& options, bool create) {
    UpdateOptions o = options;
    o.mode = UpdateMode::increment;
    UpdateReport report;
    update_kb(paths, kb, o, load_kb_settings(root), &rels, report, create);
    return report;
}
}  // namespace

UpdateReport add_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                       const UpdateOptions& options) {
    validate_kb_name(kb);
    KbPaths paths{root};
    make_dirs(paths.content_dir(kb));
    std::vector<std::string> rels;
    std::set<std::string> copied_new;   // not in content/ before: removed again when they fail
    for (auto& f : files) {
        if (!fs::is_regular_file(f)) throw IoError(ErrorInfo{f}.msg("no such file"));
        std::string ext = file_extension(f);
        if (!is_supported_extension(ext)) load_bytes(f, "");   // throws the unsupported-format error
        check_file_size(f, fs::file_size(f));
        fs::path dst = fs::path(paths.content_dir(kb)) / fs::path(f).filename();
        if (fs::absolute(f).lexically_normal() != fs::absolute(dst).lexically_normal()) {
            std::error_code ec;
            if (!fs::exists(fs::symlink_status(dst, ec))) copied_new.insert(dst.filename().string());
            fs::copy_file(f, dst, fs::copy_options::overwrite_existing);
        }
        rels.push_back(fs::path(f).filename().string());
    }
    UpdateReport report = reindex_files(root, paths, kb, rels, options, /*create=*/true);
    // A file that cannot be indexed does not stay in content/ (the next rebuild would only
    // fail on it again).
    for (auto& c : report.files) {
        if (c.action != "failed" || !copied_new.count(c.file)) continue;
        std::error_code ec;
        if (fs::remove(fs::path(paths.content_dir(kb)) / c.file, ec)) c.note += " (removed from content/)";
    }
    return report;
}

UpdateReport remove_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                          const UpdateOptions& options) {
    validate_kb_name(kb);
    KbPaths paths{root};
    std::vector<std::string> rels;
    for (auto& f : files) {
        fs::path p = fs::path(paths.content_dir(kb)) / f;
        if (fs::path(f).is_absolute() || f.find("..") != std::string::npos)
            throw UsageError(ErrorInfo{f}.msg("give the file name relative to content/").hint("see pdsd kb list"));
        if (fs::exists(p)) fs::remove(p);
        rels.push_back(fs::path(f).generic_string());
    }
    return reindex_files(root, paths, kb, rels, options, /*create=*/false);
}

bool delete_knowledge_base(const std::string& root, const std::string& kb) {
    validate_kb_name(kb);
    KbPaths paths{root};
    bool found = false;
    if (KbSettings st = load_kb_settings(root); on_pg(st)) {
        found = open_pg(st, root)->drop_kb(kb);
    } else if (fs::exists(paths.info_db())) {
        auto db = open_db(paths, false);
        KbRow r = get_kb(*db, kb);
        if (r.exists) {
            found = true;
            db->exec("BEGIN");
            db->exec("DROP TABLE IF EXISTS " + fts_table(r.id));
            for (const char* sql : {"DELETE FROM chunks WHERE kb_name = ?", "DELETE FROM knowledge_file WHERE kb_name = ?",
                                    "DELETE FROM knowledge_base WHERE kb_name = ?"}) {
                Stmt st(*db, sql);
                st.bind(1, kb).run();
            }
            db->exec("COMMIT");
        }
    }
    // The folder goes after the commit: a crash in between leaves files that `pdsd kb -r` re-adds.
    if (fs::is_directory(paths.kb_dir(kb))) {
        found = true;
        fs::remove_all(paths.kb_dir(kb));
    }
    return found;
}

std::vector<KbFileInfo> list_kb_files(const std::string& root, const std::string& kb) {
    validate_kb_name(kb);
    KbPaths paths{root};
    std::map<std::string, KbFileInfo> m;
    if (fs::is_directory(paths.content_dir(kb))) {
        for (auto& f : list_folder(paths.content_dir(kb))) {
            KbFileInfo& i = m[f.rel];
            i.file_name = f.rel;
            i.in_folder = true;
        }
    }
    if (KbSettings st = load_kb_settings(root); on_pg(st)) {
        for (auto& f : open_pg(st, root)->list_files(kb)) {
            KbFileInfo& i = m[f.file_name];
            i.file_name = f.file_name, i.file_ext = f.file_ext, i.file_version = f.file_version;
            i.document_loader = f.document_loader_name, i.text_splitter = f.text_splitter_name;
            i.docs_count = f.docs_count, i.create_time = f.create_time, i.in_db = true;
        }
    } else if (fs::exists(paths.info_db())) {
        auto db = open_db(paths, false);
        Stmt st(*db, "SELECT file_name, file_ext, file_version, document_loader_name, text_splitter_name, docs_count, "
                     "create_time FROM knowledge_file WHERE kb_name = ? ORDER BY file_name");
        st.bind(1, kb);
        while (st.step()) {
            KbFileInfo& i = m[st.text(0)];
            i.file_name = st.text(0);
            i.file_ext = st.text(1);
            i.file_version = st.i64(2);
            i.document_loader = st.text(3);
            i.text_splitter = st.text(4);
            i.docs_count = st.i64(5);
            i.create_time = st.text(6);
            i.in_db = true;
        }
    }
    std::vector<KbFileInfo> out;
    for (auto& [k, v] : m) {
        if (v.file_ext.empty()) v.file_ext = fs::path(v.file_name).extension().string();
        out.push_back(v);
    }
    return out;
}

std::vector<SearchHit> list_chunks(const std::string& root, const std::string& kb, const std::string& file_name) {
    validate_kb_name(kb);
    KbPaths paths{root};
    if (KbSettings st = load_kb_settings(root); on_pg(st)) {
        auto store = open_pg(st, root);
        if (!store->kb_info(kb))
            throw DataError(ErrorInfo{store->describe()}.at("knowledge base '" + kb + "'").msg("not in the database")
                                .hint("build it with pdsd kb -r -n " + kb));
        return store->list_chunks(kb, file_name);
    }
    if (!fs::exists(paths.info_db()))
        throw IoError(ErrorInfo{paths.info_db()}.msg("no knowledge base database").hint("build one: pdsd kb -r"));
    auto db = open_db(paths, false);
    Stmt known(*db, "SELECT 1 FROM knowledge_base WHERE kb_name = ?");
    known.bind(1, kb);
    if (!known.step()) throw DataError(ErrorInfo{paths.info_db()}.at("knowledge base '" + kb + "'").msg("not in the database"));
    Stmt st(*db, std::string("SELECT id, file_name, chunk_index, text, start_char, end_char FROM chunks WHERE kb_name = ?") +
                     (file_name.empty() ? "" : " AND file_name LIKE ?") + " ORDER BY file_name, chunk_index");
    st.bind(1, kb);
    if (!file_name.empty()) st.bind(2, file_name);
    std::vector<SearchHit> out;
    while (st.step()) {
        SearchHit h;
        h.chunk_id = st.i64(0);
        h.kb = kb;
        h.file_name = st.text(1);
        h.chunk_index = st.i64(2);
        h.text = st.text(3);
        h.start_char = st.i64(4);
        h.end_char = st.i64(5);
        out.push_back(std::move(h));
    }
    return out;
}

std::vector<KbInfo> list_knowledge_bases(const std::string& root) {
    KbPaths paths{root};
    std::map<std::string, KbInfo> m;
    for (auto& f : kb_folders(paths)) { m[f].name = f; m[f].has_folder = true; }
    if (KbSettings st = load_kb_settings(root); on_pg(st)) {
        for (auto& k : open_pg(st, root)->list_kbs()) {
            KbInfo& i = m[k.kb_name];
            i.name = k.kb_name, i.info = k.kb_info, i.vs_type = k.vs_type, i.embed_model = k.embed_model;
            i.file_count = k.file_count, i.create_time = k.create_time, i.chunk_count = k.chunk_count, i.in_db = true;
            i.chunk_size = k.chunk_size, i.chunk_overlap = k.chunk_overlap;
        }
    } else if (fs::exists(paths.info_db())) {
        Db db(paths.info_db(), false);
        ensure_schema(db);
        Stmt st(db, "SELECT kb_name, kb_info, vs_type, embed_model, file_count, create_time, "
                    "(SELECT count(*) FROM chunks c WHERE c.kb_name = k.kb_name), chunk_size, chunk_overlap "
                    "FROM knowledge_base k ORDER BY kb_name");
        while (st.step()) {
            KbInfo& i = m[st.text(0)];
            i.name = st.text(0);
            i.info = st.text(1);
            i.vs_type = st.text(2);
            i.embed_model = st.text(3);
            i.file_count = st.i64(4);
            i.create_time = st.text(5);
            i.chunk_count = st.i64(6);
            i.chunk_size = st.i64(7);
            i.chunk_overlap = st.i64(8);
            i.in_db = true;
        }
    }
    std::vector<KbInfo> out;
    for (auto& [k, v] : m) out.push_back(v);
    return out;
}

// ---- search --------------------------------------------------------------------

namespace {
// One query gains nothing from OpenMP teams, and their worker threads spin after each
// region. FAISS: on the 100k x 1024 IVF (nprobe 32), CPU per query 24 ms with the default
// team vs 6 ms single-threaded. The query's embedding (a torch model's ops are OpenMP
// regions too): 8 concurrent hybrid searches on 2 cores, tiny BERT, 100k chunks, 21
// queries/s with 73 % of the CPU in libgomp's spin-wait vs 300-450/s single-threaded. Torch
// sets a thread's OpenMP count at its first op there, so the first query on a new thread
// still gets the team (hence the dense list runs on the caller's long-lived thread). The
// setting is per calling thread; it is restored for other work on this thread (a batch
// embed of `kb -r` keeps the team).
struct OmpSingleThread {
    int prev = omp_get_max_threads();
    OmpSingleThread() { omp_set_num_threads(1); }
    ~OmpSingleThread() { omp_set_num_threads(prev); }
};

// vs_type pg: the KB's idle connections to the store, one per concurrent search (a PgStore
// serves one thread at a time); a search leases one (PgLease).
struct PgPool {
    std::string dsn;
    std::mutex mu;
    std::vector<std::unique_ptr<PgStore>> idle;
    static constexpr size_t kMaxIdle = 16;
};
class PgLease {
public:
    explicit PgLease(PgPool& pool) : pool_(pool) {
        {
            std::lock_guard<std::mutex> lock(pool_.mu);
            if (!pool_.idle.empty()) {
                store_ = std::move(pool_.idle.back());
                pool_.idle.pop_back();
            }
        }
        if (!store_) store_ = std::make_unique<PgStore>(pool_.dsn);   // outside the lock: connecting takes ms
    }
    // A connection whose statement threw may be broken (server gone): not pooled again.
    ~PgLease() {
        if (std::uncaught_exceptions() > exceptions_) return;
        std::lock_guard<std::mutex> lock(pool_.mu);
        if (pool_.idle.size() < PgPool::kMaxIdle) pool_.idle.push_back(std::move(store_));
    }
    PgLease(const PgLease&) = delete;
    PgLease& operator=(const PgLease&) = delete;
    PgStore* operator->() { return store_.get(); }

private:
    PgPool& pool_;
    std::unique_ptr<PgStore> store_;
    int exceptions_ = std::uncaught_exceptions();
};
}  // namespace

// One SQLite read connection and the search statements prepared on it. A connection and
// its statements serve one thread at a time (the temp fts5vocab tables are per connection),
// so each concurrent search leases its own from the KB's pool.
struct SearchReader {
    std::unique_ptr<Db> db;
    std::unique_ptr<Stmt> fts, chunk, vocab, inst, generation;
};

struct KnowledgeBase::Impl {
    KbPaths paths;
    KbRow kb;
    KbSettings settings;
    int64_t chunks = 0;
    // What is_current() compares: kb.generation and these stamps, taken at open.
    FileStamp index_stamp, settings_stamp;
    uint64_t db_inode = 0;   // info.db replaced (a data root wiped and rebuilt): a pooled connection would read the old file

    // Idle read connections (SearchReader); a search takes one or opens another.
    std::mutex pool_mu;
    std::vector<std::unique_ptr<SearchReader>> idle;
    static constexpr size_t kMaxIdleReaders = 16;

    // Dense state, made once on first dense use under dense_mu (then read-only; FAISS
    // search on a const index and CompactIvf::search are safe from several threads).
    std::mutex dense_mu;
    std::atomic<bool> index_loaded{false};
    std::shared_ptr<Embedder> embedder;   // thread-safe (thread_safe_embedder)
    EmbedderLookup lookup;                // how to find it when not given
    std::unique_ptr<faiss::Index> index;
    // IVF only, on AVX-512 CPUs: the compact copies of the lists that single-query search
    // scans (ivf_compact.h); the configured one is made with the index, another on first
    // use; null -> FAISS's own search. Like the index, they are not refreshed when the KB
    // is updated by another process while this object is open (is_current() says so).
    std::unique_ptr<detail::CompactIvf> fp16, int8;

    // BM25 scored here from FTS5's postings (SearchOptions::bm25_scorer): each chunk's
    // length in tokens (FTS5's docsize), the row count and mean length, loaded on first
    // use under doc_mu, then read-only.
    std::mutex doc_mu;
    std::atomic<bool> doc_len_loaded{false};
    std::unordered_map<int64_t, uint32_t> doc_len;
    int64_t fts_rows = 0;
    double avg_len = 0;

    // vs_type pg: the store's connections (null: the local store; then none of the SQLite /
    // FAISS members above but kb, settings, chunks and the embedder are used).
    std::unique_ptr<PgPool> pg;

    // The ranking stage's database steps (KnowledgeBase::search). `r` is null on pg (its
    // hits come with their chunk rows).
    std::vector<SearchHit> candidates(SearchReader& r, const std::string& query, const SearchOptions& o);
    std::vector<SearchHit> pg_candidates(const std::string& query, const SearchOptions& o);
    void load_chunk(SearchReader* r, SearchHit& h);
    void rerank(SearchReader* r, std::vector<SearchHit>& all, const std::string& query, const SearchOptions& o);

    // vs_type pg: the KB's row from the store (DataError when it is not there).
    void open_pg_kb(const std::string& kb_name) {
        auto store = open_pg(settings, paths.root);
        auto info = store->kb_info(kb_name);
        if (!info)
            throw DataError(ErrorInfo{store->describe()}.at("knowledge base '" + kb_name + "'").msg("not in the database")
                                .hint("build it with pdsd kb -r -n " + kb_name + " (see pdsd kb list)"));
        kb.id = info->id, kb.generation = info->generation, kb.name = kb_name, kb.exists = true;
        kb.embed_model = info->embed_model.empty() ? "none" : info->embed_model;
        chunks = info->chunk_count;
        pg = std::make_unique<PgPool>();
        pg->dsn = pg_dsn_from_settings(settings, settings_path(paths.root));
        pg->idle.push_back(std::move(store));
    }

    std::unique_ptr<SearchReader> open_reader() {
        auto r = std::make_unique<SearchReader>();
        r->db = open_db(paths, false);
        // Readers: memory-map the DB and keep a bigger page cache (search touches posting lists).
        r->db->exec("PRAGMA mmap_size = 1073741824");
        r->db->exec("PRAGMA cache_size = -65536");
        const std::string fts = fts_table(kb.id);
        r->fts = std::make_unique<Stmt>(*r->db, "SELECT rowid, bm25(" + fts + ") FROM " + fts + " WHERE " + fts +
                                                    " MATCH ? ORDER BY rank LIMIT ?");
        r->db->exec("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kb_vocab USING fts5vocab(main, " + fts + ", 'row')");
        r->vocab = std::make_unique<Stmt>(*r->db, "SELECT doc FROM temp.kb_vocab WHERE term = ?");
        r->db->exec("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kb_inst USING fts5vocab(main, " + fts + ", 'instance')");
        r->inst = std::make_unique<Stmt>(*r->db, "SELECT doc FROM temp.kb_inst WHERE term = ?");
        r->chunk = std::make_unique<Stmt>(*r->db, "SELECT file_name, chunk_index, text, start_char, end_char FROM chunks WHERE id = ?");
        r->generation = std::make_unique<Stmt>(*r->db, "SELECT id, generation FROM knowledge_base WHERE kb_name = ?");
        return r;
    }

    // A read connection for one search; back to the pool when the lease ends.
    struct Lease {
        Impl& im;
        std::unique_ptr<SearchReader> r;
        explicit Lease(Impl& impl) : im(impl) {
            {
                std::lock_guard<std::mutex> lock(im.pool_mu);
                if (!im.idle.empty()) {
                    r = std::move(im.idle.back());
                    im.idle.pop_back();
                }
            }
            if (!r) r = im.open_reader();   // outside the lock: opening takes ~1 ms
        }
        ~Lease() {
            std::lock_guard<std::mutex> lock(im.pool_mu);
            if (im.idle.size() < kMaxIdleReaders) im.idle.push_back(std::move(r));
        }
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        SearchReader& operator*() { return *r; }
    };

    void load_doc_len(SearchReader& r) {
        if (doc_len_loaded.load(std::memory_order_acquire)) return;
        std::lock_guard<std::mutex> lock(doc_mu);
        if (doc_len_loaded.load(std::memory_order_relaxed)) return;
        // %_docsize.sz: one SQLite varint per FTS5 column (one column here).
        Stmt s(*r.db, "SELECT id, sz FROM " + fts_table(kb.id) + "_docsize");
        uint64_t tokens = 0;
        doc_len.reserve(static_cast<size_t>(chunks) + 16);
        while (s.step()) {
            size_t n = 0;
            const unsigned char* p = s.blob(1, n);
            uint64_t v = 0;
            for (size_t i = 0; i < n && i < 9; ++i) {
                if (i == 8) { v = (v << 8) | p[i]; break; }
                v = (v << 7) | (p[i] & 0x7f);
                if (!(p[i] & 0x80)) break;
            }
            doc_len[s.i64(0)] = static_cast<uint32_t>(v);
            tokens += v;
        }
        fts_rows = static_cast<int64_t>(doc_len.size());
        avg_len = fts_rows ? static_cast<double>(tokens) / static_cast<double>(fts_rows) : 0.0;
        doc_len_loaded.store(true, std::memory_order_release);
    }

    // The BM25 list from postings: for each term (in the given order, the order FTS5's
    // bm25() sums its phrases in) the instance rows give the chunk ids and term
    // frequencies, scored with FTS5's own formula (fts5_aux.c: k1 1.2, b 0.75,
    // idf = ln((N - df + 0.5) / (df + 0.5)), at least 1e-6), so the scores are FTS5's
    // -bm25() bit for bit. Skips what costs FTS5 time: a docsize B-tree lookup, an
    // auxiliary-function call per matching row and sorting every match.
    std::vector<std::pair<double, int64_t>> bm25_postings(SearchReader& r, const std::vector<std::pair<int64_t, std::string>>& terms,
                                                         size_t depth) {
        load_doc_len(r);
        Stmt& inst = *r.inst;
        std::unordered_map<int64_t, double> score;
        score.reserve(4096);
        for (auto& [df, term] : terms) {
            const double idf = detail::fts5_idf(fts_rows, df);
            int64_t cur = -1;
            double tf = 0;
            auto flush = [&] {
                if (cur < 0) return;
                auto it = doc_len.find(cur);
                double D = it == doc_len.end() ? avg_len : static_cast<double>(it->second);
                score[cur] += detail::fts5_term_score(idf, tf, D, avg_len);
            };
            inst.bind(1, term);
            while (inst.step()) {
                int64_t doc = inst.i64(0);
                if (doc != cur) { flush(); cur = doc; tf = 0; }
                tf += 1.0;
            }
            flush();
            inst.reset();
        }
        std::vector<std::pair<double, int64_t>> out;
        out.reserve(score.size());
        for (auto& [id, s] : score) out.push_back({s, id});
        auto better = [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& c) {
            return a.first > c.first || (a.first == c.first && a.second < c.second);
        };
        size_t n = std::min(depth, out.size());
        std::partial_sort(out.begin(), out.begin() + static_cast<ptrdiff_t>(n), out.end(), better);
        out.resize(n);
        return out;
    }

    // The embedder, the index (checked against the DB on `r`) and the configured compact copy.
    void load_dense(SearchReader& r) {
        if (index_loaded.load(std::memory_order_acquire)) return;
        std::lock_guard<std::mutex> lock(dense_mu);
        if (index_loaded.load(std::memory_order_relaxed)) return;
        open_embedder_locked();
        std::string ip = paths.index_path(kb.name, kb.embed_model);
        if (!fs::exists(ip)) throw IoError(ErrorInfo{ip}.msg("vector store missing").hint("run pdsd kb -i -n " + kb.name));
        index = read_index(ip);
        if (!index_matches_db(*index, *r.db, kb.name))
            throw DataError(ErrorInfo{ip}.msg("the vector store does not match the database (an update was interrupted)")
                                .hint("run pdsd kb -i -n " + kb.name + " to bring it up to date"));
        if (index->d != embedder->dim())
            throw FormatError(ErrorInfo{ip}.expected("dim " + std::to_string(embedder->dim())).found("dim " + std::to_string(index->d)));
        if (auto* ivf = dynamic_cast<IndexIVFFlat*>(index.get()))
            ivf->nprobe = ivf_default_nprobe(settings, ivf->nlist);
        compact_locked(settings.ivf_scan);   // the configured copy now, not in the first query (~0.3-0.9 s at 100k x 1024)
        index_loaded.store(true, std::memory_order_release);
    }
    // vs_type pg: dense search needs only the embedder (the vectors are the store's).
    void load_pg_embedder() {
        if (index_loaded.load(std::memory_order_acquire)) return;
        std::lock_guard<std::mutex> lock(dense_mu);
        if (index_loaded.load(std::memory_order_relaxed)) return;
        open_embedder_locked();
        index_loaded.store(true, std::memory_order_release);
    }
    // The KB's embedder (given, looked up or opened), checked against its embed_model. Under dense_mu.
    void open_embedder_locked() {
        if (kb.embed_model == "none")
            throw UsageError(ErrorInfo{paths.kb_dir(kb.name)}.msg("this knowledge base has no vector store (embed_model none)")
                                 .hint("use --mode bm25, or rebuild with pdsd kb -r -n " + kb.name + " -e <model>"));
        if (!embedder && lookup) embedder = thread_safe_embedder(lookup(kb.embed_model));
        if (!embedder) embedder = thread_safe_embedder(open_embedder(paths.root, kb.embed_model, settings));
        if (embedder->name() != embed_model_store_name(kb.embed_model))
            throw ConfigError(ErrorInfo{}.at("embedder").expected(embed_model_store_name(kb.embed_model)).found(embedder->name())
                                  .hint("the KB was indexed with another embedding model; rebuild it or pass the same model"));
    }

    // The compact copy for `scan` ("fp16" | "int8"), built on first use; null when this
    // CPU / index cannot use one (then FAISS searches). After load_dense.
    const detail::CompactIvf* compact(const std::string& scan) {
        std::lock_guard<std::mutex> lock(dense_mu);
        return compact_locked(scan);
    }
    const detail::CompactIvf* compact_locked(const std::string& scan) {
        using detail::CompactIvf;
        auto* ivf = as_ivf(*index);
        if (!ivf || (scan != "fp16" && scan != "int8")) return nullptr;
        const CompactIvf::Codes codes = scan == "fp16" ? CompactIvf::Codes::fp16 : CompactIvf::Codes::int8;
        auto& slot = codes == CompactIvf::Codes::fp16 ? fp16 : int8;
        if (slot) return slot.get();
        auto* lists = dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists);
        auto* quant = dynamic_cast<const faiss::IndexFlat*>(ivf->quantizer);
        if (!lists || !quant || ivf->metric_type != faiss::METRIC_INNER_PRODUCT ||
            !CompactIvf::supported(codes, static_cast<size_t>(ivf->d)))
            return nullptr;
        std::vector<CompactIvf::List> ls(ivf->nlist);
        for (size_t l = 0; l < ivf->nlist; ++l)
            ls[l] = {reinterpret_cast<const float*>(lists->get_codes(l)), lists->get_ids(l), lists->list_size(l)};
        auto t0 = std::chrono::steady_clock::now();
        slot = std::make_unique<CompactIvf>(codes, static_cast<size_t>(ivf->d), quant->get_xb(), ls);
        log::debug("kb", log::cat(scan, " IVF copy: ", slot->bytes() >> 20, " MiB in ",
                                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s"));
        return slot.get();
    }
};

FileStamp file_stamp(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return {true, static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
            static_cast<uint64_t>(st.st_size)};
}

KnowledgeBase::KnowledgeBase(const std::string& root, const std::string& kb_name, std::shared_ptr<Embedder> embedder)
    : KnowledgeBase(root, kb_name, EmbedderLookup{}) {
    impl_->embedder = thread_safe_embedder(std::move(embedder));
}

KnowledgeBase::KnowledgeBase(const std::string& root, const std::string& kb_name, EmbedderLookup lookup)
    : impl_(std::make_unique<Impl>()) {
    validate_kb_name(kb_name);
    Impl& im = *impl_;
    im.paths = KbPaths{root};
    // Stamps before the rows: a write in between makes is_current() false (never a stale true).
    im.settings_stamp = file_stamp(settings_path(root));
    im.settings = load_kb_settings(root);
    im.lookup = std::move(lookup);
    if (on_pg(im.settings)) {
        im.open_pg_kb(kb_name);
        return;
    }
    auto db = open_db(im.paths, false);
    im.db_inode = file_stamp(im.paths.info_db()).inode;
    im.kb = get_kb(*db, kb_name);
    if (!im.kb.exists)
        throw DataError(ErrorInfo{im.paths.info_db()}.at("knowledge base '" + kb_name + "'").msg("not in the database")
                            .hint("build it with pdsd kb -r -n " + kb_name + " (see pdsd kb list)"));
    if (im.kb.embed_model != "none") im.index_stamp = file_stamp(im.paths.index_path(kb_name, im.kb.embed_model));
    Stmt c(*db, "SELECT count(*) FROM chunks WHERE kb_name = ?");
    c.bind(1, kb_name);
    c.step();
    im.chunks = c.i64(0);
    im.idle.push_back(im.open_reader());   // the first reader now: its errors belong to the open
}

KnowledgeBase::~KnowledgeBase() = default;

bool KnowledgeBase::is_current() const {
    Impl& im = *impl_;
    if (file_stamp(settings_path(im.paths.root)) != im.settings_stamp) return false;
    if (im.pg) {   // the KB's row in PostgreSQL: dropped and made again (id) or rebuilt (generation)
        PgLease store(*im.pg);
        auto info = store->kb_info(im.kb.name);
        return info && info->id == im.kb.id && info->generation == im.kb.generation;
    }
    if (im.kb.embed_model != "none" && file_stamp(im.paths.index_path(im.kb.name, im.kb.embed_model)) != im.index_stamp) return false;
    const FileStamp db = file_stamp(im.paths.info_db());
    if (!db.exists || db.inode != im.db_inode) return false;
    Impl::Lease lease(im);
    Stmt& g = *(*lease).generation;
    g.bind(1, im.kb.name);
    const bool same = g.step() && g.i64(0) == im.kb.id && g.i64(1) == im.kb.generation;
    g.reset();
    return same;
}

int64_t KnowledgeBase::generation() const { return impl_->kb.generation; }
const KbSettings& KnowledgeBase::settings() const { return impl_->settings; }
const std::string& KnowledgeBase::name() const { return impl_->kb.name; }
const std::string& KnowledgeBase::embed_model() const { return impl_->kb.embed_model; }
int64_t KnowledgeBase::chunk_count() const { return impl_->chunks; }

KnowledgeBase::VectorIndexInfo KnowledgeBase::vector_index_info() const {
    if (impl_->pg) {   // pgvector: HNSW, or an exact scan with vector_index flat
        impl_->load_pg_embedder();
        return {impl_->settings.vector_index == "flat" ? "exact" : "hnsw", impl_->chunks, impl_->embedder->dim(), 0, 0};
    }
    {
        Impl::Lease lease(*impl_);
        impl_->load_dense(*lease);
    }
    VectorIndexInfo v;
    v.ntotal = impl_->index->ntotal;
    v.dim = impl_->index->d;
    if (auto* ivf = as_ivf(*impl_->index)) {
        v.type = "ivf";
        v.nlist = static_cast<int64_t>(ivf->nlist);
        v.nprobe = static_cast<int64_t>(ivf->nprobe);
    } else {
        v.type = "flat";
    }
    return v;
}

// ---- ranking stage (see the header comment) ----

namespace {

// Stage 2 and 3: the threshold on each list's own score, then the mode's score: the list's
// score (bm25, dense) or the fusion of both lists (hybrid). Sets score, kept and reason.
void threshold_and_fuse(std::vector<SearchHit>& all, const SearchOptions& o, double threshold) {
    char buf[96];
    // Weighted fusion: each list's scores min-max scaled to [0, 1] over the list (after the
    // threshold for the dense list); a single-valued list scales to 1.
    double bmin = 0, bmax = 0, dmin = 0, dmax = 0;
    bool bseen = false, dseen = false;
    for (auto& h : all) {
        if (h.bm25) { bmin = bseen ? std::min(bmin, *h.bm25) : *h.bm25; bmax = bseen ? std::max(bmax, *h.bm25) : *h.bm25; bseen = true; }
        if (h.cosine && *h.cosine >= threshold) {
            dmin = dseen ? std::min(dmin, *h.cosine) : *h.cosine;
            dmax = dseen ? std::max(dmax, *h.cosine) : *h.cosine;
            dseen = true;
        }
    }
    auto scaled = [](double x, double lo, double hi) { return hi > lo ? (x - lo) / (hi - lo) : 1.0; };
    for (auto& h : all) {
        if (o.mode == "bm25") {
            h.score = *h.bm25;
            h.kept = h.score >= threshold;
            if (!h.kept) { std::snprintf(buf, sizeof buf, "bm25 %.4f < threshold %.4f", h.score, threshold); h.reason = buf; }
        } else if (o.mode == "dense") {
            h.score = *h.cosine;
            h.kept = h.score >= threshold;
            if (!h.kept) { std::snprintf(buf, sizeof buf, "cosine %.4f < threshold %.4f", h.score, threshold); h.reason = buf; }
        } else {
            // The threshold filters the dense list first; then RRF (k = 60) or weighted scores.
            bool dense_ok = h.cosine && *h.cosine >= threshold;
            if (o.fusion == "weighted") {
                h.score = (h.bm25 ? o.bm25_weight * scaled(*h.bm25, bmin, bmax) : 0.0) +
                          (dense_ok ? o.dense_weight * scaled(*h.cosine, dmin, dmax) : 0.0);
                h.kept = h.bm25 || dense_ok;
            } else {
                h.score = (h.bm25_rank ? o.bm25_weight / (60.0 + *h.bm25_rank) : 0.0) +
                          (dense_ok ? o.dense_weight / (60.0 + *h.dense_rank) : 0.0);
                h.kept = (h.bm25_rank && o.bm25_weight > 0) || (dense_ok && o.dense_weight > 0);
            }
            if (h.cosine && !dense_ok) {
                std::snprintf(buf, sizeof buf, "cosine %.4f < threshold %.4f (dense vote dropped)", *h.cosine, threshold);
                h.reason = buf;
            }
        }
    }
}

// Kept first, then by score, ties by chunk id (deterministic).
void sort_ranked(std::vector<SearchHit>& all) {
    std::stable_sort(all.begin(), all.end(), [](const SearchHit& a, const SearchHit& b) {
        if (a.kept != b.kept) return a.kept;
        if (a.score != b.score) return a.score > b.score;
        return a.chunk_id < b.chunk_id;
    });
}

// Stage 5: at most top_k kept hits, ranked; the rest dropped with the reason.
void keep_top_k(std::vector<SearchHit>& all, size_t top_k) {
    size_t kept = 0;
    for (auto& h : all) {
        if (!h.kept) continue;
        if (kept >= top_k) {
            h.kept = false;
            h.reason = "beyond top_k " + std::to_string(top_k);
        } else {
            ++kept;
            if (h.reason.empty()) h.reason = "kept: rank " + std::to_string(kept);
            else h.reason = "kept: rank " + std::to_string(kept) + "; " + h.reason;
        }
    }
    std::stable_sort(all.begin(), all.end(), [](const SearchHit& a, const SearchHit& b) {
        if (a.kept != b.kept) return a.kept;
        return a.score > b.score;
    });
}

void check_search_options(const SearchOptions& o) {
    if (o.mode != "bm25" && o.mode != "dense" && o.mode != "hybrid")
        throw UsageError(ErrorInfo{}.at("--mode").expected("bm25, dense or hybrid").found(o.mode));
    if (o.fusion != "rrf" && o.fusion != "weighted")
        throw UsageError(ErrorInfo{}.at("fusion").expected("rrf or weighted").found(o.fusion));
    if (!(o.bm25_weight >= 0) || !(o.dense_weight >= 0))
        throw UsageError(ErrorInfo{}.at("hybrid_weights").expected("numbers >= 0"));
    if (o.reranker && o.rerank_top_n == 0) throw UsageError(ErrorInfo{}.at("--rerank-top-n").expected(">= 1").found("0"));
}

}  // namespace

// Stage 1: the BM25 and/or dense lists, `candidates` deep (at least top_k), merged by chunk id.
std::vector<SearchHit> KnowledgeBase::Impl::candidates(SearchReader& rd, const std::string& query, const SearchOptions& o) {
    size_t depth = std::max(o.candidates, o.top_k);
    std::unordered_map<int64_t, SearchHit> cand;
    cand.reserve(2 * depth);
    std::vector<int64_t> bm25_list, dense_list;

    // Dense list: query embedding + FAISS search (flat or IVF). In hybrid mode BM25 runs on
    // a second thread while the dense list is made on this one (the two touch no shared
    // state until both are done; the index is loaded and checked against the DB before),
    // so the wall time is about max(BM25, dense) rather than the sum. The dense side stays
    // on the caller's thread: torch gives a new thread an OpenMP team (see dense_search).
    struct DenseResult { std::vector<float> dist; std::vector<fidx_t> labels; };
    const std::string scan = o.ivf_scan.empty() ? settings.ivf_scan : o.ivf_scan;
    if (scan != "fp16" && scan != "int8" && scan != "faiss")
        throw UsageError(ErrorInfo{}.at("ivf_scan").expected("fp16, int8 or faiss").found(scan));
    const detail::CompactIvf* compact = nullptr;   // set after load_dense, before dense_search runs
    auto dense_search = [this, &o, &query, &compact, depth]() {
        DenseResult r;
        OmpSingleThread omp_single;
        auto q = embedder->embed({query}, true);
        fidx_t k = static_cast<fidx_t>(std::min<size_t>(depth, static_cast<size_t>(index->ntotal)));
        if (k <= 0) return r;
        r.dist.resize(static_cast<size_t>(k));
        r.labels.resize(static_cast<size_t>(k));
        if (auto* ivf = as_ivf(*index)) {
            // Per-call parameters: the object's nprobe stays the configured one.
            faiss::SearchParametersIVF sp;
            sp.nprobe = static_cast<size_t>(o.nprobe > 0 ? o.nprobe : static_cast<int64_t>(ivf->nprobe));
            sp.nprobe = std::min(sp.nprobe, ivf->nlist);
            if (compact)
                compact->search(q[0].data(), sp.nprobe, static_cast<size_t>(k), r.dist.data(), r.labels.data());
            else
                ivf->search(1, q[0].data(), k, r.dist.data(), r.labels.data(), &sp);
        } else {
            index->search(1, q[0].data(), k, r.dist.data(), r.labels.data());
        }
        return r;
    };
    auto bm25_search = [&] {
        // Large KBs: terms found in more than 2% of the chunks (bm25_prune_df_ratio) are dropped from the query
        // while rarer terms remain (their IDF is small, and their posting lists are what
        // makes FTS5 slow); see docs/knowledge_base.md.
        std::vector<std::string> terms = detail::distinct_query_terms(query);
        if (o.bm25_scorer != "auto" && o.bm25_scorer != "fts5" && o.bm25_scorer != "postings")
            throw UsageError(ErrorInfo{}.at("bm25_scorer").expected("auto, fts5 or postings").found(o.bm25_scorer));
        const bool large = chunks >= detail::kPruneMinChunks;
        const bool postings = o.bm25_scorer == "postings" || (o.bm25_scorer == "auto" && large);
        std::vector<std::pair<int64_t, std::string>> df;   // (chunks containing the term, term), rarest first
        if (postings || (large && terms.size() > 1)) {
            for (auto& t : terms) {
                rd.vocab->bind(1, t);
                df.push_back({rd.vocab->step() ? rd.vocab->i64(0) : 0, t});
                rd.vocab->reset();
            }
            df = detail::keep_query_terms(std::move(df), chunks, o.bm25_prune_df_ratio);
            terms.clear();
            for (auto& e : df) terms.push_back(e.second);
        }
        auto add_bm25 = [&](int64_t id, double s) {
            auto& h = cand[id];
            h.chunk_id = id;
            h.bm25 = s;
            bm25_list.push_back(id);
            h.bm25_rank = bm25_list.size();
        };
        if (postings) {
            for (auto& [s, id] : bm25_postings(rd, df, depth)) add_bm25(id, s);
        } else {
            std::string expr = match_expression(terms);
            if (!expr.empty()) {
                Stmt& fts = *rd.fts;
                fts.bind(1, expr).bind(2, depth);
                while (fts.step()) add_bm25(fts.i64(0), -fts.f64(1));   // FTS5 bm25() is lower-is-better and negative
                fts.reset();
            }
        }
    };
    DenseResult r;
    if (o.mode != "bm25") {
        load_dense(rd);
        compact = this->compact(scan);
    }
    if (o.mode == "hybrid" && o.hybrid_parallel) {
        std::future<void> bm25_future = std::async(std::launch::async, bm25_search);
        try {
            r = dense_search();
        } catch (...) {
            bm25_future.wait();   // it uses this frame's state
            throw;
        }
        bm25_future.get();
    } else {
        if (o.mode != "dense") bm25_search();
        if (o.mode != "bm25") r = dense_search();
    }
    if (o.mode != "bm25") {
        for (size_t i = 0; i < r.labels.size(); ++i) {
            if (r.labels[i] < 0) continue;
            auto& h = cand[r.labels[i]];
            h.chunk_id = r.labels[i];
            h.cosine = r.dist[i];   // inner product of unit vectors
            dense_list.push_back(r.labels[i]);
            h.dense_rank = dense_list.size();
        }
    }

    std::vector<SearchHit> all;
    all.reserve(cand.size());
    for (auto& [id, h] : cand) {
        h.kb = kb.name;
        all.push_back(std::move(h));
    }
    return all;
}

// vs_type pg: the same lists from PostgreSQL (PgStore: FTS5's BM25 over its postings, pgvector's
// cosine; HNSW, or exact with vector_index flat), merged by chunk id. Hybrid with
// hybrid_parallel: BM25 on a second thread and its own leased connection while the query is
// embedded and the dense list read on this one (the embedder stays on the caller's thread,
// see OmpSingleThread). Each list is read in its own snapshot.
std::vector<SearchHit> KnowledgeBase::Impl::pg_candidates(const std::string& query, const SearchOptions& o) {
    const size_t depth = std::max(o.candidates, o.top_k);
    PgSearchOptions po;
    po.bm25_prune_df_ratio = o.bm25_prune_df_ratio;
    po.exact = settings.vector_index == "flat";
    auto bm25_list = [&] {
        PgLease store(*pg);
        return store->bm25_top_k(kb.name, query, depth, po);
    };
    auto dense_list = [&] {
        load_pg_embedder();
        std::vector<float> q;
        {
            OmpSingleThread omp_single;
            q = embedder->embed({query}, true).at(0);
        }
        PgLease store(*pg);
        return store->dense_top_k(kb.name, q, depth, po);
    };
    std::vector<SearchHit> bm25, dense;
    if (o.mode == "hybrid" && o.hybrid_parallel) {
        std::future<std::vector<SearchHit>> bm25_future = std::async(std::launch::async, bm25_list);
        try {
            dense = dense_list();
        } catch (...) {
            bm25_future.wait();   // it uses this frame's state
            throw;
        }
        bm25 = bm25_future.get();
    } else {
        if (o.mode != "dense") bm25 = bm25_list();
        if (o.mode != "bm25") dense = dense_list();
    }
    std::unordered_map<int64_t, SearchHit> cand;
    for (auto& h : bm25) cand.emplace(h.chunk_id, std::move(h));
    for (auto& h : dense) {
        auto [it, added] = cand.emplace(h.chunk_id, h);
        if (!added) it->second.cosine = h.cosine, it->second.dense_rank = h.dense_rank;
    }
    std::vector<SearchHit> all;
    all.reserve(cand.size());
    for (auto& [id, h] : cand) all.push_back(std::move(h));
    return all;
}

void KnowledgeBase::Impl::load_chunk(SearchReader* rd, SearchHit& h) {
    if (!h.file_name.empty() || !rd) return;   // already read (pg hits come with their rows)
    Stmt& chunk = *rd->chunk;
    chunk.bind(1, h.chunk_id);
    if (chunk.step()) {
        h.file_name = chunk.text(0);
        h.chunk_index = chunk.i64(1);
        h.text = chunk.text(2);
        h.start_char = chunk.i64(3);
        h.end_char = chunk.i64(4);
    }
    chunk.reset();
}

// Stage 4: the best rerank_top_n kept candidates (all ranked by fusion) rescored by the
// cross-encoder; kept candidates beyond them are dropped.
void KnowledgeBase::Impl::rerank(SearchReader* rd, std::vector<SearchHit>& all, const std::string& query, const SearchOptions& o) {
    std::vector<SearchHit*> top;
    for (auto& h : all) {
        if (!h.kept) continue;
        if (top.size() < o.rerank_top_n) {
            top.push_back(&h);
        } else {
            h.kept = false;
            h.reason = "beyond rerank_top_n " + std::to_string(o.rerank_top_n);
        }
    }
    if (top.empty()) return;
    std::vector<std::string> docs;
    docs.reserve(top.size());
    for (auto* h : top) {
        load_chunk(rd, *h);
        docs.push_back(h->text);
    }
    std::vector<double> rel = o.reranker->scores(query, docs);
    for (size_t i = 0; i < top.size(); ++i) {
        top[i]->fused = top[i]->score;
        top[i]->fused_rank = i + 1;
        top[i]->rerank = rel[i];
        top[i]->score = rel[i];
    }
    sort_ranked(all);
}

std::vector<SearchHit> KnowledgeBase::search(const std::string& query, const SearchOptions& o) const {
    Impl& im = *impl_;
    check_search_options(o);
    const double threshold = o.score_threshold ? *o.score_threshold : im.settings.score_threshold;
    std::optional<Impl::Lease> lease;   // a SQLite reader (local store only)
    std::vector<SearchHit> all;
    if (im.pg) {
        all = im.pg_candidates(query, o);
    } else {
        lease.emplace(im);
        all = im.candidates(**lease, query, o);
    }
    SearchReader* rd = lease ? &**lease : nullptr;
    threshold_and_fuse(all, o, threshold);
    sort_ranked(all);
    if (o.reranker) im.rerank(rd, all, query, o);
    keep_top_k(all, o.top_k);
    std::vector<SearchHit> out;
    for (auto& h : all) {
        if (!h.kept && !o.explain) break;
        im.load_chunk(rd, h);
        out.push_back(std::move(h));
    }
    return out;
}

SearchOptions make_search_options(const std::string& root, const KbSettings& st, const SearchOverrides& ov) {
    SearchOptions so;
    if (ov.top_k) check_int_in_range(*ov.top_k, "top_k", 1, kMaxTopK);
    so.top_k = static_cast<size_t>(ov.top_k.value_or(st.top_k));
    so.score_threshold = ov.score_threshold.value_or(st.score_threshold);
    so.mode = ov.mode.value_or(st.search_mode);
    so.fusion = ov.fusion.value_or(st.fusion);
    if (st.hybrid_weights.size() == 2) {
        so.bm25_weight = st.hybrid_weights[0];
        so.dense_weight = st.hybrid_weights[1];
    }
    if (ov.rerank_top_n) check_int_in_range(*ov.rerank_top_n, "rerank_top_n", 1, kMaxTopK);
    so.rerank_top_n = static_cast<size_t>(ov.rerank_top_n.value_or(st.rerank_top_n));
    check_search_options(so);
    const std::string model = ov.rerank_model ? *ov.rerank_model : st.use_reranker ? st.reranker_model : "none";
    if (!model.empty() && model != "none") {
        RerankerOptions ro;
        ro.max_length = static_cast<size_t>(st.reranker_max_length);
        ro.dtype = st.embed_dtype;
        so.reranker = shared_reranker(root, model, ro);
    }
    return so;
}

// ---- Chatchat drop-in (pdsd serve's Chatchat routes) ----------------------------------

std::unique_ptr<Embedder> open_embed_model(const std::string& root, const std::string& spec) {
    return open_embedder(root, embed_model_spec(spec), load_kb_settings(root));
}

UpdateReport update_files(const std::string& root, const std::string& kb, const std::vector<std::string>& files,
                          const UpdateOptions& options) {
    validate_kb_name(kb);
    KbPaths paths{root};
    UpdateOptions o = options;
    o.mode = UpdateMode::update_in_db;
    UpdateReport report;
    update_kb(paths, kb, o, load_kb_settings(root), &files, report, /*create=*/false);
    return report;
}

namespace {
// kb_info of `kb` in the store `settings` names; false: no such KB.
bool set_kb_info_in(const std::string& root, const KbSettings& settings, const std::string& kb, const std::string& info) {
    validate_kb_name(kb);
    KbPaths paths{root};
    if (on_pg(settings)) return open_pg(settings, root)->set_kb_info(kb, info);
    if (!fs::exists(paths.info_db())) return false;
    auto db = open_db(paths, false);
    if (!get_kb(*db, kb).exists) return false;
    Stmt st(*db, "UPDATE knowledge_base SET kb_info = ? WHERE kb_name = ?");
    st.bind(1, info).bind(2, kb).run();
    return true;
}
}  // namespace

bool set_kb_info(const std::string& root, const std::string& kb, const std::string& info) {
    return set_kb_info_in(root, load_kb_settings(root), kb, info);
}

UpdateReport migrate_knowledge_bases(const std::string& root, const std::string& to, const std::vector<std::string>& kb_names,
                                     bool progress) {
    auto t0 = std::chrono::steady_clock::now();
    const KbSettings from = load_kb_settings(root);
    const std::string target = to == "local" ? "faiss" : to;
    if (target != "faiss" && target != "pg")
        throw UsageError(ErrorInfo{}.at("--to").expected("pg or local").found(to));
    if (from.vs_type == target)
        throw UsageError(ErrorInfo{settings_path(root)}.at("vs_type").found(from.vs_type)
                             .msg("the knowledge bases are already on this store").hint("pdsd kb migrate --to " +
                                                                                         std::string(on_pg(from) ? "local" : "pg")));
    KbSettings dst = from;
    dst.vs_type = target;
    if (on_pg(dst)) open_pg(dst, root);   // the server and the schema before any work
    KbPaths paths{root};
    UpdateReport report;
    size_t migrated = 0;
    for (const KbInfo& k : list_knowledge_bases(root)) {
        if (!k.in_db || (!kb_names.empty() && std::find(kb_names.begin(), kb_names.end(), k.name) == kb_names.end())) continue;
        UpdateOptions o;
        o.mode = UpdateMode::recreate;
        o.embed_model = k.embed_model;
        o.chunk_size = k.chunk_size > 0 ? k.chunk_size : -1;
        o.chunk_overlap = k.chunk_size > 0 ? k.chunk_overlap : -1;
        o.progress = progress;
        update_kb(paths, k.name, o, dst, nullptr, report, /*create=*/true);
        set_kb_info_in(root, dst, k.name, k.info);
        ++migrated;
    }
    if (migrated == 0)
        throw UsageError(ErrorInfo{settings_path(root)}.msg("no built knowledge base to migrate").hint("see pdsd kb list"));
    set_settings_keys(settings_path(root), {{"vs_type", target}});
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
}

}  // namespace pdsd::kb
