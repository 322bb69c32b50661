// `pdsd init`: the data root, the samples KB and default configs.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/knowledge_base.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <sstream>

namespace pdsd::kb {

namespace fs = std::filesystem;

namespace {
const char* kKbSettings = R"(# pdsd knowledge-base settings (pdsd init writes this file once; edit freely).
# Lengths are Unicode code points, like Chatchat's len().
chunk_size: 750          # characters per chunk (Chatchat CHUNK_SIZE)
chunk_overlap: 150       # whole pieces up to this many characters repeat in the next chunk
top_k: 3                 # chunks returned per search (Chatchat VECTOR_SEARCH_TOP_K)
# Keep hits with score >= score_threshold; every score is higher-is-better:
#   bm25   -bm25() of SQLite FTS5 (>= 0; 0 keeps every match)
#   dense  cosine similarity in [-1, 1]
#   hybrid the cosine threshold filters the dense list before rank fusion
# (Chatchat's 0-2 "distance" threshold is NOT used; see docs/knowledge_base.md.)
score_threshold: 0.0
search_mode: bm25        # bm25 | dense | hybrid
embed_model: none        # none = BM25 only; a bge/BERT model folder, or its name under <root>/models
                         # (e.g. bge-large-zh-v1.5); hash-ngram = test embedder (no semantics)
query_instruction: auto  # dense queries: auto (bge's instruction) | none | the text to prepend
embed_dtype: auto        # auto: bf16 on AVX512-BF16/AMX CPUs (cosine >= 0.999 to fp32), else fp32 | fp32 (HF's numbers) | bf16
)";

const char* kModelSettings = R"(# pdsd model settings (pdsd init writes this file once; edit freely).
# The chat/serve stages read these; paths are relative to the data root or absolute.
default_llm_model: Qwen2.5-0.5B-Instruct
llm_model_path: models/Qwen2.5-0.5B-Instruct
default_embedding_model: none
temperature: 0.7
max_tokens: null
history_len: 3
)";
}  // namespace

std::string find_samples_dir(const std::string& exe_path) {
    std::vector<fs::path> cands;
    if (!exe_path.empty()) {
        fs::path exe = fs::weakly_canonical(fs::path(exe_path));
        fs::path dir = exe.parent_path();
        cands = {dir / "../share/pdsd/samples", dir / "../share/samples", dir / "share/samples"};
    }
#ifdef PDSD_SOURCE_SAMPLES_DIR
    cands.push_back(PDSD_SOURCE_SAMPLES_DIR);
#endif
    for (auto& c : cands) {
        std::error_code ec;
        if (fs::is_directory(c, ec)) return fs::weakly_canonical(c).string();
    }
    return "";
}

std::vector<std::string> init_root(const std::string& root, const std::string& samples_dir) {
    std::vector<std::string> done;
    KbPaths p{root};
    fs::create_directories(p.kb_root());
    done.push_back("data root " + root);
    for (auto& [name, text] : {std::pair<std::string, const char*>{"kb_settings.yaml", kKbSettings},
                               std::pair<std::string, const char*>{"model_settings.yaml", kModelSettings}}) {
        std::string path = (fs::path(root) / name).string();
        if (fs::exists(path)) {
            done.push_back("kept existing " + path);
        } else {
            write_file_atomic(path, text);
            done.push_back("wrote " + path);
        }
    }
    if (samples_dir.empty()) {
        done.push_back("samples not found next to the binary or in the source tree; skipped");
        return done;
    }
    fs::path dst = p.content_dir("samples");
    fs::create_directories(dst);
    size_t copied = 0;
    for (auto& e : fs::recursive_directory_iterator(samples_dir)) {
        if (!e.is_regular_file()) continue;
        fs::path rel = fs::relative(e.path(), samples_dir);
        fs::path to = dst / rel;
        if (fs::exists(to)) continue;
        fs::create_directories(to.parent_path());
        fs::copy_file(e.path(), to);
        ++copied;
    }
    done.push_back("samples knowledge base " + dst.string() + " (" + std::to_string(copied) + " files copied)");
    return done;
}

namespace {
bool is_model_dir(const fs::path& p) {
    std::error_code ec;
    return fs::is_directory(p, ec) && fs::exists(p / "config.json", ec);
}
}  // namespace

std::string resolve_llm_model_dir(const std::string& root, const std::string& model_option) {
    const fs::path models = fs::path(root) / "models";
    if (model_option == "none") return "";   // retrieval-only, whatever model_settings.yaml says
    if (!model_option.empty()) {
        for (const fs::path& c : {fs::path(model_option), models / model_option})
            if (is_model_dir(c)) return c.string();
        throw IoError(ErrorInfo{model_option}.msg("model folder not found (also looked in " + models.string() + ")")
                          .hint("pass the Hugging Face folder of a Qwen2/Qwen2.5 model (config.json, model.safetensors, "
                                "tokenizer.json), or its name under <root>/models"));
    }
    fs::path settings = fs::path(root) / "model_settings.yaml";
    if (!fs::exists(settings)) return "";
    YAML::Node y;
    try {
        y = YAML::LoadFile(settings.string());
    } catch (const YAML::Exception& e) {
        throw ConfigError(ErrorInfo{settings.string()}.at("line " + std::to_string(e.mark.line + 1)).msg(e.msg).hint("fix the YAML syntax"));
    }
    auto text = [&](const char* key) -> std::string {
        YAML::Node n = y[key];
        if (!n || n.IsNull() || !n.IsScalar()) return "";
        return n.as<std::string>();
    };
    if (std::string p = text("llm_model_path"); !p.empty()) {
        for (const fs::path& c : {fs::path(p), fs::path(root) / p})
            if (is_model_dir(c)) return c.string();
    }
    if (std::string name = text("default_llm_model"); !name.empty() && is_model_dir(models / name)) return (models / name).string();
    log::info("kb", "no model at llm_model_path '" + text("llm_model_path") + "' nor " + (models / text("default_llm_model")).string() +
                        " (" + settings.string() + "): answering retrieval-only");
    return "";
}

void set_settings_keys(const std::string& yaml_path, const std::vector<std::pair<std::string, std::string>>& keys) {
    std::string text = fs::exists(yaml_path) ? read_file(yaml_path) : std::string();
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    for (auto& [key, raw] : keys) {
        // plain scalar when safe, else a double-quoted YAML string
        bool plain = !raw.empty() && raw.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-:") == std::string::npos &&
                     raw.find(": ") == std::string::npos && raw.back() != ':';
        std::string value = raw;
        if (!plain) {
            value = "\"";
            for (char c : raw) value += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
            value += "\"";
        }
        bool found = false;
        for (auto& line : lines) {
            if (line.rfind(key + ":", 0) != 0) continue;
            // keep a trailing "  # comment" of the template line
            size_t hash = line.find(" #", key.size() + 1);
            std::string comment = hash == std::string::npos ? "" : line.substr(hash);
            std::string head = key + ": " + value;
            if (!comment.empty() && head.size() < 24) head.resize(24, ' ');
            line = head + comment;
            found = true;
        }
        if (!found) lines.push_back(key + ": " + value);
    }
    std::string out;
    for (auto& l : lines) out += l + "\n";
    write_file_atomic(yaml_path, out);
}

}  // namespace pdsd::kb
