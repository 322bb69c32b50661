// Conversations in SQLite, Chatchat's conversation/message tables; see conversations.h.
#include "pdsd/serve/conversations.h"

#include "pdsd/core/error.h"
#include "pdsd/kb/knowledge_base.h"

#include <sqlite3.h>

#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>

namespace pdsd::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Chatchat's models (server/db/models/{conversation,message}_model.py), column for column.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS conversation (
  id VARCHAR(32) NOT NULL PRIMARY KEY,
  name VARCHAR(50),
  chat_type VARCHAR(50),
  create_time DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS message (
  id VARCHAR(32) NOT NULL PRIMARY KEY,
  conversation_id VARCHAR(32),
  chat_type VARCHAR(50),
  query VARCHAR(4096),
  response VARCHAR(4096),
  meta_data JSON,
  feedback_score INTEGER DEFAULT -1,
  feedback_reason VARCHAR(255) DEFAULT '',
  create_time DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX IF NOT EXISTS ix_message_conversation_id ON message (conversation_id);
)sql";

std::string uuid_hex() {
    static std::mutex mu;
    static std::mt19937_64 rng{std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32)};
    std::lock_guard<std::mutex> lk(mu);
    uint64_t a = rng(), b = rng();
    a = (a & ~0xF000ull) | 0x4000ull;                              // version 4 (in the third group)
    b = (b & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;       // RFC 4122 variant
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
    return buf;
}

// One prepared statement; text binds by position (1-based), finalised on scope exit.
class Stmt {
public:
    Stmt(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path) {
        if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK) fail("prepare");
    }
    ~Stmt() { sqlite3_finalize(st_); }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    Stmt& bind(int i, const std::string& v) {
        sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind(int i, int64_t v) {
        sqlite3_bind_int64(st_, i, v);
        return *this;
    }
    bool step() {   // true: a row is ready
        int rc = sqlite3_step(st_);
        if (rc == SQLITE_ROW) return true;
        if (rc != SQLITE_DONE) fail("step");
        return false;
    }
    std::string text(int col) const {
        const unsigned char* p = sqlite3_column_text(st_, col);
        return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(st_, col))) : std::string();
    }
    int64_t integer(int col) const { return sqlite3_column_int64(st_, col); }
    [[noreturn]] void fail(const char* what) const {
        throw IoError(ErrorInfo{path_}.msg(std::string("SQLite ") + what + " failed").found(sqlite3_errmsg(db_))
                          .hint("is the file writable, and not another program's database?"));
    }

private:
    sqlite3* db_;
    const std::string& path_;
    sqlite3_stmt* st_ = nullptr;
};

constexpr const char* kIdChars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";

constexpr const char* kMessageColumns =
    "id, conversation_id, chat_type, query, response, meta_data, feedback_score, feedback_reason, create_time";

Message read_message(const Stmt& s) {
    Message m{s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), json::object(), static_cast<int>(s.integer(6)), s.text(7), s.text(8)};
    json meta = json::parse(s.text(5), nullptr, /*allow_exceptions=*/false);
    if (meta.is_object()) m.meta_data = std::move(meta);
    return m;
}

void check_name(const std::string& name) {
    if (name.empty()) throw UsageError(ErrorInfo{}.at("name").msg("a conversation name must not be empty"));
    if (utf8_chars(name) > ConversationStore::kMaxNameChars)
        throw UsageError(ErrorInfo{}.at("name").msg("conversation name too long")
                             .expected("at most " + std::to_string(ConversationStore::kMaxNameChars) + " characters (Chatchat's String(50))")
                             .found(std::to_string(utf8_chars(name)) + " characters"));
}

[[noreturn]] void unknown(const char* what, const std::string& id) {
    throw IoError(ErrorInfo{}.at(std::string(what) + "_id").msg(std::string("no ") + what + " '" + id + "'")
                      .hint("list them with GET /chat/conversations"));
}

}  // namespace

size_t utf8_chars(const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;   // count the bytes that start a code point
    return n;
}

json to_json(const Conversation& c) {
    return {{"id", c.id}, {"name", c.name}, {"chat_type", c.chat_type}, {"create_time", c.create_time}};
}

json to_json(const Message& m) {
    return {{"id", m.id}, {"conversation_id", m.conversation_id}, {"chat_type", m.chat_type}, {"query", m.query},
            {"response", m.response}, {"meta_data", m.meta_data}, {"feedback_score", m.feedback_score},
            {"feedback_reason", m.feedback_reason}, {"create_time", m.create_time}};
}

struct ConversationStore::Impl {
    std::string path;
    sqlite3* db = nullptr;
    mutable std::mutex mu;

    void exec(const char* sql) {
        char* err = nullptr;
        if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
            std::string e = err ? err : "unknown";
            sqlite3_free(err);
            throw IoError(ErrorInfo{path}.msg("SQLite failed").found(e).hint("is the file a pdsd/Chatchat conversations database?"));
        }
    }
    Stmt stmt(const char* sql) const { return Stmt(db, path, sql); }
    size_t changes() const { return static_cast<size_t>(sqlite3_changes(db)); }
};

ConversationStore::ConversationStore(const std::string& root) : impl_(std::make_unique<Impl>()) {
    const std::string dir = kb::KbPaths{root}.kb_root();
    std::error_code ec;
    fs::create_directories(dir, ec);
    impl_->path = (fs::path(dir) / "conversations.db").string();
    if (sqlite3_open_v2(impl_->path.c_str(), &impl_->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
        std::string e = impl_->db ? sqlite3_errmsg(impl_->db) : "out of memory";
        sqlite3_close(impl_->db);
        throw IoError(ErrorInfo{impl_->path}.msg("cannot open the conversations database").found(e)
                          .hint("check that " + dir + " is a writable folder"));
    }
    sqlite3_busy_timeout(impl_->db, 5000);   // ms: another pdsd process may hold the write lock
    impl_->exec(kSchema);
}

ConversationStore::~ConversationStore() { sqlite3_close(impl_->db); }

const std::string& ConversationStore::path() const { return impl_->path; }

Conversation ConversationStore::create(const std::string& name, const std::string& chat_type) {
    check_name(name);
    return insert(uuid_hex(), name, chat_type);
}

Conversation ConversationStore::adopt(const std::string& id, const std::string& name, const std::string& chat_type) {
    if (id.empty() || id.size() > 32 || id.find_first_not_of(kIdChars) != std::string::npos)
        throw UsageError(ErrorInfo{}.at("conversation_id").msg("bad conversation id").expected("1..32 characters of 0-9 a-z A-Z _ - (Chatchat's uuid4 hex)")
                             .found("'" + id + "'"));
    check_name(name);
    if (auto c = get(id)) return *c;
    return insert(id, name, chat_type);
}

Conversation ConversationStore::insert(const std::string& id, const std::string& name, const std::string& chat_type) {
    std::lock_guard<std::mutex> lk(impl_->mu);
    // OR IGNORE: two first turns of one adopted id racing make one row.
    impl_->stmt("INSERT OR IGNORE INTO conversation (id, name, chat_type) VALUES (?, ?, ?)").bind(1, id).bind(2, name).bind(3, chat_type).step();
    auto s = impl_->stmt("SELECT id, name, chat_type, create_time FROM conversation WHERE id = ?");
    s.bind(1, id);
    s.step();
    return Conversation{s.text(0), s.text(1), s.text(2), s.text(3)};
}

std::vector<Conversation> ConversationStore::list() const {
    std::lock_guard<std::mutex> lk(impl_->mu);
    auto s = impl_->stmt("SELECT id, name, chat_type, create_time FROM conversation ORDER BY rowid DESC");
    std::vector<Conversation> out;
    while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.text(3)});
    return out;
}

std::optional<Conversation> ConversationStore::get(const std::string& id) const {
    std::lock_guard<std::mutex> lk(impl_->mu);
    auto s = impl_->stmt("SELECT id, name, chat_type, create_time FROM conversation WHERE id = ?");
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return Conversation{s.text(0), s.text(1), s.text(2), s.text(3)};
}

void ConversationStore::rename(const std::string& id, const std::string& name) {
    check_name(name);
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stmt("UPDATE conversation SET name = ? WHERE id = ?").bind(1, name).bind(2, id).step();
    if (impl_->changes() == 0) unknown("conversation", id);
}

void ConversationStore::remove(const std::string& id) {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stmt("DELETE FROM conversation WHERE id = ?").bind(1, id).step();
    if (impl_->changes() == 0) unknown("conversation", id);
    impl_->stmt("DELETE FROM message WHERE conversation_id = ?").bind(1, id).step();
}

Message ConversationStore::add_message(const std::string& conversation_id, const std::string& chat_type, const std::string& query,
                                       const json& meta_data) {
    if (!get(conversation_id)) unknown("conversation", conversation_id);
    std::lock_guard<std::mutex> lk(impl_->mu);
    const std::string id = uuid_hex();
    const json meta = meta_data.is_object() ? meta_data : json::object();
    impl_->stmt("INSERT INTO message (id, conversation_id, chat_type, query, response, meta_data) VALUES (?, ?, ?, ?, '', ?)")
        .bind(1, id).bind(2, conversation_id).bind(3, chat_type).bind(4, query)
        .bind(5, meta.dump(-1, ' ', false, json::error_handler_t::replace)).step();
    auto s = impl_->stmt((std::string("SELECT ") + kMessageColumns + " FROM message WHERE id = ?").c_str());
    s.bind(1, id);
    s.step();
    return read_message(s);
}

void ConversationStore::set_response(const std::string& message_id, const std::string& response) {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stmt("UPDATE message SET response = ? WHERE id = ?").bind(1, response).bind(2, message_id).step();
    if (impl_->changes() == 0) unknown("message", message_id);
}

std::vector<Message> ConversationStore::messages(const std::string& conversation_id) const {
    std::lock_guard<std::mutex> lk(impl_->mu);
    auto s = impl_->stmt((std::string("SELECT ") + kMessageColumns + " FROM message WHERE conversation_id = ? ORDER BY rowid").c_str());
    s.bind(1, conversation_id);
    std::vector<Message> out;
    while (s.step()) out.push_back(read_message(s));
    return out;
}

std::optional<Message> ConversationStore::message(const std::string& message_id) const {
    std::lock_guard<std::mutex> lk(impl_->mu);
    auto s = impl_->stmt((std::string("SELECT ") + kMessageColumns + " FROM message WHERE id = ?").c_str());
    s.bind(1, message_id);
    if (!s.step()) return std::nullopt;
    return read_message(s);
}

void ConversationStore::feedback(const std::string& message_id, int score, const std::string& reason) {
    if (score < 0 || score > 100)
        throw UsageError(ErrorInfo{}.at("score").msg("feedback score out of range").expected("0..100 (Chatchat's scale: 100 = 👍, 0 = 👎)")
                             .found(std::to_string(score)));
    if (utf8_chars(reason) > kMaxReasonChars)
        throw UsageError(ErrorInfo{}.at("reason").msg("feedback reason too long")
                             .expected("at most " + std::to_string(kMaxReasonChars) + " characters").found(std::to_string(utf8_chars(reason))));
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stmt("UPDATE message SET feedback_score = ?, feedback_reason = ? WHERE id = ?").bind(1, int64_t{score}).bind(2, reason).bind(3, message_id).step();
    if (impl_->changes() == 0) unknown("message", message_id);
}

size_t ConversationStore::truncate_from(const std::string& conversation_id, const std::string& message_id) {
    std::lock_guard<std::mutex> lk(impl_->mu);
    auto s = impl_->stmt("SELECT rowid FROM message WHERE id = ? AND conversation_id = ?");
    s.bind(1, message_id).bind(2, conversation_id);
    if (!s.step()) unknown("message", message_id);
    const int64_t from = s.integer(0);
    impl_->stmt("DELETE FROM message WHERE conversation_id = ? AND rowid >= ?").bind(1, conversation_id).bind(2, from).step();
    return impl_->changes();
}

std::string ConversationStore::export_markdown(const std::string& conversation_id) const {
    std::optional<Conversation> c = get(conversation_id);
    if (!c) unknown("conversation", conversation_id);
    std::ostringstream md;
    md << "# " << c->name << "\n\n- chat_type: " << c->chat_type << "\n- create_time: " << c->create_time << " (UTC)\n";
    for (const Message& m : messages(conversation_id)) {
        md << "\n## 问 / Q\n\n" << m.query << "\n\n## 答 / A\n\n" << m.response << "\n";
        if (auto d = m.meta_data.find("docs"); d != m.meta_data.end() && d->is_array() && !d->empty()) {
            md << "\n<details><summary>出处 / Sources</summary>\n\n";
            for (auto& doc : *d) md << (doc.is_string() ? doc.get<std::string>() : doc.dump()) << "\n\n";
            md << "</details>\n";
        }
        if (m.feedback_score >= 0)
            md << "\n> feedback: " << m.feedback_score << "/100" << (m.feedback_reason.empty() ? "" : " — " + m.feedback_reason) << "\n";
    }
    return md.str();
}

}  // namespace pdsd::serve
