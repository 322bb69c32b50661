// Private to src/serve: the web page's own routes, beside the OpenAI / Chatchat ones.
//
//   GET  /chat/conversations                             {"code":200,"msg","data":[conversation]} newest first
//   POST /chat/conversations/create   {name, chat_type}  data: the conversation
//   POST /chat/conversations/rename   {conversation_id, name}
//   POST /chat/conversations/delete   {conversation_id}  (its messages too)
//   GET  /chat/conversations/messages?conversation_id=   data: [message] oldest first
//   POST /chat/conversations/truncate {conversation_id, message_id}
//                                                        drops that turn and later ones (regenerate, edit-and-resend)
//   GET  /chat/conversations/export?conversation_id=     text/markdown attachment
//   POST /chat/feedback               {message_id, score 0..100, reason}   Chatchat's route, same body
//   GET  /vendor/<file>                                  the page's JavaScript/CSS (share/web/vendor, embedded)
//
// Rows are Chatchat's (conversations.h). The chat routes record a turn through begin_turn /
// end_turn when their body names a conversation_id (Chatchat's chat requests carry one).
// Errors are thrown (UsageError -> 400, IoError -> 404) for the server's route wrapper.
#pragma once

#include "pdsd/serve/conversations.h"

#include "route_set.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace pdsd::serve {

class WebApp {
public:
    explicit WebApp(std::string root) : root_(std::move(root)) {}

    // Registers the routes above through the server's `get` / `post` (auth, errors, metrics).
    void add_routes(const AddRoute& get, const AddRoute& post);

    // A chat request whose body has a non-empty "conversation_id": records `query` (and
    // `meta_data`, e.g. {"docs": [...]}) as a new message and returns its id; "" when the body
    // names none. A conversation id the store has not seen is adopted (made with that id, named
    // after the query), as Chatchat stores the turns of the ids its clients make up;
    // UsageError (400) for an id that cannot be one (conversations.h), before any generation.
    std::string begin_turn(const nlohmann::json& body, const std::string& chat_type, const std::string& query,
                           const nlohmann::json& meta_data = nlohmann::json::object());
    // Stores the answer of turn `message_id` ("" : nothing to do). Never throws (it runs at the
    // end of a stream; a conversation deleted meanwhile is logged and skipped).
    void end_turn(const std::string& message_id, const std::string& response);

    // Paths the browser loads without an Authorization header (<script src>): the vendored files.
    static bool is_public_path(const std::string& path);

    ConversationStore& store();   // opened on first use (a server that never sees the page makes no file)

private:
    std::string root_;
    std::mutex open_mu_;
    std::unique_ptr<ConversationStore> store_;
};

}  // namespace pdsd::serve
