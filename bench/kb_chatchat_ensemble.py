#!/usr/bin/env python3
"""Chatchat's hybrid retrieval, timed on pdsd's bench KB (same chunks, same vectors).

Langchain-Chatchat 0.3.x (server/file_rag/retrievers/ensemble.py) answers every hybrid
search like this: take all documents out of the FAISS docstore, build
BM25Retriever.from_documents(docs, preprocess_func=jieba.lcut_for_search) (rank_bm25
BM25Okapi over the jieba tokens of every chunk), wrap it with the vector store's retriever
in EnsembleRetriever(weights [0.5, 0.5]) and call get_relevant_documents(query)[:top_k].
This script does exactly that with langchain + langchain-community + faiss-cpu, on:
  - the chunk texts and ids of KB `--kb` from pdsd's info.db,
  - the vectors of pdsd's exact flat index of the same chunks (index.faiss, IndexIDMap over
    IndexFlatIP) put into a langchain FAISS store (IndexFlatIP, as Chatchat's
    normalize_L2 + inner product store),
  - query vectors precomputed by `pdsd kb embed --query --out` (float32 rows, one per query
    line), so that neither side's embedding model is timed: retrieval only.
Timed per query: (a) the full Chatchat path (BM25 rebuilt per query), (b) the same
ensemble with the BM25 retriever built once (what a cached BM25 would cost), (c) the FAISS
retriever alone. Prints one summary line (milliseconds).

  kb_chatchat_ensemble.py INFO_DB KB INDEX_FAISS QUERIES QUERY_VECS [--full-n 2] [--cached-n 10] [--faiss-n 50] [--top-k 3]
"""
import argparse, logging, sqlite3, statistics, sys, time, warnings

warnings.filterwarnings("ignore")
import numpy as np
import faiss
import jieba
from langchain.retrievers import EnsembleRetriever
from langchain_community.docstore.in_memory import InMemoryDocstore
from langchain_community.retrievers import BM25Retriever
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

jieba.setLogLevel(logging.ERROR)
ap = argparse.ArgumentParser()
ap.add_argument("info_db"); ap.add_argument("kb"); ap.add_argument("index"); ap.add_argument("queries"); ap.add_argument("qvecs")
ap.add_argument("--full-n", type=int, default=2, help="queries timed on the full (rebuild-per-query) path")
ap.add_argument("--cached-n", type=int, default=10, help="queries timed with the BM25 retriever built once (~4 s each at 100k)")
ap.add_argument("--faiss-n", type=int, default=50, help="queries timed on the FAISS retriever alone")
ap.add_argument("--top-k", type=int, default=3)
a = ap.parse_args()

con = sqlite3.connect(a.info_db)
text = dict(con.execute("SELECT id, text FROM chunks WHERE kb_name = ?", (a.kb,)))
src = faiss.read_index(a.index)
ids = faiss.vector_to_array(src.id_map)
inner = faiss.downcast_index(src.index)
d = inner.d
vecs = inner.reconstruct_n(0, inner.ntotal).astype(np.float32)
qs = [l.strip() for l in open(a.queries, encoding="utf-8") if l.strip()]
qv = np.fromfile(a.qvecs, dtype=np.float32).reshape(len(qs), d)
qmap = {q: qv[i] for i, q in enumerate(qs)}


class Precomputed(Embeddings):
    """Query vectors computed by pdsd (the same vectors pdsd searches with)."""
    def embed_documents(self, texts):
        raise RuntimeError("documents are pre-embedded")
    def embed_query(self, t):
        return qmap[t].tolist()


index = faiss.IndexFlatIP(d)
index.add(vecs)
docs = {str(int(i)): Document(page_content=text[int(i)], metadata={"id": int(i)}) for i in ids}
vs = FAISS(embedding_function=Precomputed(), index=index, docstore=InMemoryDocstore(docs),
           index_to_docstore_id={n: str(int(i)) for n, i in enumerate(ids)},
           normalize_L2=True, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
faiss_ret = vs.as_retriever(search_kwargs={"k": a.top_k})
jieba.initialize()


def chatchat_search(q):
    all_docs = list(vs.docstore._dict.values())
    bm25 = BM25Retriever.from_documents(all_docs, preprocess_func=jieba.lcut_for_search)
    bm25.k = a.top_k
    ens = EnsembleRetriever(retrievers=[bm25, faiss_ret], weights=[0.5, 0.5])
    return ens.get_relevant_documents(q)[: a.top_k]


def timed(f, items):
    out = []
    for q in items:
        t0 = time.perf_counter()
        f(q)
        out.append((time.perf_counter() - t0) * 1000)
    return out


full = timed(chatchat_search, qs[: a.full_n])
bm25_once = BM25Retriever.from_documents(list(vs.docstore._dict.values()), preprocess_func=jieba.lcut_for_search)
bm25_once.k = a.top_k
ens_cached = EnsembleRetriever(retrievers=[bm25_once, faiss_ret], weights=[0.5, 0.5])
cached = timed(lambda q: ens_cached.get_relevant_documents(q)[: a.top_k], qs[: a.cached_n])
fonly = timed(lambda q: faiss_ret.get_relevant_documents(q), qs[: a.faiss_n])
p50 = statistics.median
print(f"chatchat docs {len(docs)} dim {d} full_queries {len(full)} ensemble_rebuild_per_query_ms_mean {statistics.mean(full):.1f} "
      f"ensemble_cached_bm25_ms_p50 {p50(cached):.1f} (over {len(cached)} queries) faiss_flat_only_ms_p50 {p50(fonly):.1f} (over {len(fonly)} queries)")
