// Minimal RAII wrapper over sqlite3 for the kb module (private header).
#pragma once

#include "pdsd/core/error.h"

#include <sqlite3.h>

#include <cstdint>
#include <string>

namespace pdsd::kb::detail {

class Db {
public:
    explicit Db(const std::string& path, bool create) : path_(path) {
        int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
        if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
            std::string m = db_ ? sqlite3_errmsg(db_) : "out of memory";
            sqlite3_close(db_);
            db_ = nullptr;
            throw IoError(ErrorInfo{path}.msg("cannot open the knowledge-base database").found(m)
                              .hint(create ? "check that the folder is writable" : "run `pdsd init` and `pdsd kb -r` first"));
        }
        sqlite3_busy_timeout(db_, 10000);
    }
    ~Db() { if (db_) sqlite3_close_v2(db_); }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    sqlite3* get() const { return db_; }
    const std::string& path() const { return path_; }

    void exec(const std::string& sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            std::string m = err ? err : "unknown";
            sqlite3_free(err);
            throw IoError(ErrorInfo{path_}.at(sql.substr(0, 80)).msg("SQLite error").found(m));
        }
    }
    [[noreturn]] void fail(const std::string& what) const { fail(what, sqlite3_errmsg(db_)); }
    [[noreturn]] void fail(const std::string& what, const std::string& sqlite_message) const {
        throw IoError(ErrorInfo{path_}.at(what.substr(0, 80)).msg("SQLite error").found(sqlite_message));
    }

private:
    std::string path_;
    sqlite3* db_ = nullptr;
};

class Stmt {
public:
    Stmt(Db& db, const std::string& sql) : db_(db), sql_(sql) {
        if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &st_, nullptr) != SQLITE_OK) db.fail(sql);
    }
    ~Stmt() { sqlite3_finalize(st_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int i, int64_t v) { check(sqlite3_bind_int64(st_, i, v)); return *this; }
    Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
    Stmt& bind(int i, size_t v) { return bind(i, static_cast<int64_t>(v)); }
    Stmt& bind(int i, double v) { check(sqlite3_bind_double(st_, i, v)); return *this; }
    Stmt& bind(int i, const std::string& v) {
        check(sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
        return *this;
    }
    // true while a row is available
    bool step() {
        int rc = sqlite3_step(st_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        // Reset before throwing: a statement left in its error state answers every later
        // bind with SQLITE_MISUSE, so one failed file would fail the next ones too.
        std::string message = sqlite3_errmsg(db_.get());
        reset();
        db_.fail(sql_, message);
    }
    void run() { step(); reset(); }
    void reset() { sqlite3_reset(st_); sqlite3_clear_bindings(st_); }
    int64_t i64(int c) const { return sqlite3_column_int64(st_, c); }
    double f64(int c) const { return sqlite3_column_double(st_, c); }
    std::string text(int c) const {
        auto p = reinterpret_cast<const char*>(sqlite3_column_text(st_, c));
        return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st_, c))) : std::string();
    }
    // A BLOB column's bytes, valid until the next step/reset; n = its length.
    const unsigned char* blob(int c, size_t& n) const {
        auto p = static_cast<const unsigned char*>(sqlite3_column_blob(st_, c));
        n = static_cast<size_t>(sqlite3_column_bytes(st_, c));
        return p;
    }

private:
    void check(int rc) { if (rc != SQLITE_OK) db_.fail(sql_); }
    Db& db_;
    std::string sql_;
    sqlite3_stmt* st_ = nullptr;
};

}  // namespace pdsd::kb::detail
