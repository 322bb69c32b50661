// Conversations of the web page, kept server-side the way Langchain-Chatchat keeps them:
// <root>/knowledge_base/conversations.db (SQLite) with Chatchat's two tables
//
//   conversation(id, name, chat_type, create_time)
//   message(id, conversation_id, chat_type, query, response, meta_data, feedback_score,
//           feedback_reason, create_time)
//
// Ids are uuid4 hex (32 characters, Chatchat's String(32)); create_time is SQLite's
// CURRENT_TIMESTAMP ("YYYY-MM-DD HH:MM:SS", UTC, what Chatchat's func.now() stores);
// feedback_score is -1 until rated, then 0..100 (Chatchat: "the higher the better");
// meta_data is a JSON object (pdsd stores the sources of a KB / file chat turn under "docs").
// One turn (a query and its answer) is one message row. Messages keep insertion order.
//
//   ConversationStore s(root);                       // opens or creates the database
//   auto c = s.create("新对话", "llm_chat");
//   auto m = s.add_message(c.id, "llm_chat", "你好", {});
//   s.set_response(m.id, "你好！");
//   s.feedback(m.id, 100, "good");
//
// Thread-safe (one connection behind a mutex). Bad input (a name over 50 characters, a
// score outside 0..100, an unknown id where one must exist) is a UsageError / IoError naming
// the field; the database failing is an IoError naming the file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pdsd::serve {

struct Conversation {
    std::string id;
    std::string name;
    std::string chat_type;     // llm_chat | kb_chat | file_chat (the page's modes)
    std::string create_time;
};

struct Message {
    std::string id;
    std::string conversation_id;
    std::string chat_type;
    std::string query;
    std::string response;
    nlohmann::json meta_data = nlohmann::json::object();
    int feedback_score = -1;   // -1: not rated; else 0..100
    std::string feedback_reason;
    std::string create_time;
};

nlohmann::json to_json(const Conversation& c);
nlohmann::json to_json(const Message& m);

class ConversationStore {
public:
    // The database of data root `root` (<root>/knowledge_base/conversations.db; folders made).
    explicit ConversationStore(const std::string& root);
    ~ConversationStore();
    ConversationStore(const ConversationStore&) = delete;
    ConversationStore& operator=(const ConversationStore&) = delete;

    static constexpr size_t kMaxNameChars = 50;      // Chatchat's conversation.name String(50)
    static constexpr size_t kMaxReasonChars = 255;   // Chatchat's message.feedback_reason String(255)

    const std::string& path() const;

    Conversation create(const std::string& name, const std::string& chat_type);
    // Conversation `id`, made with that id (and `name`, `chat_type`) when the store has none:
    // Chatchat's clients (its Streamlit page) make their own uuid4 hex ids and never create
    // them, and Chatchat stores their turns anyway. UsageError unless `id` is 1..32 characters
    // of [0-9A-Za-z_-].
    Conversation adopt(const std::string& id, const std::string& name, const std::string& chat_type);
    std::vector<Conversation> list() const;                       // newest first
    std::optional<Conversation> get(const std::string& id) const;
    void rename(const std::string& id, const std::string& name);  // IoError when unknown
    void remove(const std::string& id);                           // and its messages; IoError when unknown

    // A new turn of conversation `conversation_id` (IoError when unknown), response empty.
    Message add_message(const std::string& conversation_id, const std::string& chat_type, const std::string& query,
                        const nlohmann::json& meta_data);
    void set_response(const std::string& message_id, const std::string& response);   // IoError when unknown
    std::vector<Message> messages(const std::string& conversation_id) const;         // oldest first
    std::optional<Message> message(const std::string& message_id) const;
    // Chatchat's /chat/feedback: score 0..100, reason at most 255 characters.
    void feedback(const std::string& message_id, int score, const std::string& reason);
    // Regenerate / edit-and-resend: deletes `message_id` and every later turn of its
    // conversation. Returns how many rows went.
    size_t truncate_from(const std::string& conversation_id, const std::string& message_id);

    // The conversation as Markdown: "# name", then per turn "## 问 / Q", the query, "## 答 / A",
    // the answer, its sources and its feedback. IoError when unknown.
    std::string export_markdown(const std::string& conversation_id) const;

private:
    Conversation insert(const std::string& id, const std::string& name, const std::string& chat_type);
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Characters (code points) of UTF-8 text, for the column limits.
size_t utf8_chars(const std::string& s);

}  // namespace pdsd::serve
