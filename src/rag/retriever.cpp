// rag::Retriever (retriever.h): a cache of opened knowledge bases checked per get().
#include "pdsd/rag/retriever.h"

#include <filesystem>

namespace pdsd::rag {

namespace fs = std::filesystem;

std::shared_ptr<kb::Embedder> Retriever::add_embedder(const std::vector<std::string>& specs, std::shared_ptr<kb::Embedder> e) {
    e = kb::thread_safe_embedder(std::move(e));
    if (!e) return e;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : specs)
        if (!s.empty() && s != "none") added_[s] = e;
    return e;
}

std::shared_ptr<kb::Embedder> Retriever::embedder(const std::string& root, const std::string& embed_model) {
    if (embed_model.empty() || embed_model == "none") return nullptr;
    const Key key{root, embed_model};
    auto find = [&]() -> std::shared_ptr<kb::Embedder> {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = added_.find(embed_model); it != added_.end()) return it->second;
        if (auto it = opened_.find(key); it != opened_.end()) return it->second;
        return nullptr;
    };
    if (auto e = find()) return e;
    std::lock_guard<std::mutex> open_lock(open_mu_);
    if (auto e = find()) return e;   // opened by another thread meanwhile
    auto e = kb::thread_safe_embedder(kb::open_embed_model(root, embed_model));
    std::lock_guard<std::mutex> lock(mu_);
    opened_[key] = e;
    return e;
}

std::shared_ptr<const kb::KnowledgeBase> Retriever::get(const std::string& root, const std::string& name) {
    const Key key{root, name};
    std::shared_ptr<const kb::KnowledgeBase> cached;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = kbs_.find(key); it != kbs_.end()) cached = it->second;
    }
    if (cached && cached->is_current()) return cached;
    // Open outside the lock: other KBs' (and this one's old object's) readers go on.
    auto fresh = std::make_shared<const kb::KnowledgeBase>(
        root, name, [this, root](const std::string& embed_model) { return embedder(root, embed_model); });
    std::lock_guard<std::mutex> lock(mu_);
    ++opens_;
    kbs_[key] = fresh;
    return fresh;
}

kb::KbSettings Retriever::settings(const std::string& root) {
    kb::FileStamp stamp = kb::file_stamp((fs::path(root) / "kb_settings.yaml").string());
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = settings_.find(root); it != settings_.end() && it->second.stamp == stamp) return it->second.value;
    }
    kb::KbSettings value = kb::load_kb_settings(root);   // throws on a bad file: nothing cached
    std::lock_guard<std::mutex> lock(mu_);
    settings_[root] = {stamp, value};
    return value;
}

void Retriever::forget(const std::string& root) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = kbs_.begin(); it != kbs_.end();) it = it->first.first == root ? kbs_.erase(it) : std::next(it);
    for (auto it = opened_.begin(); it != opened_.end();) it = it->first.first == root ? opened_.erase(it) : std::next(it);
    settings_.erase(root);
}

int64_t Retriever::opens() const {
    std::lock_guard<std::mutex> lock(mu_);
    return opens_;
}

}  // namespace pdsd::rag
