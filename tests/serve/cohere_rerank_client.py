#!/usr/bin/env python3
"""POST /v1/rerank and /v2/rerank of `pdsd serve --rerank-model` through the real Cohere
Python SDK (the client LangChain's CohereRerank and Dify use), checked against
`pdsd kb rerank` on the same pairs.

  cohere_rerank_client.py PDSD RERANKER_DIR      exit 0 ok, 1 mismatch, 77 no cohere package
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

try:
    import cohere
except ImportError as e:
    print(f"SKIP: the cohere package is not installed ({e})")
    sys.exit(77)

pdsd, model = sys.argv[1], sys.argv[2]
query = "如何重建知识库？"
docs = ["证书过期：错误码 E2003。", "天气很好。", "The knowledge base is rebuilt with pdsd kb -r.", "如何重建知识库？运行 pdsd kb -r。"]

with tempfile.TemporaryDirectory() as d:
    df = os.path.join(d, "docs.jsonl")
    with open(df, "w", encoding="utf-8") as f:
        for x in docs:
            f.write(json.dumps(x, ensure_ascii=False) + "\n")
    want = json.loads(subprocess.run([pdsd, "kb", "rerank", "-m", model, "--query", query, "--docs", df, "--json",
                                      "--dtype", "auto"],
                                     check=True, capture_output=True, text=True).stdout)
    # --dtype auto: the dtype serve takes from kb_settings.yaml's default embed_dtype (bf16 on
    # CPUs with native bf16, else fp32), so the scores compare to 1e-6 on any machine.
    want = [r["relevance_score"] for r in want["results"]]
    err = open(os.path.join(d, "err"), "w+")
    srv = subprocess.Popen([pdsd, "serve", "--port", "0", "--root", os.path.join(d, "data"), "-e", "none",
                            "--rerank-model", model], stderr=err)
    try:
        url = None
        for _ in range(300):   # at most 30 s
            err.seek(0)
            m = re.search(r"pdsd serve: (http://\S+)", err.read())
            if m:
                url = m.group(1)
                break
            if srv.poll() is not None:
                break
            time.sleep(0.1)
        if not url:
            err.seek(0)
            print("FAIL: server did not start:\n" + err.read())
            sys.exit(1)
        fails = 0
        v1 = cohere.Client(api_key="unused", base_url=url, timeout=60)
        r = v1.rerank(model="tiny-xlmr-reranker", query=query, documents=docs, top_n=3, return_documents=True)
        got = [(x.index, x.relevance_score, x.document.text if x.document else None) for x in r.results]
        order = sorted(range(len(docs)), key=lambda i: -want[i])[:3]
        if [g[0] for g in got] != order or any(abs(g[1] - want[g[0]]) > 1e-6 or g[2] != docs[g[0]] for g in got):
            print(f"FAIL v1: got {got}, want order {order} scores {want}")
            fails += 1
        v2 = cohere.ClientV2(api_key="unused", base_url=url, timeout=60)
        r2 = v2.rerank(model="tiny-xlmr-reranker", query=query, documents=docs)
        got2 = [(x.index, x.relevance_score) for x in r2.results]
        order2 = sorted(range(len(docs)), key=lambda i: -want[i])
        if [g[0] for g in got2] != order2 or any(abs(g[1] - want[g[0]]) > 1e-6 for g in got2):
            print(f"FAIL v2: got {got2}, want order {order2}")
            fails += 1
        print(f"cohere {cohere.__version__}: v1 rerank {got[:1]}..., v2 rerank {len(got2)} results; {'ok' if not fails else 'FAIL'}")
        sys.exit(1 if fails else 0)
    finally:
        srv.terminate()
        srv.wait(timeout=30)
