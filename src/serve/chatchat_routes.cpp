// pdsd serve's Chatchat routes: the knowledge-base API, KB chat, file chat (temp KBs) and
// the web UI's server info, as Chatchat 0.3.1.3's ApiRequest calls them; the shared state is
// server_impl.h.
#include "server_impl.h"

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <string>

namespace pdsd::serve {

void Server::Impl::setup_kb() {
    get("/knowledge_base/list_knowledge_bases", [this](const httplib::Request&, httplib::Response& res) {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        json data = json::array();
        int64_t id = 0;
        for (auto& k : kb::list_knowledge_bases(root)) {
            ++id;
            if (!k.in_db) continue;
            data.push_back({{"id", id}, {"kb_name", k.name}, {"kb_info", k.info}, {"vs_type", k.vs_type},
                            {"embed_model", k.embed_model}, {"file_count", k.file_count}, {"create_time", k.create_time},
                            {"chunk_count", k.chunk_count}});
        }
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", data}});
    }, true);
    post("/knowledge_base/create_knowledge_base", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string vs = get_string(body, "vector_store_type").value_or("faiss");
        // faiss (Chatchat's default, what its clients send) or the root's own store (pg on a
        // vs_type: pg root); either way the KB goes to the store kb_settings.yaml names.
        if (vs != "faiss" && vs != kb::load_kb_settings(root).vs_type)
            throw bad_request("vector_store_type '" + vs + "' is not this data root's store (kb_settings.yaml vs_type)", "vector_store_type");
        std::string embed = get_string(body, "embed_model").value_or("");
        std::optional<std::string> info = get_string(body, "kb_info");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (db_embed_model(root, name)) throw HttpError{409, "已存在同名知识库 " + name, "invalid_request_error", "knowledge_base_name", "kb_exists"};
        kb::KbPaths paths{root};
        const bool existed = fs::exists(paths.kb_dir(name));
        try {
            fs::create_directories(paths.content_dir(name));
            kb::UpdateOptions u;
            u.kb_names = {name};
            u.mode = kb::UpdateMode::increment;
            u.embed_model = embed_for_new_kb(embed);
            u.progress = false;
            kb::update_knowledge_bases(root, u);
            if (info) kb::set_kb_info(root, name, *info);
        } catch (...) {
            // A failed create leaves nothing behind (a half-made folder would block the retry).
            std::error_code ec;
            if (!existed) fs::remove_all(paths.kb_dir(name), ec);
            throw;
        }
        reply_json(res, {{"code", 200}, {"msg", "已新增知识库 " + name}, {"data", nullptr}});
    }, true);
    post("/knowledge_base/delete_knowledge_base", [this](const httplib::Request& req, httplib::Response& res) {
        // Chatchat's body is the bare JSON string ("samples"); an object is accepted too.
        json body = parse_json_body(req);
        std::string name;
        if (body.is_string()) name = body.get<std::string>();
        else if (body.is_object()) name = require_string(body, "knowledge_base_name");
        else throw bad_request("the body must be the knowledge base name as a JSON string", "knowledge_base_name");
        validate_kb(name);
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (!kb::delete_knowledge_base(root, name)) throw kb_not_found(name);
        reply_json(res, {{"code", 200}, {"msg", "成功删除知识库 " + name}, {"data", nullptr}});
    }, true);
    get("/knowledge_base/list_files", [this](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("knowledge_base_name")) throw bad_request("'knowledge_base_name' is required", "knowledge_base_name");
        std::string name = validate_kb(req.get_param_value("knowledge_base_name"));
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        if (!db_embed_model(root, name)) throw kb_not_found(name);
        json data = json::array();
        int64_t no = 0;
        for (auto& f : kb::list_kb_files(root, name)) {
            data.push_back({{"No", ++no}, {"kb_name", name}, {"file_name", f.file_name}, {"file_ext", f.file_ext},
                            {"file_version", f.file_version}, {"document_loader", f.document_loader}, {"docs_count", f.docs_count},
                            {"text_splitter", f.text_splitter}, {"create_time", f.create_time.empty() ? json(nullptr) : json(f.create_time)},
                            {"in_folder", f.in_folder}, {"in_db", f.in_db}});
        }
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", data}});
    }, true);
    // Chatchat's search_docs: with a query, the search; without one but with file_name (SQL
    // LIKE) or metadata (first-level keys equal), that file's chunks (its list_docs, score 3.0
    // as DocumentWithVSId's default): the KB page's view of a file.
    post("/knowledge_base/search_docs", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string query = get_string(body, "query").value_or("");
        kb::SearchOptions so = chatchat_search_options(body, root);
        std::string file_name = get_string(body, "file_name").value_or("");
        json meta = json::object();
        if (const json* m = field(body, "metadata"); m && !m->is_null()) {
            if (!m->is_object()) throw bad_request("'metadata' must be an object of first-level keys (e.g. {\"source\": \"a.md\"})", "metadata");
            meta = *m;
        }
        auto doc = [](const kb::SearchHit& h, double score) {
            return json{{"id", std::to_string(h.chunk_id)}, {"page_content", h.text}, {"type", "Document"},
                        {"metadata", {{"source", h.file_name}, {"chunk_index", h.chunk_index}, {"start_char", h.start_char}, {"end_char", h.end_char}}},
                        {"score", score}};
        };
        json data = json::array();
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        if (!query.empty()) {
            for (auto& h : open_kb(root, name, "knowledge_base_name")->search(query, so)) {
                if (!h.kept) continue;
                // "score": Chatchat's distance (lower is better); metadata.pdsd: pdsd's own scores.
                json own{{"score", h.score}, {"search_mode", so.mode}};
                if (h.bm25) own["bm25"] = *h.bm25;
                if (h.cosine) own["cosine"] = *h.cosine;
                if (h.rerank) own["rerank"] = *h.rerank;   // cross-encoder relevance (the hits are in its order)
                json d = doc(h, chatchat_distance(h));
                d["metadata"]["pdsd"] = own;
                data.push_back(std::move(d));
            }
        } else if (!file_name.empty() || !meta.empty()) {
            std::vector<kb::SearchHit> rows;
            try {
                rows = kb::list_chunks(root, name, file_name);
            } catch (const DataError&) {
                throw kb_not_found(name);
            }
            for (auto& h : rows) {
                json d = doc(h, 3.0);
                bool match = true;
                for (auto& [k, v] : meta.items()) match = match && d["metadata"].contains(k) && d["metadata"][k] == v;
                if (match) data.push_back(std::move(d));
            }
        }
        reply_json(res, data);
    }, true);
    post("/knowledge_base/upload_docs", [this](const httplib::Request& req, httplib::Response& res) { upload_docs(req, res); }, true);
    post("/knowledge_base/delete_docs", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        const json* names = field(body, "file_names");
        if (!names || !names->is_array()) throw bad_request("'file_names' must be an array of strings", "file_names");
        std::vector<std::string> files;
        for (auto& n : *names) {
            if (!n.is_string()) throw bad_request("'file_names' must be an array of strings", "file_names");
            files.push_back(safe_relative_name(n.get<std::string>(), "file_names"));
        }
        get_bool(body, "delete_content");
        get_bool(body, "not_refresh_vs_cache");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        if (!fs::is_directory(paths.kb_dir(name))) throw kb_not_found(name);
        json failed = json::object();
        std::vector<std::string> existing;
        std::set<std::string> in_db;
        for (auto& f : kb::list_kb_files(root, name)) if (f.in_db || f.in_folder) in_db.insert(f.file_name);
        for (auto& f : files) {
            check_no_symlinks(paths.content_dir(name), f);
            if (!in_db.count(f)) failed[f] = "未找到文件 " + f;
            else existing.push_back(f);
        }
        if (!existing.empty()) {
            kb::UpdateOptions u;
            u.progress = false;
            for (auto& c : kb::remove_files(root, name, existing, u).files)
                if (c.action == "failed") failed[c.file] = c.note;
        }
        reply_json(res, {{"code", 200}, {"msg", "文件删除完成"}, {"data", {{"failed_files", failed}}}});
    }, true);
    post("/knowledge_base/recreate_vector_store", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        bool allow_empty = get_bool(body, "allow_empty_kb").value_or(true);
        std::string embed = get_string(body, "embed_model").value_or("");
        auto cs = get_int(body, "chunk_size", 1, 1 << 20);
        auto co = get_int(body, "chunk_overlap", 0, 1 << 20);
        get_string(body, "vs_type");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        if (!fs::is_directory(paths.content_dir(name))) {
            if (!allow_empty) throw HttpError{404, "未找到知识库 '" + name + "'", "not_found_error", "knowledge_base_name", "kb_not_found"};
            fs::create_directories(paths.content_dir(name));
        }
        kb::UpdateOptions u;
        u.kb_names = {name};
        u.mode = kb::UpdateMode::recreate;
        u.embed_model = embed_for_new_kb(embed);
        if (cs) u.chunk_size = *cs;
        if (co) u.chunk_overlap = *co;
        u.progress = false;
        kb::UpdateReport r = kb::update_knowledge_bases(root, u);
        // Chatchat streams one progress frame per file (sse_starlette); the work is done here
        // before the first frame, so the frames are a summary, one write each.
        std::vector<std::string> out;
        size_t n = 0, i = 0;
        for (auto& f : r.files) n += f.action != "removed";
        for (auto& f : r.files) {
            if (f.action == "removed") continue;
            ++i;
            if (f.action == "failed" || f.action == "skipped")
                out.push_back(sse({{"code", 500}, {"msg", "添加文件‘" + f.file + "’到知识库‘" + name + "’时出错：" + f.note + "。已跳过。"}}));
            else
                out.push_back(sse({{"code", 200}, {"msg", "(" + std::to_string(i) + " / " + std::to_string(n) + "): " + f.file},
                                   {"total", n}, {"finished", i}, {"doc", f.file}}));
        }
        reply_sse(res, std::move(out));
    }, true);
    get("/knowledge_base/download_doc", [this](const httplib::Request& req, httplib::Response& res) {
        std::string name = validate_kb(req.get_param_value("knowledge_base_name"));
        std::string file = safe_relative_name(req.get_param_value("file_name"), "file_name");
        bool preview = req.get_param_value("preview") == "true";
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        kb::KbPaths paths{root};
        fs::path p = fs::path(paths.content_dir(name)) / file;
        check_no_symlinks(paths.content_dir(name), file);
        if (!fs::is_regular_file(p)) throw HttpError{404, "未找到文件 " + file, "not_found_error", "file_name", "file_not_found"};
        std::string bytes = read_file(p.string());
        std::string base = fs::path(file).filename().string();
        std::string quoted;
        for (char c : base) quoted += (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) ? '_' : c;
        res.set_header("Content-Disposition", std::string(preview ? "inline" : "attachment") + "; filename=\"" + quoted + "\"");
        res.set_content(bytes, "application/octet-stream");
    }, true);
    post("/chat/kb_chat", [this](const httplib::Request& req, httplib::Response& res) { kb_chat(req, res); }, true);
}

void Server::Impl::kb_chat(const httplib::Request& req, httplib::Response& res) {
    kb_chat_run(parse_json_object(req), res, base_url(req));
}

// Chatchat's kb_chat body: query, mode (local_kb | temp_kb | search_engine), kb_name, top_k,
// score_threshold (Chatchat's scale), history, stream, model, temperature, max_tokens,
// prompt_name, return_direct. `base`: the URL prefix of the download links in "docs".
void Server::Impl::kb_chat_run(json body, httplib::Response& res, const std::string& base) {
    std::string query = require_string(body, "query");
    std::string mode = get_string(body, "mode").value_or("local_kb");
    bool stream = get_bool(body, "stream").value_or(true);
    if (mode == "search_engine") {
        // Chatchat's error frame ({"error": ...} as SSE data; a BaseResponse when not streaming).
        const std::string msg = "search_engine mode is not available offline: pdsd has no internet search engine; "
                                "use local_kb (a knowledge base) or temp_kb (file chat)";
        if (!stream) throw HttpError{501, msg, "invalid_request_error", "mode", "search_engine_unavailable"};
        reply_sse(res, {sse({{"error", msg}})});
        return;
    }
    if (mode != "local_kb" && mode != "temp_kb") throw bad_request("'mode' must be local_kb, temp_kb or search_engine", "mode");
    std::string name = validate_kb(require_string(body, "kb_name"), "kb_name");
    std::string kb_root = root;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        if (mode == "temp_kb") kb_root = temp_root(name);
    }
    kb::SearchOptions so = chatchat_search_options(body, kb_root);
    const std::shared_ptr<ServedModel> model = models->current();   // kept to the end: a load meanwhile does not change it
    bool return_direct = get_bool(body, "return_direct").value_or(false) || !model;
    get_string(body, "model");
    const rag::PromptTemplates templates = rag_templates(body);
    auto job = std::make_shared<GenJob>();
    std::vector<tokenizer::ChatMessage> history;
    if (const json* h = field(body, "history")) history = parse_messages(*h, "history", false);
    // Chatchat sends max_tokens 0 or null for "the default".
    if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() == 0) body.erase(mt);
    parse_sampling(body, *job);

    rag::RagTurn turn;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        turn = rag::retrieve(*open_kb(kb_root, name, "kb_name"), query, so, templates);
    }
    // Chatchat's format_reference: "出处 [i] [file](download url) \n\n<chunk>\n\n".
    json docs = rag::format_reference(turn.sources, rag::ReferenceLink{base, name}, /*with_text=*/true);
    const std::string msg_id = web->begin_turn(body, "kb_chat", query, {{"kb_name", name}, {"docs", docs}});
    const std::string id = now_id("chat");
    const int64_t created_at = unix_now();
    job->model = model;
    const json model_id = model ? json(model->id) : json(nullptr);
    auto frame = [id, created_at, model_id, msg_id](const std::string& object, const std::string& content, json extra) {
        json j{{"id", id}, {"object", object}, {"model", model_id}, {"created", created_at},
               {"status", nullptr}, {"message_type", 1}, {"message_id", msg_id.empty() ? json(nullptr) : json(msg_id)}, {"is_ref", false}};
        for (auto& [k, v] : extra.items()) j[k] = v;
        if (object == "chat.completion.chunk")
            j["choices"] = json::array({{{"delta", {{"content", content}, {"tool_calls", json::array()}}}, {"role", "assistant"}}});
        else
            j["choices"] = json::array({{{"message", {{"role", "assistant"}, {"content", content}, {"finish_reason", "stop"},
                                                     {"tool_calls", json::array()}}}}});
        return j;
    };
    if (return_direct) {
        // Retrieval-only (Chatchat's return_direct; also when no model is loaded).
        json j = frame("chat.completion", "", {{"docs", docs}});
        if (stream) reply_sse(res, {sse(j)});
        else reply_json(res, j);
        return;
    }
    if (docs.empty()) docs.push_back(no_reference_notice());
    submit_turn(job, std::move(history), turn.user_message, stream);
    if (!stream) {
        wait_for(*job);
        web->end_turn(msg_id, job->text);
        reply_json(res, frame("chat.completion", job->text, {{"docs", docs}, {"finish_reason", job->finish_reason},
                                                             {"usage", usage_json(*job)}}));
        return;
    }
    std::string head = sse(frame("chat.completion.chunk", "", {{"docs", docs}}));
    stream_job(
        res, job, head, [frame](const std::string& piece) { return sse(frame("chat.completion.chunk", piece, json::object())); },
        [frame, msg_id, this](const GenJob& j) {
            web->end_turn(msg_id, j.text);
            if (!j.error.empty()) return sse({{"error", j.error}});
            json f = frame("chat.completion.chunk", "", {{"finish_reason", j.finish_reason}});
            f["choices"][0]["finish_reason"] = j.finish_reason;
            return sse(f) + "data: [DONE]\n\n";
        },
        keep_shown(msg_id));
}

void Server::Impl::upload_docs(const httplib::Request& req, httplib::Response& res) {
    if (!req.is_multipart_form_data()) throw bad_request("upload_docs takes multipart/form-data (files, knowledge_base_name, ...)");
    auto value = [&](const char* key) { return req.has_file(key) ? req.get_file_value(key).content : std::string(); };
    std::string name = validate_kb(value("knowledge_base_name"));
    bool override_files = form_bool(value("override"), "override");
    std::string tvs = value("to_vector_store");
    bool to_vector_store = tvs.empty() ? true : form_bool(tvs, "to_vector_store");
    int64_t chunk_size = -1, chunk_overlap = -1;
    auto to_int = [](const std::string& s, const char* key) -> int64_t {
        if (s.empty()) return -1;
        try {
            size_t pos = 0;
            long long v = std::stoll(s, &pos);
            if (pos != s.size() || v < 0) throw std::invalid_argument(s);
            return v;
        } catch (const std::exception&) {
            throw bad_request(std::string("'") + key + "' must be a non-negative integer", key);
        }
    };
    chunk_size = to_int(value("chunk_size"), "chunk_size");
    chunk_overlap = to_int(value("chunk_overlap"), "chunk_overlap");
    auto range = req.files.equal_range("files");
    if (range.first == range.second) throw bad_request("no 'files' part in the upload", "files");
    // Validate every name before writing anything.
    std::vector<std::pair<std::string, const httplib::MultipartFormData*>> files;
    for (auto it = range.first; it != range.second; ++it) files.emplace_back(safe_relative_name(it->second.filename, "files"), &it->second);

    std::unique_lock<std::shared_mutex> lk(kb_mu);
    kb::KbPaths paths{root};
    if (!db_embed_model(root, name)) throw kb_not_found(name);
    const fs::path content = paths.content_dir(name);
    fs::create_directories(content);
    json failed = json::object();
    std::set<std::string> written_new;   // not in content/ before: removed again if it cannot be indexed
    size_t removed = 0;
    for (auto& [rel, part] : files) {
        check_no_symlinks(content, rel);
        fs::path dst = content / rel;
        // Belt and braces: the normalised path stays under content/.
        std::string d = dst.lexically_normal().string(), c = (content / "").lexically_normal().string();
        if (d.compare(0, c.size(), c) != 0) throw HttpError{400, "invalid file name '" + rel + "'", "invalid_request_error", "files", "invalid_file_name"};
        if (fs::exists(dst) && !override_files && fs::file_size(dst) == part->content.size()) {
            failed[rel] = "文件 " + rel + " 已存在。";
            continue;
        }
        if (!fs::exists(dst)) written_new.insert(rel);
        fs::create_directories(dst.parent_path());
        write_file_atomic(dst.string(), part->content);
    }
    if (to_vector_store) {
        kb::UpdateOptions u;
        u.kb_names = {name};
        u.mode = kb::UpdateMode::increment;
        u.chunk_size = chunk_size > 0 ? chunk_size : -1;
        u.chunk_overlap = chunk_overlap;
        u.progress = false;
        for (auto& list_kb : kb::list_knowledge_bases(root))
            if (list_kb.name == name) u.embed_model = list_kb.embed_model;
        kb::UpdateReport r = kb::update_knowledge_bases(root, u);
        for (auto& f : r.files)
            if (f.action == "failed" || f.action == "skipped") {
                for (auto& [rel, part] : files)
                    if (rel == f.file) failed[rel] = f.note.empty() ? f.action : f.note;
                // A hostile or broken upload does not stay in content/ (every later
                // rebuild would fail on it again).
                std::error_code ec;
                if (f.action == "failed" && written_new.count(f.file) && fs::remove(content / f.file, ec)) {
                    failed[f.file] = failed[f.file].get<std::string>() + " (removed from content/)";
                    ++removed;
                }
            }
    }
    if (!written_new.empty() && removed == written_new.size() && removed == files.size()) {
        // Every file was new and none could be indexed: nothing was stored, so a 4xx in
        // Chatchat's body shape (its web UI shows `msg`).
        reply_json(res, {{"code", 400}, {"msg", "文件上传失败: 没有文件可以入库"}, {"data", {{"failed_files", failed}}}}, 400);
        return;
    }
    reply_json(res, {{"code", 200}, {"msg", "文件上传与向量化完成"}, {"data", {{"failed_files", failed}}}});
}

void Server::Impl::setup_chatchat() {
    // openai.Client(base_url=f"{api}/knowledge_base/{mode}/{name}").chat.completions.create(...)
    post(R"(/knowledge_base/(local_kb|temp_kb|search_engine)/([^/]+)/chat/completions)",
         [this](const httplib::Request& req, httplib::Response& res) { kb_chat_openai(req, res); }, true);
    post("/knowledge_base/upload_temp_docs", [this](const httplib::Request& req, httplib::Response& res) { upload_temp_docs(req, res); }, true);
    post("/knowledge_base/update_docs", [this](const httplib::Request& req, httplib::Response& res) { update_docs(req, res); }, true);
    post("/knowledge_base/update_info", [this](const httplib::Request& req, httplib::Response& res) {
        json body = parse_json_object(req);
        std::string name = validate_kb(require_string(body, "knowledge_base_name"));
        std::string info = require_string(body, "kb_info");
        std::unique_lock<std::shared_mutex> lk(kb_mu);
        if (!kb::set_kb_info(root, name, info)) throw kb_not_found(name);
        reply_json(res, {{"code", 200}, {"msg", "知识库介绍修改完成"}, {"data", {{"kb_info", info}}}});
    }, true);
    post("/chat/file_chat", [this](const httplib::Request& req, httplib::Response& res) { file_chat(req, res); }, true);
    post("/chat/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat_completions(req, res, true); }, true);
    post("/server/configs", [this](const httplib::Request& req, httplib::Response& res) {
        reply_json(res, {{"api_address", base_url(req)}});
    }, true);
    prompts = std::make_unique<rag::PromptSettingsCache>(root);
    // Chatchat's route: {type (default llm_model), name (default default)} -> data: the template.
    post("/server/get_prompt_template", [this](const httplib::Request& req, httplib::Response& res) {
        json body = req.body.empty() ? json::object() : parse_json_object(req);
        std::string type = get_string(body, "type").value_or("llm_model"), name = get_string(body, "name").value_or("default");
        rag::PromptSettings ps = prompt_settings();
        const std::string* t = ps.find(type, name);
        if (!t) {
            std::string known;
            for (auto& [ty, list] : ps.sections)
                for (auto& [n, _] : list) known += (known.empty() ? "" : ", ") + ty + "/" + n;
            throw HttpError{404, "Prompt template not found: " + type + "/" + name + " (known: " + known + "; from " + ps.where() + ")",
                            "not_found_error", ps.sections.count(type) ? "name" : "type", "template_not_found"};
        }
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", *t}});
    }, true);
    // pdsd's: the template names per type, for the web page's 提示词模板 select.
    get("/pdsd/prompt_templates", [this](const httplib::Request&, httplib::Response& res) {
        rag::PromptSettings ps = prompt_settings();
        json data = json::object();
        for (auto& [type, list] : ps.sections) data[type] = ps.names(type);
        reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", data},
                         {"file", ps.source.empty() ? json(nullptr) : json(ps.source)}});
    }, true);
}

rag::PromptSettings Server::Impl::prompt_settings() {
    try {
        return prompts->get();
    } catch (const ConfigError& e) {   // the server's file is broken, not the request
        throw HttpError{500, e.what(), "server_error", "", "bad_prompt_settings"};
    }
}

rag::PromptTemplates Server::Impl::rag_templates(const json& body) {
    std::string name = get_string(body, "prompt_name").value_or("");
    if (name.empty()) name = "default";   // Chatchat's default
    rag::PromptSettings ps = prompt_settings();
    try {
        return ps.rag(name);
    } catch (const UsageError& e) {
        throw HttpError{400, e.what(), "invalid_request_error", "prompt_name", "prompt_not_found"};
    }
}

// The OpenAI-shaped kb chat: the last message is the query, the ones before it the history;
// Chatchat's extra_body (top_k, score_threshold, prompt_name, return_direct) rides along.
void Server::Impl::kb_chat_openai(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    const json* msgs = field(body, "messages");
    if (!msgs) throw bad_request("'messages' is required", "messages");
    std::vector<tokenizer::ChatMessage> messages = parse_messages(*msgs, "messages", /*need_user_last=*/true);
    json chat{{"query", messages.back().content}, {"mode", req.matches[1].str()}, {"kb_name", req.matches[2].str()},
            {"stream", get_bool(body, "stream").value_or(false)}};
    json history = json::array();
    for (size_t i = 0; i + 1 < messages.size(); ++i) history.push_back({{"role", messages[i].role}, {"content", messages[i].content}});
    chat["history"] = history;
    for (const char* k : {"top_k", "score_threshold", "pdsd_score_threshold", "search_mode", "return_direct", "model", "prompt_name",
                          "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop"})
        if (const json* v = field(body, k)) chat[k] = *v;
    kb_chat_run(std::move(chat), res, base_url(req));
}

// Chatchat's upload_temp_docs: files into a temp KB of their own (<root>/temp/<id>, indexed
// with the server's embed model and the root's kb_settings.yaml), answered with its id.
void Server::Impl::upload_temp_docs(const httplib::Request& req, httplib::Response& res) {
    if (!req.is_multipart_form_data()) throw bad_request("upload_temp_docs takes multipart/form-data (files, prev_id, ...)");
    auto value = [&](const char* key) { return req.has_file(key) ? req.get_file_value(key).content : std::string(); };
    auto to_int = [](const std::string& v, const char* key) -> int64_t {
        if (v.empty()) return -1;
        if (v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9)
            throw bad_request(std::string("'") + key + "' must be a non-negative integer", key);
        return std::stoll(v);
    };
    const int64_t chunk_size = to_int(value("chunk_size"), "chunk_size"), chunk_overlap = to_int(value("chunk_overlap"), "chunk_overlap");
    std::string prev = value("prev_id");
    if (prev.empty()) prev = value("knowledge_id");   // ApiRequest's name for it
    auto range = req.files.equal_range("files");
    if (range.first == range.second) throw bad_request("no 'files' part in the upload", "files");
    std::vector<std::pair<std::string, const httplib::MultipartFormData*>> files;
    for (auto it = range.first; it != range.second; ++it)
        files.emplace_back(fs::path(safe_relative_name(it->second.filename, "files")).filename().string(), &it->second);

    std::unique_lock<std::shared_mutex> lk(kb_mu);
    std::string id, dir;
    for (auto& [k, d] : temp_kbs)
        if (!prev.empty() && k == prev) id = k, dir = d;
    if (id.empty()) {
        std::string hex = now_id("");
        id = hex.substr(hex.size() > 32 ? hex.size() - 32 : 0);
        dir = (fs::path(root) / "temp" / id).string();
        if (temp_kbs.size() >= kMaxTempKbs) {   // bounded: the oldest goes
            std::error_code ec;
            fs::remove_all(temp_kbs.front().second, ec);
            retriever.forget(temp_kbs.front().second);
            temp_kbs.erase(temp_kbs.begin());
        }
        temp_kbs.emplace_back(id, dir);
        kb::KbPaths tp{dir};
        fs::create_directories(tp.content_dir(id));
        std::error_code ec;
        fs::path settings = fs::path(root) / "kb_settings.yaml";
        if (fs::exists(settings)) fs::copy_file(settings, fs::path(dir) / "kb_settings.yaml", fs::copy_options::overwrite_existing, ec);
    }
    kb::KbPaths tp{dir};
    for (auto& [name, part] : files) write_file_atomic((fs::path(tp.content_dir(id)) / name).string(), part->content);
    kb::UpdateOptions u;
    u.kb_names = {id};
    u.mode = kb::UpdateMode::increment;
    u.embed_model = embed_spec_path;
    u.chunk_size = chunk_size > 0 ? chunk_size : -1;
    u.chunk_overlap = chunk_overlap;
    u.progress = false;
    json failed = json::array();
    for (auto& f : kb::update_knowledge_bases(dir, u).files)
        if (f.action == "failed" || f.action == "skipped") failed.push_back({{f.file, f.note.empty() ? f.action : f.note}});
    reply_json(res, {{"code", 200}, {"msg", "success"}, {"data", {{"id", id}, {"failed_files", failed}}}});
}

// Chatchat's /chat/file_chat: always SSE; streamed {"answer": piece}... then {"docs": [...]},
// else one {"answer", "docs"} frame. Without a model the answer is empty (retrieval only).
void Server::Impl::file_chat(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    std::string query = require_string(body, "query");
    std::string id = validate_kb(require_string(body, "knowledge_id"), "knowledge_id");
    bool stream = get_bool(body, "stream").value_or(false);
    get_string(body, "model_name");
    const rag::PromptTemplates templates = rag_templates(body);
    auto job = std::make_shared<GenJob>();
    std::vector<tokenizer::ChatMessage> history;
    if (const json* h = field(body, "history")) history = parse_messages(*h, "history", false);
    if (auto mt = body.find("max_tokens"); mt != body.end() && mt->is_number_integer() && mt->get<int64_t>() <= 0) body.erase(mt);
    if (!field(body, "temperature")) body["temperature"] = 0.01;   // Chatchat's file_chat default
    parse_sampling(body, *job);

    rag::RagTurn turn;
    {
        std::shared_lock<std::shared_mutex> lk(kb_mu);
        std::string dir = temp_root(id);
        kb::SearchOptions so = chatchat_search_options(body, dir);
        turn = rag::retrieve(*open_kb(dir, id, "knowledge_id"), query, so, templates);
    }
    // Chatchat's file_chat sources: "出处 [i] [file] \n\n<chunk>\n\n" (no link: temp files).
    json docs = rag::format_reference(turn.sources, std::nullopt, /*with_text=*/true);
    if (docs.empty()) docs.push_back(no_reference_notice());
    const std::string msg_id = web->begin_turn(body, "file_chat", query, {{"knowledge_id", id}, {"docs", docs}});
    job->model = models->current();
    if (!job->model) {
        reply_sse(res, stream ? std::vector<std::string>{sse({{"docs", docs}})} : std::vector<std::string>{sse({{"answer", ""}, {"docs", docs}})});
        return;
    }
    submit_turn(job, std::move(history), turn.user_message, stream);
    if (!stream) {
        wait_for(*job);
        web->end_turn(msg_id, job->text);
        reply_sse(res, {sse({{"answer", job->text}, {"docs", docs}})});
        return;
    }
    stream_job(
        res, job, "", [](const std::string& piece) { return sse({{"answer", piece}}); },
        [docs, msg_id, this](const GenJob& j) { web->end_turn(msg_id, j.text); return j.error.empty() ? sse({{"docs", docs}}) : sse({{"error", j.error}}); },
        keep_shown(msg_id));
}

// Chatchat's update_docs: re-index the named files (already in the KB) from content/.
// Custom "docs" (Chatchat's hand-edited chunks) are not supported: those files fail.
void Server::Impl::update_docs(const httplib::Request& req, httplib::Response& res) {
    json body = parse_json_object(req);
    std::string name = validate_kb(require_string(body, "knowledge_base_name"));
    const json* names = field(body, "file_names");
    if (!names || !names->is_array()) throw bad_request("'file_names' must be an array of strings", "file_names");
    auto cs = get_int(body, "chunk_size", 1, 1 << 20);
    auto co = get_int(body, "chunk_overlap", 0, 1 << 20);
    get_bool(body, "zh_title_enhance");
    get_bool(body, "override_custom_docs");
    get_bool(body, "not_refresh_vs_cache");
    json custom = json::object();
    if (auto d = get_string(body, "docs"); d && !d->empty()) {
        custom = json::parse(*d, nullptr, false);
        if (!custom.is_object()) throw bad_request("'docs' must be a JSON object (as a string) of file name -> documents", "docs");
    }
    std::unique_lock<std::shared_mutex> lk(kb_mu);
    std::optional<std::string> em = db_embed_model(root, name);
    if (!em) throw kb_not_found(name);
    std::set<std::string> in_db;
    for (auto& f : kb::list_kb_files(root, name))
        if (f.in_db) in_db.insert(f.file_name);
    json failed = json::object();
    std::vector<std::string> todo;
    for (auto& n : *names) {
        if (!n.is_string()) throw bad_request("'file_names' must be an array of strings", "file_names");
        std::string f = safe_relative_name(n.get<std::string>(), "file_names");
        if (!in_db.count(f)) failed[f] = "未找到文件 " + f;
        else todo.push_back(f);
    }
    for (auto& [f, _] : custom.items()) failed[f] = "custom docs are not supported by pdsd (it splits the file itself)";
    if (!todo.empty()) {
        kb::UpdateOptions u;
        u.embed_model = *em;
        if (cs) u.chunk_size = *cs;
        if (co) u.chunk_overlap = *co;
        u.progress = false;
        for (auto& c : kb::update_files(root, name, todo, u).files)
            if (c.action == "failed" || c.action == "skipped") failed[c.file] = c.note.empty() ? c.action : c.note;
    }
    reply_json(res, {{"code", 200}, {"msg", "更新文档完成"}, {"data", {{"failed_files", failed}}}});
}

}  // namespace pdsd::serve
