// The pg_server CTest fixture's PostgreSQL (scripts/pg_test_server.sh) for the tests of the
// PostgreSQL store: its DSN and password, raw libpq for checks the store's API does not
// offer, and a test base that works in a schema of its own (so ctest -j runs tests side by
// side). Without a server the tests skip with the fixture's reason.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace pdsd::test {

inline std::string slurp_trimmed(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

// The fixture's server: its DSN and password (exported as PGPASSWORD), or why there is none.
struct PgServer {
    std::string dsn, password, skip, dir;
};
inline const PgServer& server() {
    static const PgServer s = [] {
        PgServer r;
        // $PDSD_PG_TEST_DIR, else the fixture's folder in the build tree.
        const char* env = std::getenv("PDSD_PG_TEST_DIR");
        r.dir = env && *env ? env : PDSD_PG_TEST_DIR;
        r.dsn = slurp_trimmed(r.dir + "/dsn");
        r.password = slurp_trimmed(r.dir + "/password");
        if (r.dsn.empty()) {
            std::string why = slurp_trimmed(r.dir + "/skip");
            r.skip = why.empty() ? "no PostgreSQL test server (see the output of the pg_server_start test)" : why;
            return r;
        }
        ::setenv("PGPASSWORD", r.password.c_str(), 1);
        return r;
    }();
    return s;
}

// The first row's first value of `sql` ("" when none).
inline std::string sql_value(const std::string& dsn, const std::string& sql) {
    PGconn* c = PQconnectdb(dsn.c_str());
    EXPECT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    PGresult* r = PQexec(c, sql.c_str());
    auto st = PQresultStatus(r);
    EXPECT_TRUE(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) << sql << ": " << PQresultErrorMessage(r);
    std::string v = (st == PGRES_TUPLES_OK && PQntuples(r) > 0) ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    PQfinish(c);
    return v;
}

// A test of its own: a fresh schema (dropped at the end) first on the search_path, pgvector
// from public (the fixture made the extension there). dsn_ connects into it.
class PgSchemaTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!server().skip.empty()) GTEST_SKIP() << server().skip;
        std::string n = ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        schema_ = "t_" + n + "_" + std::to_string(::getpid());
        sql_value(server().dsn, "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE; CREATE SCHEMA " + schema_);
        dsn_ = server().dsn + "?options=-csearch_path%3D" + schema_ + "%2Cpublic";
    }
    void TearDown() override {
        if (!schema_.empty()) sql_value(server().dsn, "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    }
    std::string schema_, dsn_;
};

}  // namespace pdsd::test
