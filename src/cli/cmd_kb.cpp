// `pdsd kb`: build and query knowledge bases (Chatchat's `chatchat kb` verbs), plus
// list/add/rm/search/split subcommands. Thin: options -> pdsd::kb calls -> printing.
#include "commands.h"

#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"
#include "pdsd/kb/eval.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/loader.h"
#include "pdsd/kb/reranker.h"
#include "pdsd/kb/splitter.h"
#include "pdsd/rag/retriever.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <atomic>
#include <fstream>
#include <thread>

#include <time.h>

namespace pdsd::cli {

namespace {

struct KbOpts {
    std::string root;
    bool recreate = false, increment = false, update_in_db = false, prune_db = false, prune_folder = false;
    std::vector<std::string> kb_names;
    std::string embed_model;
    std::string vector_index;
    int64_t chunk_size = -1, chunk_overlap = -1;
    bool no_progress = false;
};

void print_report(const kb::UpdateReport& r) {
    for (auto& f : r.files) {
        if (f.action == "unchanged") continue;
        std::printf("%-9s %s/%s%s%s\n", f.action.c_str(), f.kb.c_str(), f.file.c_str(),
                    f.action == "added" || f.action == "updated" ? (" (" + std::to_string(f.chunks) + " chunks)").c_str() : "",
                    f.note.empty() ? "" : ("  [" + f.note + "]").c_str());
    }
    std::printf("added %zu, updated %zu, removed %zu, unchanged %zu, skipped %zu, failed %zu; %zu chunks written in %.2f s\n",
                r.count("added"), r.count("updated"), r.count("removed"), r.count("unchanged"), r.count("skipped"),
                r.count("failed"), r.chunks_written, r.seconds);
    if (r.chunks_capped)
        std::printf("%zu chunk(s) longer than %zu embedding tokens: embedded truncated (see the warnings)\n", r.chunks_capped,
                    r.embed_token_cap);
}

// -1 means "from kb_settings.yaml"; anything else must be in range (no silent fallback).
void check_chunk_options(int64_t chunk_size, int64_t chunk_overlap) {
    if (chunk_size != -1) check_int_in_range(chunk_size, "--chunk_size", 1, kb::kMaxChunkSize);
    if (chunk_overlap != -1) check_int_in_range(chunk_overlap, "--chunk_overlap", 0, kb::kMaxChunkSize);
}

// `kb add` of a file that cannot be indexed is an error (exit 1) naming the file and why.
void throw_if_failed(const kb::UpdateReport& r) {
    std::string why;
    for (auto& f : r.files)
        if (f.action == "failed") why += "\n  " + f.file + ": " + f.note;
    if (!why.empty())
        throw DataError(ErrorInfo{}.msg(std::to_string(r.count("failed")) + " file(s) could not be indexed:" + why)
                            .hint("fix or convert the file; the other files were indexed"));
}

// JSON text for output: file names and chunks may hold bytes that are not UTF-8 (a
// name accepted from an upload); they are shown as U+FFFD instead of failing the dump.
std::string dump_json(const nlohmann::json& j, int indent = -1) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

kb::UpdateOptions update_options(const KbOpts& o) {
    check_chunk_options(o.chunk_size, o.chunk_overlap);
    kb::UpdateOptions u;
    u.kb_names = o.kb_names;
    u.prune_db = o.prune_db;
    u.prune_folder = o.prune_folder;
    u.embed_model = o.embed_model;
    u.vector_index = o.vector_index;
    u.chunk_size = o.chunk_size;
    u.chunk_overlap = o.chunk_overlap;
    u.progress = !o.no_progress;
    return u;
}

const char* metric(const std::string& mode, bool reranked = false) {
    if (reranked) return "cross-encoder relevance sigmoid(logit) in (0, 1), higher is better";
    if (mode == "bm25") return "bm25 = -bm25() of SQLite FTS5, higher is better";
    if (mode == "dense") return "cosine similarity, higher is better";
    return "reciprocal-rank fusion sum 1/(60+rank), higher is better";
}

nlohmann::json hit_json(const kb::SearchHit& h, size_t rank) {
    nlohmann::json j{{"rank", rank}, {"kb", h.kb}, {"file_name", h.file_name}, {"chunk_index", h.chunk_index},
                     {"chunk_id", h.chunk_id}, {"score", h.score}, {"kept", h.kept}, {"reason", h.reason},
                     {"start_char", h.start_char}, {"end_char", h.end_char}, {"text", h.text}};
    j["bm25"] = h.bm25 ? nlohmann::json(*h.bm25) : nlohmann::json();
    j["cosine"] = h.cosine ? nlohmann::json(*h.cosine) : nlohmann::json();
    j["bm25_rank"] = h.bm25_rank ? nlohmann::json(*h.bm25_rank) : nlohmann::json();
    j["dense_rank"] = h.dense_rank ? nlohmann::json(*h.dense_rank) : nlohmann::json();
    if (h.rerank) {
        j["rerank"] = *h.rerank;
        j["fused"] = *h.fused;
        j["fused_rank"] = *h.fused_rank;
    }
    return j;
}

// --rerank / --rerank-top-n / --fusion, shared by kb search and kb eval (and the same
// names on chat): overrides of kb_settings.yaml's USE_RERANKER / RERANKER_MODEL / rerank_top_n.
struct RankFlags {
    std::string rerank, fusion;
    int64_t rerank_top_n = 0;
};
void add_rank_flags(CLI::App* cmd, RankFlags& f) {
    cmd->add_option("--rerank", f.rerank, "rerank with this cross-encoder (folder or name under <root>/models; none = off; "
                                          "default: kb_settings.yaml USE_RERANKER/RERANKER_MODEL)");
    cmd->add_option("--rerank-top-n,--rerank_top_n", f.rerank_top_n, "fused candidates the reranker rescores (default: kb_settings.yaml rerank_top_n, 20)");
    cmd->add_option("--fusion", f.fusion, "hybrid fusion: rrf | weighted (default: kb_settings.yaml fusion, rrf)");
}
void apply_rank_flags(const RankFlags& f, kb::SearchOverrides& ov) {
    if (!f.rerank.empty()) ov.rerank_model = f.rerank;
    if (f.rerank_top_n != 0) ov.rerank_top_n = f.rerank_top_n;
    if (!f.fusion.empty()) ov.fusion = f.fusion;
}

struct RerankOpts {
    std::string model, query, docs, pairs, dtype = "fp32";
    int64_t max_length = 1024;
    bool json = false;
};

// `pdsd kb rerank`: the pairs of --pairs (or --query x --docs) scored in one batch; the
// oracle test and bench/rerank_bench.sh read its output.
void run_rerank_command(const std::string& root, const RerankOpts& ro) {
    if (ro.pairs.empty() == (ro.docs.empty() || ro.query.empty()))
        throw UsageError(ErrorInfo{}.msg("give either --pairs FILE or --query TEXT with --docs FILE"));
    std::vector<std::pair<std::string, std::string>> pairs;
    const std::string& file = ro.pairs.empty() ? ro.docs : ro.pairs;
    std::ifstream in(file);
    if (!in) throw IoError(ErrorInfo{file}.msg("cannot read"));
    std::string line;
    size_t no = 0;
    while (std::getline(in, line)) {
        ++no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        auto bad = [&](const char* expected) {
            return DataError(ErrorInfo{file}.at("line " + std::to_string(no)).expected(expected).found(line.substr(0, 80)));
        };
        if (!ro.pairs.empty()) {
            if (j.is_array() && j.size() == 2 && j[0].is_string() && j[1].is_string())
                pairs.emplace_back(j[0].get<std::string>(), j[1].get<std::string>());
            else if (j.is_object() && j.contains("query") && j["query"].is_string() && j.contains("document") && j["document"].is_string())
                pairs.emplace_back(j["query"].get<std::string>(), j["document"].get<std::string>());
            else
                throw bad("{\"query\": string, \"document\": string} or [query, document]");
        } else {
            if (!j.is_string()) throw bad("a JSON string");
            pairs.emplace_back(ro.query, j.get<std::string>());
        }
    }
    if (pairs.empty()) throw DataError(ErrorInfo{file}.msg("no pairs"));
    kb::RerankerOptions opt;
    opt.max_length = static_cast<size_t>(check_int_in_range(ro.max_length, "--max-length", 5, 1000000));
    opt.dtype = ro.dtype;
    auto rr = kb::open_reranker(root, ro.model, opt);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<double> logits = rr->pair_logits(pairs);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double rate = static_cast<double>(pairs.size()) / std::max(s, 1e-9);
    if (ro.json) {
        nlohmann::json j{{"model", rr->name()}, {"pairs", pairs.size()}, {"seconds", s}, {"pairs_per_s", rate},
                         {"results", nlohmann::json::array()}};
        for (size_t i = 0; i < logits.size(); ++i)
            j["results"].push_back({{"index", i}, {"logit", logits[i]}, {"relevance_score", kb::rerank_sigmoid(logits[i])}});
        std::printf("%s\n", dump_json(j, 2).c_str());
    } else {
        for (size_t i = 0; i < logits.size(); ++i) std::printf("%zu\t%.6f\t%.6f\n", i, kb::rerank_sigmoid(logits[i]), logits[i]);
    }
    std::fprintf(stderr, "%zu pairs in %.3f s: %.1f pairs/s (%s, max_length %zu)\n", pairs.size(), s, rate, rr->name().c_str(),
                 rr->max_length());
}

// `kb search --queries FILE [--clients N]`: every non-empty line of FILE as a query, after
// one untimed warm-up (first-use work: an IVF copy other than the configured one, page
// cache, a second read connection). N threads share the one KnowledgeBase, each taking the
// next query, the way N HTTP clients share serve's: the figure bench/kb_http_search.py
// compares the server with. Prints per-query wall ms (p50/p95/max); with one client also
// process-CPU ms (what a loaded machine does not inflate), with more the queries/s.
void run_query_file(const kb::KnowledgeBase& base, const kb::SearchOptions& opt, const std::string& file,
                    const std::string& dump_hits, int64_t clients) {
    if (opt.mode != "bm25") base.vector_index_info();   // load the vector store before timing
    std::vector<std::string> queries;
    {
        std::ifstream in(file);
        if (!in) throw IoError(ErrorInfo{file}.msg("cannot read"));
        for (std::string line; std::getline(in, line);)
            if (!line.empty()) queries.push_back(line);
    }
    if (queries.empty()) throw DataError(ErrorInfo{file}.msg("no queries"));
    base.search(queries[0], opt);
    auto cpu_ms = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    };
    const size_t n = queries.size();
    std::vector<double> ms(n), cms(n);
    std::vector<std::vector<kb::SearchHit>> found(n);
    std::atomic<size_t> next{0};
    auto worker = [&] {
        for (size_t i; (i = next.fetch_add(1)) < n;) {
            auto t0 = std::chrono::steady_clock::now();
            double c0 = cpu_ms();
            found[i] = base.search(queries[i], opt);
            cms[i] = cpu_ms() - c0;
            ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
    };
    auto w0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int64_t c = 1; c < clients; ++c) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
    size_t hits = 0;
    std::string dump;
    for (auto& f : found) {
        hits += f.size();
        for (size_t i = 0; i < f.size(); ++i) dump += (i ? "\t" : "") + f[i].file_name + "#" + std::to_string(f[i].chunk_index);
        dump += "\n";
    }
    if (!dump_hits.empty()) write_file_atomic(dump_hits, dump);
    std::sort(ms.begin(), ms.end());
    std::sort(cms.begin(), cms.end());
    auto pct = [](const std::vector<double>& v, double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
    std::string index_note;
    if (opt.mode != "bm25") {
        auto vi = base.vector_index_info();
        index_note = " index " + vi.type + " dim " + std::to_string(vi.dim);
        if (vi.type == "ivf")
            index_note += " nlist " + std::to_string(vi.nlist) + " nprobe " + std::to_string(opt.nprobe > 0 ? std::min(opt.nprobe, vi.nlist) : vi.nprobe);
    }
    char load[96];
    if (clients == 1) std::snprintf(load, sizeof load, " cpu_p50_ms %.3f cpu_p95_ms %.3f", pct(cms, 0.5), pct(cms, 0.95));
    else std::snprintf(load, sizeof load, " clients %lld qps %.1f", static_cast<long long>(clients), static_cast<double>(n) / wall_s);
    std::printf("mode %s chunks %lld queries %zu hits %zu p50_ms %.3f p95_ms %.3f max_ms %.3f%s%s\n", opt.mode.c_str(),
                static_cast<long long>(base.chunk_count()), n, hits, pct(ms, 0.5), pct(ms, 0.95), ms.back(), load,
                index_note.c_str());
}

}  // namespace

void register_kb(CLI::App& app, Registry& registry) {
    auto o = std::make_shared<KbOpts>();
    auto* kbc = app.add_subcommand("kb", "build knowledge bases from data/knowledge_base/<kb>/content (Chatchat's kb verbs)");
    kbc->add_option("--root", o->root, "data root (default: $PDSD_ROOT, else ./data)");
    kbc->add_flag("-r,--recreate-vs", o->recreate, "re-index every file of the knowledge base(s)");
    kbc->add_flag("-i,--increment", o->increment, "index new files, re-index changed ones (sha256), drop deleted ones");
    kbc->add_flag("-u,--update-in-db", o->update_in_db, "re-index the files already in the database");
    kbc->add_flag("--prune-db", o->prune_db, "delete database entries of files gone from content/");
    kbc->add_flag("--prune-folder", o->prune_folder, "delete files in content/ that are not in the database");
    kbc->add_option("-n,--kb-name", o->kb_names, "knowledge base(s) to process (repeatable; default: all)");
    kbc->add_option("-e,--embed-model", o->embed_model, "embedding model ('none' = BM25 only; default: kb_settings.yaml)");
    kbc->add_option("--vector-index", o->vector_index,
                    "dense index when built from scratch: auto | flat | ivf (default: kb_settings.yaml vector_index)");
    kbc->add_option("--chunk_size", o->chunk_size, "characters per chunk (default: kb_settings.yaml, 750)");
    kbc->add_option("--chunk_overlap", o->chunk_overlap, "overlap characters (default: kb_settings.yaml, 150)");
    kbc->add_flag("--no-progress", o->no_progress, "no progress output");
    registry.add(kbc, [o] {
        int modes = o->recreate + o->increment + o->update_in_db;
        if (modes > 1) throw UsageError(ErrorInfo{}.msg("choose one of -r, -i, -u"));
        if (modes == 0 && !o->prune_db && !o->prune_folder)
            throw UsageError(ErrorInfo{}.msg("nothing to do").hint("pdsd kb -r (rebuild), -i (increment), -u, --prune-db, --prune-folder, or a subcommand: list add rm search split"));
        kb::UpdateOptions u = update_options(*o);
        u.mode = o->recreate ? kb::UpdateMode::recreate : o->increment ? kb::UpdateMode::increment
                 : o->update_in_db ? kb::UpdateMode::update_in_db : kb::UpdateMode::none;
        print_report(kb::update_knowledge_bases(kb::resolve_root(o->root), u));
    });

    auto* list = kbc->add_subcommand("list", "list knowledge bases");
    list->fallthrough();
    registry.add(list, [o] {
        auto kbs = kb::list_knowledge_bases(kb::resolve_root(o->root));
        if (kbs.empty()) std::printf("no knowledge bases (run pdsd init)\n");
        for (auto& k : kbs)
            std::printf("%-20s files %-5lld chunks %-7lld embed %-12s %s\n", k.name.c_str(), static_cast<long long>(k.file_count),
                        static_cast<long long>(k.chunk_count), k.in_db ? k.embed_model.c_str() : "-",
                        !k.in_db ? "(not built: pdsd kb -r)" : !k.has_folder ? "(folder missing)" : "");
    });

    struct MigrateOpts { std::string to; };
    auto mo = std::make_shared<MigrateOpts>();
    auto* migrate = kbc->add_subcommand("migrate", "rebuild the knowledge bases into the other store and switch kb_settings.yaml's vs_type");
    migrate->fallthrough();
    migrate->add_option("--to", mo->to, "pg (PostgreSQL at pg_connection_uri) | local (FAISS + SQLite in the data root)")->required();
    registry.add(migrate, [o, mo] {
        kb::UpdateReport r = kb::migrate_knowledge_bases(kb::resolve_root(o->root), mo->to, o->kb_names, !o->no_progress);
        print_report(r);
        throw_if_failed(r);
        std::printf("vs_type is now %s\n", mo->to == "local" ? "faiss" : mo->to.c_str());
    });

    struct FilesOpts { std::string kb; std::vector<std::string> files; };
    auto fo = std::make_shared<FilesOpts>();
    auto* add = kbc->add_subcommand("add", "copy files into a knowledge base and index them");
    add->fallthrough();
    add->add_option("-n,--kb-name", fo->kb, "knowledge base")->required();
    add->add_option("files", fo->files, "files to add")->required();
    registry.add(add, [o, fo] {
        kb::UpdateReport r = kb::add_files(kb::resolve_root(o->root), fo->kb, fo->files, update_options(*o));
        print_report(r);
        throw_if_failed(r);
    });
    auto fo2 = std::make_shared<FilesOpts>();
    auto* rm = kbc->add_subcommand("rm", "remove files (names relative to content/) from a knowledge base");
    rm->fallthrough();
    rm->add_option("-n,--kb-name", fo2->kb, "knowledge base")->required();
    rm->add_option("files", fo2->files, "files to remove")->required();
    registry.add(rm, [o, fo2] { print_report(kb::remove_files(kb::resolve_root(o->root), fo2->kb, fo2->files, update_options(*o))); });

    struct SearchOpts {
        std::string kb, query, mode, queries_file, dump_hits, bm25_scorer = "auto", ivf_scan;
        int64_t top_k = -1, nprobe = 0, clients = 1;
        double threshold = 0, prune = 0.02;
        bool has_threshold = false, explain = false, json = false, hybrid_serial = false;
        RankFlags rank;
    };
    auto so = std::make_shared<SearchOpts>();
    auto* search = kbc->add_subcommand("search", "search a knowledge base");
    search->fallthrough();
    search->add_option("-n,--kb-name", so->kb, "knowledge base")->required();
    search->add_option("query", so->query, "the query text");
    search->add_option("--top_k,--top-k", so->top_k, "hits to return (default: kb_settings.yaml, 3)");
    auto* th = search->add_option("--score_threshold,--score-threshold", so->threshold,
                                  "keep hits with score >= this (bm25 score, or cosine in dense/hybrid)");
    search->add_option("--mode", so->mode, "bm25 | dense | hybrid (default: kb_settings.yaml)");
    search->add_option("--bm25-prune-df", so->prune,
                       "large KBs: drop query terms found in more than this fraction of chunks (1 = never)")->capture_default_str();
    search->add_flag("--explain", so->explain, "show every candidate's scores and why it was kept or dropped");
    search->add_flag("--json", so->json, "JSON output");
    search->add_option("--queries", so->queries_file, "run every line of FILE as a query and print latency p50/p95 (benchmark)");
    search->add_option("--nprobe", so->nprobe, "IVF vector stores: lists probed per query (default: kb_settings.yaml ivf_nprobe)");
    search->add_option("--ivf-scan", so->ivf_scan, "IVF vector stores: int8 | fp16 (compact copies, AVX-512) | faiss (default: kb_settings.yaml ivf_scan, int8)");
    search->add_option("--bm25-scorer", so->bm25_scorer,
                       "auto | fts5 (FTS5 MATCH + bm25()) | postings (FTS5 postings scored by pdsd, same scores); auto: postings from 20000 chunks")
        ->capture_default_str();
    search->add_flag("--hybrid-serial", so->hybrid_serial, "hybrid: BM25 then dense on one thread (default: both at once)");
    add_rank_flags(search, so->rank);
    search->add_option("--clients", so->clients, "with --queries: N threads searching the one KB at once, each taking the next query")
        ->check(CLI::Range(1, 256))->capture_default_str();
    search->add_option("--dump-hits", so->dump_hits,
                       "with --queries: write each query's kept hits as one line of file#chunk_index, tab-separated");
    registry.add(search, [o, so, th] {
        std::string root = kb::resolve_root(o->root);
        rag::Retriever retriever;   // the KB as serve opens it (one object, thread-safe search)
        auto base = retriever.get(root, so->kb);
        kb::KbSettings st = retriever.settings(root);
        kb::SearchOverrides ov;
        if (so->top_k != -1) ov.top_k = check_int_in_range(so->top_k, "--top_k", 1, kb::kMaxTopK);
        if (th->count()) ov.score_threshold = so->threshold;
        if (!so->mode.empty()) ov.mode = so->mode;
        apply_rank_flags(so->rank, ov);
        kb::SearchOptions opt = kb::make_search_options(root, st, ov);
        opt.explain = so->explain;
        opt.bm25_prune_df_ratio = so->prune;
        opt.nprobe = so->nprobe;
        opt.ivf_scan = so->ivf_scan;
        opt.hybrid_parallel = !so->hybrid_serial;
        opt.bm25_scorer = so->bm25_scorer;
        if (!so->queries_file.empty()) {
            run_query_file(*base, opt, so->queries_file, so->dump_hits, so->clients);
            return;
        }
        if (so->query.empty()) throw UsageError(ErrorInfo{}.msg("no query given").hint("pdsd kb search -n KB \"query\""));
        auto hits = base->search(so->query, opt);
        double threshold = *opt.score_threshold;
        const bool reranked = opt.reranker != nullptr;
        if (so->json) {
            nlohmann::json j{{"query", so->query}, {"kb", so->kb}, {"mode", opt.mode}, {"metric", metric(opt.mode, reranked)},
                             {"top_k", opt.top_k}, {"score_threshold", threshold}, {"hits", nlohmann::json::array()}};
            if (reranked) {
                j["reranker"] = opt.reranker->name();
                j["rerank_top_n"] = opt.rerank_top_n;
            }
            size_t rank = 0;
            for (auto& h : hits) j["hits"].push_back(hit_json(h, ++rank));
            std::printf("%s\n", dump_json(j, 2).c_str());
            return;
        }
        std::printf("# %s search in '%s' (%s; threshold %g, top_k %zu%s)\n", opt.mode.c_str(), so->kb.c_str(),
                    metric(opt.mode, reranked), threshold, opt.top_k,
                    reranked ? (", reranked by " + opt.reranker->name() + " from the best " + std::to_string(opt.rerank_top_n)).c_str() : "");
        if (hits.empty() || !hits[0].kept) std::printf("no chunk passed the threshold\n");
        size_t rank = 0;
        for (auto& h : hits) {
            ++rank;
            if (so->explain) {
                std::string fused = h.rerank ? log::cat("  fused ", *h.fused, " (rank ", *h.fused_rank, ")") : "";
                std::printf("%s [%zu] score %.4f  bm25 %s (rank %s)  cosine %s (rank %s)%s  %s#%lld  -- %s\n", h.kept ? "KEEP" : "drop",
                            rank, h.score, h.bm25 ? std::to_string(*h.bm25).c_str() : "-",
                            h.bm25_rank ? std::to_string(*h.bm25_rank).c_str() : "-",
                            h.cosine ? std::to_string(*h.cosine).c_str() : "-",
                            h.dense_rank ? std::to_string(*h.dense_rank).c_str() : "-", fused.c_str(), h.file_name.c_str(),
                            static_cast<long long>(h.chunk_index), h.reason.c_str());
                if (!h.kept) continue;
            } else {
                std::printf("[%zu] score %.4f  %s#%lld\n", rank, h.score, h.file_name.c_str(), static_cast<long long>(h.chunk_index));
            }
            std::printf("%s\n\n", h.text.c_str());
        }
    });

    struct EvalOpts {
        std::string kb, qa, mode;
        int64_t top_k = 5;
        double threshold = 0;
        bool json = false, verbose = false, compare = false;
        RankFlags rank;
    };
    auto evo = std::make_shared<EvalOpts>();
    auto* eval = kbc->add_subcommand("eval", "retrieval quality: hit@k and MRR for questions with known source files");
    eval->fallthrough();
    eval->add_option("-n,--kb-name", evo->kb, "knowledge base")->required();
    eval->add_option("--qa", evo->qa, "JSONL: {\"question\": ..., \"source\": \"file\"} or \"sources\": [...] per line")->required();
    eval->add_option("--top_k,--top-k", evo->top_k, "chunks retrieved per question (hit@k reported for 1, 3, 5, 10 up to this)")
        ->capture_default_str();
    auto* eth = eval->add_option("--score_threshold,--score-threshold", evo->threshold, "as in kb search (default: kb_settings.yaml)");
    eval->add_option("--mode", evo->mode, "bm25 | dense | hybrid (default: kb_settings.yaml)");
    eval->add_flag("--compare", evo->compare,
                   "side by side: bm25, dense, hybrid (with a vector store) and hybrid+rerank (with --rerank or USE_RERANKER)");
    add_rank_flags(eval, evo->rank);
    eval->add_flag("--json", evo->json, "JSON output (summary and every question)");
    eval->add_flag("-v,--verbose", evo->verbose, "print every question with its rank (misses are always printed)");
    registry.add(eval, [o, evo, eth] {
        if (evo->top_k <= 0) throw UsageError(ErrorInfo{}.at("--top_k").expected("a positive number").found(std::to_string(evo->top_k)));
        std::string root = kb::resolve_root(o->root);
        rag::Retriever retriever;
        kb::KbSettings st = retriever.settings(root);
        auto questions = kb::load_qa_file(evo->qa);
        const kb::KnowledgeBase& base = *retriever.get(root, evo->kb);
        kb::SearchOverrides ov;
        ov.top_k = check_int_in_range(evo->top_k, "--top_k", 1, kb::kMaxTopK);
        if (eth->count()) ov.score_threshold = evo->threshold;
        if (!evo->mode.empty()) ov.mode = evo->mode;
        apply_rank_flags(evo->rank, ov);
        // The configurations to run: one (the settings + flags), or --compare's rows.
        struct Config { std::string name; kb::SearchOptions opt; };
        std::vector<Config> configs;
        if (!evo->compare) {
            kb::SearchOptions opt = kb::make_search_options(root, st, ov);
            configs.push_back({opt.mode + (opt.reranker ? "+rerank" : ""), opt});
        } else {
            kb::SearchOverrides plain = ov;
            plain.rerank_model = "none";
            std::vector<std::string> modes{"bm25"};
            if (base.embed_model() != "none") modes = {"bm25", "dense", "hybrid"};
            for (auto& m : modes) {
                plain.mode = m;
                configs.push_back({m, kb::make_search_options(root, st, plain)});
            }
            kb::SearchOverrides rr = ov;
            rr.mode = modes.back();
            kb::SearchOptions ropt = kb::make_search_options(root, st, rr);
            if (ropt.reranker) configs.push_back({modes.back() + "+rerank", ropt});
            else std::fprintf(stderr, "note: no reranker (pass --rerank MODEL or set USE_RERANKER): no %s+rerank row\n", modes.back().c_str());
        }
        std::vector<kb::EvalReport> reps;
        for (auto& c : configs) {
            if (c.opt.mode != "bm25") base.vector_index_info();   // load the vector store (and the embedder) before timing
            if (c.opt.reranker && !questions.empty()) c.opt.reranker->scores(questions[0].question, {"warm-up"});
            reps.push_back(kb::evaluate(base, questions, c.opt));
        }
        if (evo->json) {
            auto summary = [](const std::string& name, const kb::SearchOptions& opt, const kb::EvalReport& rep) {
                nlohmann::json j{{"name", name}, {"mode", opt.mode}, {"top_k", rep.top_k}, {"mrr", rep.mrr},
                                 {"hit_at", nlohmann::json::object()}, {"ms_per_query", rep.ms_per_query},
                                 {"p50_ms", rep.p50_ms}, {"max_ms", rep.max_ms},
                                 {"reranker", opt.reranker ? nlohmann::json(opt.reranker->name()) : nlohmann::json()}};
                if (opt.reranker) j["rerank_top_n"] = opt.rerank_top_n;
                for (size_t i = 0; i < rep.ks.size(); ++i) j["hit_at"][std::to_string(rep.ks[i])] = rep.hit_at[i];
                return j;
            };
            nlohmann::json j;
            if (!evo->compare) {
                j = summary(configs[0].name, configs[0].opt, reps[0]);
                j["kb"] = evo->kb;
                j["questions"] = questions.size();
                j["results"] = nlohmann::json::array();
                for (auto& r : reps[0].results)
                    j["results"].push_back({{"line", r.q.line}, {"question", r.q.question}, {"sources", r.q.sources},
                                            {"rank", r.rank ? nlohmann::json(*r.rank) : nlohmann::json(nullptr)},
                                            {"retrieved", r.retrieved}});
            } else {
                j = {{"kb", evo->kb}, {"questions", questions.size()}, {"top_k", reps[0].top_k}, {"configs", nlohmann::json::array()}};
                for (size_t c = 0; c < configs.size(); ++c) j["configs"].push_back(summary(configs[c].name, configs[c].opt, reps[c]));
            }
            std::printf("%s\n", dump_json(j, 2).c_str());
            return;
        }
        if (!evo->compare) {
            for (auto& r : reps[0].results) {   // misses always, every question with -v
                if (r.rank && !evo->verbose) continue;
                std::string got;
                for (auto& x : r.retrieved) got += (got.empty() ? "" : ", ") + x;
                std::printf("%-7s line %zu: %s\n        expected %s; retrieved %s\n",
                            r.rank ? ("rank " + std::to_string(*r.rank)).c_str() : "MISS", r.q.line, r.q.question.c_str(),
                            dump_json(nlohmann::json(r.q.sources)).c_str(), got.empty() ? "nothing" : got.c_str());
            }
            const auto& rep = reps[0];
            std::printf("# %s retrieval on '%s': %zu questions, top_k %zu\n", configs[0].name.c_str(), evo->kb.c_str(),
                        questions.size(), rep.top_k);
            for (size_t i = 0; i < rep.ks.size(); ++i) std::printf("hit@%zu %.4f\n", rep.ks[i], rep.hit_at[i]);
            std::printf("MRR@%zu %.4f\n", rep.top_k, rep.mrr);
            std::printf("ms/query %.3f (p50 %.3f, max %.3f)\n", rep.ms_per_query, rep.p50_ms, rep.max_ms);
            return;
        }
        std::printf("# retrieval on '%s': %zu questions, top_k %zu\n%-16s", evo->kb.c_str(), questions.size(), reps[0].top_k, "config");
        for (size_t k : reps[0].ks) std::printf(" %8s", ("hit@" + std::to_string(k)).c_str());
        std::printf(" %8s %10s %8s\n", ("MRR@" + std::to_string(reps[0].top_k)).c_str(), "ms/query", "p50_ms");
        for (size_t c = 0; c < configs.size(); ++c) {
            std::printf("%-16s", configs[c].name.c_str());
            for (double h : reps[c].hit_at) std::printf(" %8.4f", h);
            std::printf(" %8.4f %10.3f %8.3f\n", reps[c].mrr, reps[c].ms_per_query, reps[c].p50_ms);
        }
    });

    auto rro = std::make_shared<RerankOpts>();
    auto* rr = kbc->add_subcommand("rerank", "score (query, document) pairs with a cross-encoder; prints pairs/s (benchmark)");
    rr->fallthrough();
    rr->add_option("-m,--model", rro->model, "cross-encoder folder (bge-reranker-*) or name under <root>/models")->required();
    rr->add_option("--query", rro->query, "the query (with --docs)");
    rr->add_option("--docs", rro->docs, "JSONL: one JSON string per line, scored against --query");
    rr->add_option("--pairs", rro->pairs, "JSONL: {\"query\": ..., \"document\": ...} or [query, document] per line");
    rr->add_option("--max-length,--max_length", rro->max_length, "tokens per pair (RERANKER_MAX_LENGTH)")->capture_default_str();
    rr->add_option("--dtype", rro->dtype, "fp32 | bf16 | auto")->capture_default_str();
    rr->add_flag("--json", rro->json, "JSON output: {\"results\": [{index, logit, relevance_score}], \"pairs_per_s\"}");
    registry.add(rr, [o, rro] { run_rerank_command(kb::resolve_root(o->root), *rro); });

    struct EmbedOpts { std::string model, jsonl, out, dtype = "fp32", instruction = "auto"; bool query = false; };
    auto eo = std::make_shared<EmbedOpts>();
    auto* emb = kbc->add_subcommand("embed", "embed texts (JSONL of strings) with an embedding model; prints chunks/s (benchmark)");
    emb->add_option("-e,--embed-model", eo->model, "model folder or name")->required();
    emb->add_option("--jsonl", eo->jsonl, "input: one JSON string per line")->required();
    emb->add_option("--out", eo->out, "write the vectors here (float32, row-major)");
    emb->add_option("--dtype", eo->dtype, "fp32 | bf16")->capture_default_str();
    emb->add_option("--query-instruction", eo->instruction, "auto | none | text (with --query)")->capture_default_str();
    emb->add_flag("--query", eo->query, "embed as queries (bge instruction prepended)");
    registry.add(emb, [eo] {
        std::unique_ptr<kb::Embedder> e = kb::make_embedder(eo->model);
        if (!e) throw UsageError(ErrorInfo{}.at("-e").msg("no embedding model given"));
        kb::EmbedderOptions opt;
        opt.dtype = eo->dtype;
        opt.query_instruction = eo->instruction;
        e->configure(opt);
        std::ifstream in(eo->jsonl);
        if (!in) throw IoError(ErrorInfo{eo->jsonl}.msg("cannot read"));
        std::vector<std::string> texts;
        std::string line;
        size_t lineno = 0;
        while (std::getline(in, line)) {
            ++lineno;
            if (line.empty()) continue;
            std::string where = eo->jsonl + ":" + std::to_string(lineno);
            nlohmann::json j = parse_json_bounded(line, where);
            if (!j.is_string())
                throw DataError(ErrorInfo{eo->jsonl}.at("line " + std::to_string(lineno)).msg("wrong type")
                                    .expected("a JSON string per line").found(std::string(j.type_name()) + " " + dump_json(j).substr(0, 40)));
            texts.push_back(j.get<std::string>());
        }
        if (texts.empty()) throw DataError(ErrorInfo{eo->jsonl}.msg("no texts"));
        size_t capped = 0;
        for (auto& t : texts) capped += e->max_tokens() && e->token_count(t) > e->max_tokens();
        auto l0 = std::chrono::steady_clock::now();
        e->embed({texts[0], texts[texts.size() - 1]}, eo->query);   // loads the model; warm-up
        auto t0 = std::chrono::steady_clock::now();
        auto vecs = e->embed(texts, eo->query);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double load = std::chrono::duration<double>(t0 - l0).count();
        if (!eo->out.empty()) {
            std::string bytes;
            for (auto& v : vecs) bytes.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
            write_file_atomic(eo->out, bytes);
        }
        std::printf("pdsd chunks %zu seconds %.3f chunks_per_s %.3f dim %d dtype %s capped %zu load_and_warmup_s %.2f\n",
                    texts.size(), secs, texts.size() / secs, e->dim(), eo->dtype.c_str(), capped, load);
    });

    struct SplitOpts { std::string file, batch; int64_t size = 750, overlap = 150; bool json = false; };
    auto sp = std::make_shared<SplitOpts>();
    auto* split = kbc->add_subcommand("split", "debug: load FILE and print its chunks (ChineseRecursiveTextSplitter)");
    split->add_option("file", sp->file, "a document");
    split->add_option("--batch", sp->batch,
                      "JSONL of {\"text\", \"chunk_size\", \"chunk_overlap\"}: print one JSON list of chunk texts per line (oracle tests)");
    split->add_option("--chunk_size", sp->size, "characters per chunk")->capture_default_str();
    split->add_option("--chunk_overlap", sp->overlap, "overlap characters")->capture_default_str();
    split->add_flag("--json", sp->json, "JSON output: {\"chunks\": [{\"text\", \"start\", \"end\"}]}");
    registry.add(split, [sp] {
        if (!sp->batch.empty()) {
            std::ifstream in(sp->batch);
            if (!in) throw IoError(ErrorInfo{sp->batch}.msg("cannot read"));
            std::string line;
            size_t lineno = 0;
            while (std::getline(in, line)) {
                ++lineno;
                if (line.empty()) continue;
                std::string where = sp->batch + ":" + std::to_string(lineno);
                auto j = parse_json_bounded(line, where);
                if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
                    throw DataError(ErrorInfo{sp->batch}.at("line " + std::to_string(lineno)).msg("bad record")
                                        .expected("{\"text\": string, \"chunk_size\": int, \"chunk_overlap\": int}")
                                        .found(dump_json(j).substr(0, 60)));
                kb::SplitterOptions so{static_cast<size_t>(json_int_in_range(j, "chunk_size", where, 1, kb::kMaxChunkSize)),
                                       static_cast<size_t>(json_int_in_range(j, "chunk_overlap", where, 0, kb::kMaxChunkSize))};
                nlohmann::json arr = nlohmann::json::array();
                for (auto& c : kb::split_text(j["text"].get<std::string>(), so)) arr.push_back(c.text);
                std::printf("%s\n", dump_json(arr).c_str());
            }
            return;
        }
        if (sp->file.empty()) throw UsageError(ErrorInfo{}.msg("no file given").hint("pdsd kb split FILE --json"));
        check_int_in_range(sp->size, "--chunk_size", 1, kb::kMaxChunkSize);
        check_int_in_range(sp->overlap, "--chunk_overlap", 0, kb::kMaxChunkSize);
        kb::SplitterOptions so{static_cast<size_t>(sp->size), static_cast<size_t>(sp->overlap)};
        auto lf = kb::load_file(sp->file);
        nlohmann::json arr = nlohmann::json::array();
        for (auto& d : lf.docs) {
            if (!d.split) { arr.push_back({{"text", d.text}, {"start", 0}, {"end", 0}}); continue; }
            for (auto& c : kb::split_text(d.text, so)) arr.push_back({{"text", c.text}, {"start", c.start}, {"end", c.end}});
        }
        if (sp->json) {
            std::printf("%s\n", dump_json(nlohmann::json{{"file", sp->file}, {"loader", lf.loader}, {"chunks", arr}}).c_str());
            return;
        }
        size_t i = 0;
        for (auto& c : arr) std::printf("--- chunk %zu [%lld, %lld)\n%s\n", i++, static_cast<long long>(c["start"].get<int64_t>()),
                                        static_cast<long long>(c["end"].get<int64_t>()), c["text"].get<std::string>().c_str());
    });
}

}  // namespace pdsd::cli
