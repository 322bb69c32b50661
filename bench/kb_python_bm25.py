#!/usr/bin/env python3
"""Chatchat's BM25 path on the bench corpus: per query, jieba.lcut_for_search over every
chunk + rank_bm25.BM25Okapi + top-k (what langchain BM25Retriever.from_documents does in
Chatchat's EnsembleRetriever, rebuilt on every query). Prints per-query milliseconds.

  kb_python_bm25.py CONTENT_DIR QUERIES_FILE [--queries 3]
"""
import argparse, csv, glob, logging, os, statistics, time
import jieba
from rank_bm25 import BM25Okapi
jieba.setLogLevel(logging.ERROR)
ap = argparse.ArgumentParser()
ap.add_argument("content"); ap.add_argument("queries"); ap.add_argument("--queries-n", type=int, default=3)
a = ap.parse_args()
docs = []
for f in sorted(glob.glob(os.path.join(a.content, "*.csv"))):
    with open(f, encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        for row in r:
            docs.append("\n".join(f"{k.strip()}: {v.strip()}" for k, v in row.items()))
qs = [l.strip() for l in open(a.queries, encoding="utf-8") if l.strip()][: a.queries_n]
jieba.initialize()
full = []
for q in qs:
    t0 = time.perf_counter()
    bm = BM25Okapi([jieba.lcut_for_search(d) for d in docs])
    scores = bm.get_scores(jieba.lcut_for_search(q))
    top = sorted(range(len(docs)), key=lambda i: -scores[i])[:3]
    full.append((time.perf_counter() - t0) * 1000)
# Lower bound: tokenized corpus and index cached, only the query scoring per query.
bm = BM25Okapi([jieba.lcut_for_search(d) for d in docs])
cached = []
for q in [l.strip() for l in open(a.queries, encoding="utf-8") if l.strip()][:50]:
    t0 = time.perf_counter()
    scores = bm.get_scores(jieba.lcut_for_search(q))
    top = sorted(range(len(docs)), key=lambda i: -scores[i])[:3]
    cached.append((time.perf_counter() - t0) * 1000)
print(f"python docs {len(docs)} rebuild_per_query_ms_mean {statistics.mean(full):.1f} "
      f"cached_index_query_ms_p50 {statistics.median(cached):.1f}")
