// The PostgreSQL store when pdsd is built without libpq (libpq-dev not found by CMake):
// every entry point says so (pdsd/kb/pg_store.h). pg_store.cpp is the real one.
#include "pdsd/kb/pg_store.h"

#include "pdsd/core/error.h"

namespace pdsd::kb {

namespace {
[[noreturn]] void no_libpq(const std::string& where) {
    throw ConfigError(ErrorInfo{where}.at("vs_type").msg("this pdsd was built without libpq, so it has no PostgreSQL store")
                          .found("pg").hint("install libpq-dev (scripts/setup.sh does) and rebuild, or set vs_type: faiss"));
}
}  // namespace

struct PgStore::Impl {};

bool pg_store_available() { return false; }
std::string pg_dsn_from_settings(const KbSettings&, const std::string& settings_path) { no_libpq(settings_path); }
PgStore::PgStore(const std::string&) { no_libpq("PostgreSQL store"); }
PgStore::~PgStore() = default;
const std::string& PgStore::describe() const { no_libpq("PostgreSQL store"); }
void PgStore::ensure_schema() { no_libpq("PostgreSQL store"); }
void PgStore::rebuild_kb(const PgKbContent&) { no_libpq("PostgreSQL store"); }
bool PgStore::drop_kb(const std::string&) { no_libpq("PostgreSQL store"); }
std::optional<PgKbInfo> PgStore::kb_info(const std::string&) { no_libpq("PostgreSQL store"); }
std::vector<PgKbInfo> PgStore::list_kbs() { no_libpq("PostgreSQL store"); }
std::vector<PgFile> PgStore::list_files(const std::string&) { no_libpq("PostgreSQL store"); }
bool PgStore::set_kb_info(const std::string&, const std::string&) { no_libpq("PostgreSQL store"); }
std::vector<SearchHit> PgStore::list_chunks(const std::string&, const std::string&) { no_libpq("PostgreSQL store"); }
std::vector<SearchHit> PgStore::dense_top_k(const std::string&, const std::vector<float>&, size_t, const PgSearchOptions&) {
    no_libpq("PostgreSQL store");
}
std::vector<SearchHit> PgStore::bm25_top_k(const std::string&, const std::string&, size_t, const PgSearchOptions&) {
    no_libpq("PostgreSQL store");
}

}  // namespace pdsd::kb
