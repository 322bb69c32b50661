// PostgreSQL + pgvector store (pdsd/kb/pg_store.h): a small libpq wrapper (connection,
// parametrised queries, COPY, transactions), the schema, a KB's rebuild in one transaction,
// dense top-k (pgvector's <=>) and BM25 top-k (FTS5's formula over kb_postings).
// Built only with libpq (CMake: pkg-config libpq); without it pg_store_absent.cpp.
#include "pdsd/kb/pg_store.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"
#include "bm25.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <unordered_map>

namespace pdsd::kb {

namespace {

// pg_advisory_xact_lock(class, key) classes: the schema (one lock) and a KB's writes (key =
// hashtext(kb_name)), so replicas that rebuild one KB at once queue instead of interleaving.
constexpr int kLockSchema = 0x70647364;   // "pdsd"
constexpr int kLockKb = 0x70647365;

// pgvector 0.6: HNSW indexes at most 2000 dimensions; hnsw.ef_search is at most 1000.
constexpr int64_t kHnswMaxDim = 2000, kMaxEfSearch = 1000, kMaxVectorDim = 16000;
// maintenance_work_mem for building an HNSW index (10k x 1024 needs ~60 MB; 1M x 1024 ~6 GB,
// then pgvector builds the rest on disk, slower).
constexpr const char* kIndexBuildMemory = "256MB";

using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

// "postgresql://user:secret@host" -> "postgresql://user:***@host" in a message (libpq quotes
// parts of a connection string it cannot parse).
std::string scrub_userinfo(std::string m) {
    for (size_t p = m.find("://"); p != std::string::npos; p = m.find("://", p + 3)) {
        size_t at = m.find('@', p + 3), slash = m.find('/', p + 3);
        if (at == std::string::npos || (slash != std::string::npos && slash < at)) continue;
        size_t colon = m.find(':', p + 3);
        if (colon != std::string::npos && colon < at) m.replace(colon + 1, at - colon - 1, "***");
    }
    return m;
}

std::string trim_message(std::string m) {
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    for (auto& c : m)
        if (c == '\n') c = ' ';
    return m;
}

// The options of a DSN (URI or key=value); throws ConfigError naming `where`.
std::map<std::string, std::string> parse_dsn(const std::string& dsn, const std::string& where) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
    if (!opts) {
        std::string m = err ? trim_message(err) : "out of memory";
        PQfreemem(err);
        throw ConfigError(ErrorInfo{where}.at("pg_connection_uri").msg("not a PostgreSQL connection string").found(scrub_userinfo(m))
                              .hint("write it as postgresql://USER@HOST:PORT/DATABASE (libpq's URI) or host=... dbname=..."));
    }
    std::map<std::string, std::string> out;
    for (auto* o = opts; o->keyword; ++o)
        if (o->val && *o->val) out[o->keyword] = o->val;
    PQconninfoFree(opts);
    return out;
}

// Text for COPY ... FROM STDIN (text format): backslash, tab, newline and CR escaped.
void append_copy_text(std::string& out, const std::string& v) {
    for (char c : v) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            default: out += c;
        }
    }
}

// pgvector's text form "[x1,x2,...]"; %.9g round-trips a float.
std::string vector_literal(const std::vector<float>& v) {
    std::string out = "[";
    char buf[32];
    for (size_t i = 0; i < v.size(); ++i) {
        std::snprintf(buf, sizeof buf, i ? ",%.9g" : "%.9g", static_cast<double>(v[i]));
        out += buf;
    }
    return out + "]";
}

// Array literals for text[] / float8[] parameters: {"a","b"} (quotes and backslashes escaped).
std::string text_array_literal(const std::vector<std::string>& v) {
    std::string out = "{";
    for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char c : v[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}
std::string exact(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}
std::string float_array_literal(const std::vector<double>& v) {
    std::string out = "{";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + exact(v[i]);
    return out + "}";
}

// The vectors of a KB's generation: a table per rebuild (see rebuild_kb).
std::string vectors_table(int64_t kb_id, int64_t generation) {
    return "kb_vectors_" + std::to_string(kb_id) + "_" + std::to_string(generation);
}

// Chatchat's tables (knowledge_base, knowledge_file: its column names, plus pdsd's) and
// pdsd's chunk, BM25 and schema-version tables. kb_postings carries the chunk's length so
// scoring reads one index (INCLUDE: an index-only scan once vacuumed).
const char* const kSchemaSql = R"(
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS knowledge_base(
  id BIGSERIAL PRIMARY KEY, kb_name TEXT NOT NULL UNIQUE, kb_info TEXT, vs_type TEXT, embed_model TEXT,
  file_count INTEGER NOT NULL DEFAULT 0, create_time TIMESTAMP NOT NULL DEFAULT now(),
  chunk_size INTEGER, chunk_overlap INTEGER, generation BIGINT NOT NULL DEFAULT 0,
  dim INTEGER NOT NULL DEFAULT 0, chunk_count BIGINT NOT NULL DEFAULT 0, term_total BIGINT NOT NULL DEFAULT 0,
  vectors_table TEXT, old_vectors_table TEXT);
CREATE TABLE IF NOT EXISTS knowledge_file(
  id BIGSERIAL PRIMARY KEY, file_name TEXT NOT NULL, file_ext TEXT,
  kb_name TEXT NOT NULL REFERENCES knowledge_base(kb_name) ON DELETE CASCADE,
  document_loader_name TEXT, text_splitter_name TEXT, file_version INTEGER NOT NULL DEFAULT 1,
  file_mtime DOUBLE PRECISION, file_size BIGINT, custom_docs BOOLEAN NOT NULL DEFAULT false,
  docs_count INTEGER NOT NULL DEFAULT 0, create_time TIMESTAMP NOT NULL DEFAULT now(), sha256 TEXT,
  UNIQUE(kb_name, file_name));
CREATE TABLE IF NOT EXISTS kb_chunks(
  id BIGSERIAL PRIMARY KEY, kb_id BIGINT NOT NULL REFERENCES knowledge_base(id) ON DELETE CASCADE,
  file_name TEXT NOT NULL, chunk_index INTEGER NOT NULL, text TEXT NOT NULL, metadata JSONB NOT NULL DEFAULT '{}',
  start_char BIGINT NOT NULL, end_char BIGINT NOT NULL, token_count INTEGER NOT NULL, term_count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kb_chunks_by_file ON kb_chunks(kb_id, file_name, chunk_index);
CREATE TABLE IF NOT EXISTS kb_terms(
  kb_id BIGINT NOT NULL REFERENCES knowledge_base(id) ON DELETE CASCADE, term TEXT NOT NULL, df INTEGER NOT NULL,
  PRIMARY KEY(kb_id, term));
CREATE TABLE IF NOT EXISTS kb_postings(
  kb_id BIGINT NOT NULL REFERENCES knowledge_base(id) ON DELETE CASCADE, term TEXT NOT NULL, chunk_id BIGINT NOT NULL,
  tf INTEGER NOT NULL, doc_len INTEGER NOT NULL, PRIMARY KEY(kb_id, term, chunk_id) INCLUDE (tf, doc_len));
CREATE TABLE IF NOT EXISTS pdsd_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO pdsd_meta VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
)";

}  // namespace

bool pg_store_available() { return true; }

std::string pg_dsn_from_settings(const KbSettings& settings, const std::string& settings_path) {
    if (settings.pg_connection_uri.empty())
        throw ConfigError(ErrorInfo{settings_path}.at("pg_connection_uri").msg("vs_type pg needs a database")
                              .expected("a connection URI such as postgresql://pdsd@127.0.0.1:5432/pdsd").found("nothing")
                              .hint("set pg_connection_uri in kb_settings.yaml; the password goes in $PGPASSWORD (or ~/.pgpass)"));
    auto opts = parse_dsn(settings.pg_connection_uri, settings_path);
    if (opts.count("password"))
        throw ConfigError(ErrorInfo{settings_path}.at("pg_connection_uri").msg("holds a password")
                              .expected("no password in kb_settings.yaml")
                              .found("a password for user " + (opts.count("user") ? opts["user"] : std::string("(default)")))
                              .hint("remove it from the URI and export PGPASSWORD (or use ~/.pgpass): settings files get copied and logged"));
    return settings.pg_connection_uri;
}

// ---- libpq wrapper ---------------------------------------------------------------

namespace {

// One connection: statements, errors (the password redacted), and what it is connected to.
struct Conn {
    PGconn* conn = nullptr;
    std::string where;                   // "PostgreSQL host H port P database D user U"
    std::vector<std::string> secrets;    // passwords to keep out of messages

    Conn() = default;
    ~Conn() { if (conn) PQfinish(conn); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    std::string redact(std::string m) const {
        for (auto& s : secrets)
            for (size_t p = m.find(s); !s.empty() && p != std::string::npos; p = m.find(s, p + 3)) m.replace(p, s.size(), "***");
        return scrub_userinfo(trim_message(m));
    }

    [[noreturn]] void fail(const std::string& sql, const std::string& message) const {
        std::string hint;
        if (message.find("vector.control") != std::string::npos || message.find("extension \"vector\"") != std::string::npos ||
            message.find("type \"vector\"") != std::string::npos)
            hint = "the server needs pgvector (CREATE EXTENSION vector, as a superuser once)";
        else if (message.find("server closed") != std::string::npos || message.find("no connection") != std::string::npos)
            hint = "the connection to PostgreSQL was lost; the transaction was rolled back, run the command again";
        // The statement's first line names it (the schema script starts with a newline).
        const size_t b = sql.find_first_not_of('\n');
        const std::string stmt = b == std::string::npos ? sql : sql.substr(b, std::min<size_t>(80, sql.find('\n', b) - b));
        ErrorInfo e{where};
        e.at(stmt).msg("PostgreSQL error").found(redact(message));
        if (!hint.empty()) e.hint(hint);
        throw IoError(e);
    }

    // One statement with text parameters ($1...; an empty optional is NULL).
    ResultPtr exec(const std::string& sql, const std::vector<std::optional<std::string>>& params = {}) const {
        std::vector<const char*> values;
        for (auto& p : params) values.push_back(p ? p->c_str() : nullptr);
        ResultPtr r(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0),
                    &PQclear);
        ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            fail(sql, r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn));
        return r;
    }
    // Several statements, no parameters (the schema).
    void exec_script(const std::string& sql) const {
        ResultPtr r(PQexec(conn, sql.c_str()), &PQclear);
        ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(sql, r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn));
    }
};

std::string text(const PGresult* r, int row, int col) {
    return PQgetisnull(r, row, col) ? std::string() : std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
}
int64_t i64(const PGresult* r, int row, int col) { return std::strtoll(PQgetvalue(r, row, col), nullptr, 10); }
double f64(const PGresult* r, int row, int col) { return std::strtod(PQgetvalue(r, row, col), nullptr); }

// BEGIN now; ROLLBACK unless commit() ran (an exception on the way out undoes everything).
class Transaction {
public:
    explicit Transaction(const Conn& im, bool read_only = false) : im_(im) {
        im_.exec(read_only ? "BEGIN READ ONLY" : "BEGIN");
    }
    ~Transaction() {
        if (!done_) PQclear(PQexec(im_.conn, "ROLLBACK"));   // best effort: a lost connection rolls back by itself
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit() {
        im_.exec("COMMIT");
        done_ = true;
    }

private:
    const Conn& im_;
    bool done_ = false;
};

// COPY table(columns) FROM STDIN, text format: rows buffered and sent 1 MiB at a time.
class CopyIn {
public:
    CopyIn(const Conn& im, std::string sql) : im_(im), sql_(std::move(sql)) {
        ResultPtr r(PQexec(im_.conn, sql_.c_str()), &PQclear);
        if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) im_.fail(sql_, r ? PQresultErrorMessage(r.get()) : PQerrorMessage(im_.conn));
    }
    ~CopyIn() {
        if (done_) return;
        PQputCopyEnd(im_.conn, "aborted by pdsd");   // leaves the COPY so the ROLLBACK can run
        while (PGresult* r = PQgetResult(im_.conn)) PQclear(r);
    }
    CopyIn(const CopyIn&) = delete;
    CopyIn& operator=(const CopyIn&) = delete;

    CopyIn& text(const std::string& v) { sep(); append_copy_text(buf_, v); return *this; }
    CopyIn& num(int64_t v) { sep(); buf_ += std::to_string(v); return *this; }
    CopyIn& num(double v) { sep(); buf_ += exact(v); return *this; }
    void end_row() {
        buf_ += '\n';
        first_ = true;
        if (buf_.size() >= (1u << 20)) flush();
    }
    void finish() {
        flush();
        done_ = true;
        if (PQputCopyEnd(im_.conn, nullptr) != 1) im_.fail(sql_, PQerrorMessage(im_.conn));
        ResultPtr r(PQgetResult(im_.conn), &PQclear);
        std::string error = (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) ? (r ? PQresultErrorMessage(r.get()) : PQerrorMessage(im_.conn)) : "";
        while (PGresult* rest = PQgetResult(im_.conn)) PQclear(rest);
        if (!error.empty()) im_.fail(sql_, error);
    }

private:
    void sep() {
        if (!first_) buf_ += '\t';
        first_ = false;
    }
    void flush() {
        if (!buf_.empty() && PQputCopyData(im_.conn, buf_.data(), static_cast<int>(buf_.size())) != 1)
            im_.fail(sql_, PQerrorMessage(im_.conn));
        buf_.clear();
    }
    const Conn& im_;
    std::string sql_, buf_;
    bool first_ = true, done_ = false;
};

// A chunk's BM25 tokens counted: (token, tf) and its length in tokens (FTS5's docsize).
struct ChunkTerms {
    std::vector<std::pair<std::string, int64_t>> tf;
    int64_t length = 0;
};
ChunkTerms count_chunk_terms(const std::string& text) {
    std::unordered_map<std::string, int64_t> n;
    auto terms = detail::fts5_tokens(text);   // what the local store's FTS5 table holds
    for (auto& t : terms) ++n[t];
    ChunkTerms c;
    c.tf.assign(n.begin(), n.end());
    c.length = static_cast<int64_t>(terms.size());
    return c;
}

void check_content(const PgKbContent& c, const std::string& where) {
    if (c.kb_name.empty()) throw UsageError(ErrorInfo{where}.at("kb_name").msg("empty knowledge-base name"));
    if (c.dim < 0 || c.dim > kMaxVectorDim)
        throw DataError(ErrorInfo{where}.at("knowledge base '" + c.kb_name + "'").msg("vector width out of range")
                            .expected("0 (BM25 only) to " + std::to_string(kMaxVectorDim) + " (pgvector's limit)").found(std::to_string(c.dim)));
    for (auto& ch : c.chunks)
        if (static_cast<int64_t>(ch.embedding.size()) != c.dim)
            throw DataError(ErrorInfo{where}.at(ch.file_name + "#" + std::to_string(ch.chunk_index)).msg("embedding of the wrong width")
                                .expected(std::to_string(c.dim) + " floats").found(std::to_string(ch.embedding.size()))
                                .hint("every chunk of a KB is embedded by the KB's one model"));
}

}  // namespace

struct PgStore::Impl : Conn {};

PgStore::PgStore(const std::string& dsn) : impl_(std::make_unique<Impl>()) {
    Impl& im = *impl_;
    auto opts = parse_dsn(dsn, "PostgreSQL connection string");
    if (opts.count("password")) im.secrets.push_back(opts["password"]);
    if (const char* env = std::getenv("PGPASSWORD"); env && *env) im.secrets.push_back(env);
    im.conn = PQconnectdb(dsn.c_str());
    auto str = [](const char* s, const char* fallback) { return std::string(s && *s ? s : fallback); };
    im.where = "PostgreSQL host " + str(im.conn ? PQhost(im.conn) : nullptr, "(default)") + " port " +
               str(im.conn ? PQport(im.conn) : nullptr, "(default)") + " database " + str(im.conn ? PQdb(im.conn) : nullptr, "(default)") +
               " user " + str(im.conn ? PQuser(im.conn) : nullptr, "(default)");
    if (!im.conn || PQstatus(im.conn) != CONNECTION_OK) {
        std::string m = im.conn ? PQerrorMessage(im.conn) : "out of memory";
        std::string hint = "check pg_connection_uri in kb_settings.yaml and that the server is running";
        if (m.find("password") != std::string::npos)
            hint = "set the password in $PGPASSWORD (or ~/.pgpass) for this user";
        else if (m.find("does not exist") != std::string::npos)
            hint = "create it (createdb / CREATE DATABASE, CREATE ROLE) or fix pg_connection_uri in kb_settings.yaml";
        throw IoError(ErrorInfo{im.where}.msg("cannot connect").found(im.redact(m)).hint(hint));
    }
    if (PQsetClientEncoding(im.conn, "UTF8") != 0) im.fail("SET client_encoding", PQerrorMessage(im.conn));
    // The server's NOTICEs ("relation ... already exists, skipping" from ensure_schema) would
    // go to stderr by libpq's default; they are not the user's business (debug log only).
    PQsetNoticeProcessor(im.conn, [](void*, const char* m) { log::debug("pg", trim_message(m)); }, nullptr);
}

PgStore::~PgStore() = default;

const std::string& PgStore::describe() const { return impl_->where; }

void PgStore::ensure_schema() {
    Impl& im = *impl_;
    Transaction tx(im);
    im.exec("SELECT pg_advisory_xact_lock($1, 0)", {std::to_string(kLockSchema)});
    im.exec_script(kSchemaSql);
    tx.commit();
}

namespace {
// The knowledge_base columns PgKbInfo holds, in read_kb_info's order.
constexpr const char* kKbColumns = "id, generation, dim, chunk_count, term_total, file_count, kb_info, vs_type, embed_model, "
                                   "vectors_table, to_char(create_time, 'YYYY-MM-DD HH24:MI:SS'), kb_name, "
                                   "COALESCE(chunk_size, 0), COALESCE(chunk_overlap, 0)";
PgKbInfo read_kb_info(const PGresult* p, int row) {
    PgKbInfo k;
    k.id = i64(p, row, 0), k.generation = i64(p, row, 1), k.dim = i64(p, row, 2), k.chunk_count = i64(p, row, 3);
    k.term_total = i64(p, row, 4), k.file_count = i64(p, row, 5);
    k.kb_info = text(p, row, 6), k.vs_type = text(p, row, 7), k.embed_model = text(p, row, 8);
    k.vectors_table = text(p, row, 9), k.create_time = text(p, row, 10), k.kb_name = text(p, row, 11);
    k.chunk_size = i64(p, row, 12), k.chunk_overlap = i64(p, row, 13);
    return k;
}
}  // namespace

std::optional<PgKbInfo> PgStore::kb_info(const std::string& kb_name) {
    auto r = impl_->exec(std::string("SELECT ") + kKbColumns + " FROM knowledge_base WHERE kb_name = $1", {kb_name});
    if (PQntuples(r.get()) == 0) return std::nullopt;
    return read_kb_info(r.get(), 0);
}

std::vector<PgKbInfo> PgStore::list_kbs() {
    auto r = impl_->exec(std::string("SELECT ") + kKbColumns + " FROM knowledge_base ORDER BY kb_name");
    std::vector<PgKbInfo> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(read_kb_info(r.get(), i));
    return out;
}

std::vector<PgFile> PgStore::list_files(const std::string& kb_name) {
    auto r = impl_->exec("SELECT file_name, file_ext, document_loader_name, text_splitter_name, sha256, file_version, file_size, "
                         "docs_count, file_mtime, to_char(create_time, 'YYYY-MM-DD HH24:MI:SS') FROM knowledge_file "
                         "WHERE kb_name = $1 ORDER BY file_name", {kb_name});
    std::vector<PgFile> out;
    const PGresult* p = r.get();
    for (int i = 0; i < PQntuples(p); ++i) {
        PgFile f;
        f.file_name = text(p, i, 0), f.file_ext = text(p, i, 1), f.document_loader_name = text(p, i, 2);
        f.text_splitter_name = text(p, i, 3), f.sha256 = text(p, i, 4);
        f.file_version = i64(p, i, 5), f.file_size = i64(p, i, 6), f.docs_count = i64(p, i, 7);
        f.file_mtime = f64(p, i, 8), f.create_time = text(p, i, 9);
        out.push_back(std::move(f));
    }
    return out;
}

bool PgStore::set_kb_info(const std::string& kb_name, const std::string& info) {
    auto r = impl_->exec("UPDATE knowledge_base SET kb_info = $2 WHERE kb_name = $1", {kb_name, info});
    return std::string(PQcmdTuples(r.get())) != "0";
}

namespace {

// The BM25 side of a KB's content: each chunk's tokens, each token's chunk count (df) and
// the total length (FTS5's avgdl = term_total / chunks).
struct KbTerms {
    std::vector<ChunkTerms> chunks;
    std::unordered_map<std::string, int64_t> df;
    int64_t term_total = 0;
};
KbTerms count_kb_terms(const PgKbContent& c) {
    KbTerms k;
    k.chunks.reserve(c.chunks.size());
    for (auto& ch : c.chunks) {
        k.chunks.push_back(count_chunk_terms(ch.text));
        for (auto& [t, n] : k.chunks.back().tf) ++k.df[t];
        k.term_total += k.chunks.back().length;
    }
    return k;
}

// Writes of one KB queue on this lock (released at the transaction's end).
void lock_kb(const Conn& im, const std::string& kb_name) {
    im.exec("SELECT pg_advisory_xact_lock($1, hashtext($2))", {std::to_string(kLockKb), kb_name});
}

// Rebuild steps (inside its transaction): `ids` are the chunks' ids, in content order.
void copy_chunks(const Conn& im, int64_t kb_id, const PgKbContent& c, const std::vector<int64_t>& ids, const KbTerms& terms) {
    CopyIn copy(im, "COPY kb_chunks(id, kb_id, file_name, chunk_index, text, metadata, start_char, end_char, token_count, term_count) FROM STDIN");
    for (size_t i = 0; i < c.chunks.size(); ++i) {
        auto& ch = c.chunks[i];
        copy.num(ids[i]).num(kb_id).text(ch.file_name).num(ch.chunk_index).text(ch.text).text(ch.metadata_json)
            .num(ch.start_char).num(ch.end_char).num(static_cast<int64_t>(count_terms(ch.text))).num(terms.chunks[i].length);
        copy.end_row();
    }
    copy.finish();
}
void copy_bm25(const Conn& im, int64_t kb_id, const std::vector<int64_t>& ids, const KbTerms& terms) {
    CopyIn df(im, "COPY kb_terms(kb_id, term, df) FROM STDIN");
    for (auto& [t, n] : terms.df) {
        df.num(kb_id).text(t).num(n);
        df.end_row();
    }
    df.finish();
    CopyIn postings(im, "COPY kb_postings(kb_id, term, chunk_id, tf, doc_len) FROM STDIN");
    for (size_t i = 0; i < ids.size(); ++i)
        for (auto& [t, n] : terms.chunks[i].tf) {
            postings.num(kb_id).text(t).num(ids[i]).num(n).num(terms.chunks[i].length);
            postings.end_row();
        }
    postings.finish();
}
// A new table `vt`, filled, then indexed: a bulk HNSW build is ~13x faster than inserting
// into an indexed table (10k x 1024). Searches read the previous table meanwhile.
void write_vectors(const Conn& im, const std::string& vt, const PgKbContent& c, const std::vector<int64_t>& ids) {
    im.exec("CREATE TABLE " + vt + "(chunk_id BIGINT PRIMARY KEY, embedding vector(" + std::to_string(c.dim) + ") NOT NULL)");
    CopyIn copy(im, "COPY " + vt + "(chunk_id, embedding) FROM STDIN");
    for (size_t i = 0; i < c.chunks.size(); ++i) {
        copy.num(ids[i]).text(vector_literal(c.chunks[i].embedding));
        copy.end_row();
    }
    copy.finish();
    if (c.dim > kHnswMaxDim) return;   // scanned exactly
    // The graph is built in memory when it fits (pgvector warns and goes slower if not).
    im.exec("SELECT set_config('maintenance_work_mem', $1, true)", {std::string(kIndexBuildMemory)});
    im.exec("CREATE INDEX " + vt + "_hnsw ON " + vt + " USING hnsw (embedding vector_cosine_ops)");
}
void copy_files(const Conn& im, const PgKbContent& c) {
    CopyIn copy(im, "COPY knowledge_file(file_name, file_ext, kb_name, document_loader_name, text_splitter_name, "
                    "file_version, file_mtime, file_size, docs_count, sha256) FROM STDIN");
    for (auto& f : c.files) {
        copy.text(f.file_name).text(f.file_ext).text(c.kb_name).text(f.document_loader_name).text(f.text_splitter_name)
            .num(f.file_version).num(f.file_mtime).num(f.file_size).num(f.docs_count).text(f.sha256);
        copy.end_row();
    }
    copy.finish();
}

}  // namespace

void PgStore::rebuild_kb(const PgKbContent& c) {
    Impl& im = *impl_;
    check_content(c, im.where);
    const KbTerms terms = count_kb_terms(c);   // before the transaction: its locks are held for the writes only

    Transaction tx(im);
    lock_kb(im, c.kb_name);
    auto row = im.exec("SELECT id, generation, old_vectors_table FROM knowledge_base WHERE kb_name = $1 FOR UPDATE", {c.kb_name});
    int64_t id = 0, generation = 0;
    if (PQntuples(row.get()) > 0) {
        id = i64(row.get(), 0, 0);
        generation = i64(row.get(), 0, 1);
        // Two generations back: no reader can still be on it (one that began before the
        // previous commit reads the previous table, which stays until the next rebuild).
        if (std::string old = text(row.get(), 0, 2); !old.empty()) im.exec("DROP TABLE IF EXISTS " + old);
    } else {
        auto ins = im.exec("INSERT INTO knowledge_base(kb_name, kb_info, vs_type, embed_model) VALUES ($1, $2, 'pg', $3) RETURNING id",
                           {c.kb_name, c.kb_info.empty() ? "关于" + c.kb_name + "的知识库" : c.kb_info, c.embed_model});
        id = i64(ins.get(), 0, 0);
    }
    const std::string kb_id = std::to_string(id);
    for (const char* sql : {"DELETE FROM kb_postings WHERE kb_id = $1", "DELETE FROM kb_terms WHERE kb_id = $1",
                            "DELETE FROM kb_chunks WHERE kb_id = $1"})
        im.exec(sql, {kb_id});
    im.exec("DELETE FROM knowledge_file WHERE kb_name = $1", {c.kb_name});

    auto id_rows = im.exec("SELECT nextval(pg_get_serial_sequence('kb_chunks', 'id')) FROM generate_series(1, $1)",
                           {std::to_string(c.chunks.size())});
    std::vector<int64_t> ids(c.chunks.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = i64(id_rows.get(), static_cast<int>(i), 0);
    copy_chunks(im, id, c, ids, terms);
    copy_bm25(im, id, ids, terms);
    const std::string vt = c.dim > 0 ? vectors_table(id, generation + 1) : "";
    if (!vt.empty()) write_vectors(im, vt, c, ids);
    copy_files(im, c);
    im.exec("UPDATE knowledge_base SET kb_info = COALESCE(NULLIF($2, ''), kb_info), vs_type = 'pg', embed_model = $3, "
            "file_count = $4, chunk_size = $5, chunk_overlap = $6, dim = $7, chunk_count = $8, term_total = $9, "
            "generation = generation + 1, old_vectors_table = vectors_table, vectors_table = NULLIF($10, '') WHERE id = $1",
            {kb_id, c.kb_info, c.embed_model, std::to_string(c.files.size()), std::to_string(c.chunk_size),
             std::to_string(c.chunk_overlap), std::to_string(c.dim), std::to_string(c.chunks.size()),
             std::to_string(terms.term_total), vt});
    tx.commit();
}

bool PgStore::drop_kb(const std::string& kb_name) {
    Impl& im = *impl_;
    Transaction tx(im);
    lock_kb(im, kb_name);
    auto row = im.exec("SELECT id, vectors_table, old_vectors_table FROM knowledge_base WHERE kb_name = $1 FOR UPDATE", {kb_name});
    if (PQntuples(row.get()) == 0) return false;   // the transaction rolls back: nothing was written
    const int64_t id = i64(row.get(), 0, 0);
    for (int col : {1, 2})
        if (std::string t = text(row.get(), 0, col); !t.empty()) im.exec("DROP TABLE IF EXISTS " + t);
    // Chunks, terms, postings and files go with the row (ON DELETE CASCADE).
    im.exec("DELETE FROM knowledge_base WHERE id = $1", {std::to_string(id)});
    tx.commit();
    return true;
}

namespace {

// Rows of (id, score, file_name, chunk_index, text, start_char, end_char) -> hits.
std::vector<SearchHit> read_hits(const PGresult* r, const std::string& kb, bool dense) {
    std::vector<SearchHit> out;
    for (int i = 0; i < PQntuples(r); ++i) {
        SearchHit h;
        h.chunk_id = i64(r, i, 0);
        h.score = f64(r, i, 1);
        h.kb = kb;
        h.file_name = text(r, i, 2);
        h.chunk_index = i64(r, i, 3);
        h.text = text(r, i, 4);
        h.start_char = i64(r, i, 5);
        h.end_char = i64(r, i, 6);
        (dense ? h.cosine : h.bm25) = h.score;
        (dense ? h.dense_rank : h.bm25_rank) = out.size() + 1;
        out.push_back(std::move(h));
    }
    return out;
}

[[noreturn]] void no_such_kb(const std::string& where, const std::string& kb) {
    throw DataError(ErrorInfo{where}.at("knowledge base '" + kb + "'").msg("not in the database")
                        .hint("build it first (PgStore::rebuild_kb)"));
}

}  // namespace

std::vector<SearchHit> PgStore::dense_top_k(const std::string& kb_name, const std::vector<float>& query, size_t k,
                                            const PgSearchOptions& o) {
    Impl& im = *impl_;
    Transaction tx(im, /*read_only=*/true);   // one snapshot: the KB's row and its vectors
    auto kb = kb_info(kb_name);
    if (!kb) no_such_kb(im.where, kb_name);
    if (kb->dim == 0)
        throw UsageError(ErrorInfo{im.where}.at("knowledge base '" + kb_name + "'").msg("has no vectors (embed_model none)")
                             .hint("use BM25, or rebuild it with an embedding model"));
    if (static_cast<int64_t>(query.size()) != kb->dim)
        throw UsageError(ErrorInfo{im.where}.at("dense query of '" + kb_name + "'").expected(std::to_string(kb->dim) + " floats")
                             .found(std::to_string(query.size())).hint("embed the query with the KB's embed_model (" + kb->embed_model + ")"));
    if (k == 0) return {};
    const bool exact = o.exact || static_cast<int64_t>(k) > kMaxEfSearch || kb->dim > kHnswMaxDim;
    const int64_t ef = std::clamp<int64_t>(std::max<int64_t>(o.hnsw_ef_search, static_cast<int64_t>(k)), 1, kMaxEfSearch);
    // Per transaction: the HNSW candidate list, and for an exact search no index scan at all.
    im.exec("SELECT set_config('hnsw.ef_search', $1, true), set_config('enable_indexscan', $2, true)",
            {std::to_string(ef), std::string(exact ? "off" : "on")});
    const std::string& vt = kb->vectors_table;
    auto r = im.exec("SELECT c.id, 1 - v.d, c.file_name, c.chunk_index, c.text, c.start_char, c.end_char FROM "
                     "(SELECT chunk_id, embedding <=> $1::vector AS d FROM " + vt + " ORDER BY embedding <=> $1::vector LIMIT $2) v "
                     "JOIN kb_chunks c ON c.id = v.chunk_id ORDER BY v.d, c.id",
                     {vector_literal(query), std::to_string(k)});
    tx.commit();
    return read_hits(r.get(), kb_name, true);
}

std::vector<SearchHit> PgStore::bm25_top_k(const std::string& kb_name, const std::string& query, size_t k, const PgSearchOptions& o) {
    Impl& im = *impl_;
    Transaction tx(im, /*read_only=*/true);   // one snapshot: the counts and the postings of one rebuild
    auto kb = kb_info(kb_name);
    if (!kb) no_such_kb(im.where, kb_name);
    std::vector<std::string> terms = detail::distinct_query_terms(query);
    if (k == 0 || terms.empty() || kb->chunk_count == 0) return {};
    auto dfr = im.exec("SELECT term, df FROM kb_terms WHERE kb_id = $1 AND term = ANY($2::text[])",
                       {std::to_string(kb->id), text_array_literal(terms)});
    std::unordered_map<std::string, int64_t> found;
    for (int i = 0; i < PQntuples(dfr.get()); ++i) found[text(dfr.get(), i, 0)] = i64(dfr.get(), i, 1);
    std::vector<std::pair<int64_t, std::string>> df;
    for (auto& t : terms) df.push_back({found.count(t) ? found[t] : 0, t});
    df = detail::keep_query_terms(std::move(df), kb->chunk_count, o.bm25_prune_df_ratio);
    if (df.empty()) return {};
    std::vector<std::string> kept;
    std::vector<double> idf;
    for (auto& [n, t] : df) {
        kept.push_back(t);
        idf.push_back(detail::fts5_idf(kb->chunk_count, n));
    }
    const double avg_len = static_cast<double>(kb->term_total) / static_cast<double>(kb->chunk_count);
    using detail::kBm25B;
    using detail::kBm25K1;
    // fts5_term_score's expression term by term ($3 = k1 + 1, $4 = k1, $5 = 1 - b, $6 = b,
    // $7 = mean length), so each term's share is the C++ value; only the order of the sum differs.
    auto r = im.exec(
        "SELECT c.id, s.score, c.file_name, c.chunk_index, c.text, c.start_char, c.end_char FROM ("
        " SELECT p.chunk_id, sum(q.idf * ((p.tf::float8 * $3::float8) / (p.tf::float8 + $4::float8 * ($5::float8 + $6::float8 * p.doc_len::float8 / $7::float8)))) AS score"
        " FROM unnest($2::text[], $8::float8[]) AS q(term, idf) JOIN kb_postings p ON p.kb_id = $1 AND p.term = q.term"
        " GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT $9) s "
        "JOIN kb_chunks c ON c.id = s.chunk_id ORDER BY s.score DESC, c.id",
        {std::to_string(kb->id), text_array_literal(kept), exact(kBm25K1 + 1.0), exact(kBm25K1), exact(1 - kBm25B), exact(kBm25B),
         exact(avg_len), float_array_literal(idf), std::to_string(k)});
    tx.commit();
    return read_hits(r.get(), kb_name, false);
}

std::vector<SearchHit> PgStore::list_chunks(const std::string& kb_name, const std::string& like) {
    auto r = impl_->exec("SELECT c.id, 0, c.file_name, c.chunk_index, c.text, c.start_char, c.end_char FROM kb_chunks c "
                         "JOIN knowledge_base k ON k.id = c.kb_id WHERE k.kb_name = $1 AND ($2 = '' OR c.file_name ILIKE $2) "
                         "ORDER BY c.file_name COLLATE \"C\", c.chunk_index", {kb_name, like});
    std::vector<SearchHit> out = read_hits(r.get(), kb_name, false);
    for (auto& h : out) h.bm25.reset(), h.bm25_rank.reset();
    return out;
}

}  // namespace pdsd::kb
