#!/usr/bin/env python3
"""Oracle: Chatchat 0.3.1.3's own web-UI client against `pdsd serve`, unchanged.

The client is `chatchat.webui_pages.utils.ApiRequest` (langchain-chatchat 0.3.1.3 from PyPI,
httpx<0.28) plus the `openai.Client(base_url=f"{api}/knowledge_base/local_kb/{kb}")` call of
its webui_pages/kb_chat.py. Set-up, the way a Chatchat user would do it with pdsd:

  <root>/models/tiny-qwen           `pdsd model init --preset tiny` (random weights, real tokenizer)
  <root>/models/bge-large-zh-v1.5   a tiny BERT (tests/fixtures/golden/tiny-bert) under Chatchat's
                                    default embedding name
  pdsd init --root R -l tiny-qwen -e bge-large-zh-v1.5     names into model_settings/kb_settings.yaml
  pdsd kb --recreate-vs --root R                           the samples KB (Chinese), dense store
  pdsd serve --root R --port 0 -e bge-large-zh-v1.5        no --model: model_settings.yaml gives it

Then every call of the web UI: list/search (the client's default score_threshold 2.0 returns
what `pdsd kb search` returns, dense and bm25), create -> upload -> list -> search -> update_docs
-> update_info -> delete_docs -> delete KB, recreate_vector_store (one progress frame per file,
none lost), server configs and prompt templates (Chatchat's defaults, byte for byte), a file's
chunks (search_kb_docs with file_name, the KB page's document view), KB chat through the openai client (first chunk
carries docs, byte for byte what Chatchat's format_reference makes of the search; with and
without return_direct), file chat (upload_temp_docs, then the temp_kb route and
/chat/file_chat), /chat/chat/completions, and search_engine's offline error.

Run with the venv that has langchain-chatchat (tests: -DPDSD_CHATCHAT_PYTHON=...); exits 77
(ctest SKIP) when chatchat cannot be imported.

  .venv-chatchat/bin/python scripts/oracle/chatchat_api.py --pdsd build/pdsd --fixtures tests/fixtures --src .
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

QUERIES = ["忘记管理员密码怎么办", "如何安装", "E2003 上游证书已过期"]
UPLOAD_TEXT = ("退货政策\n\n本公司支持七天无理由退货。退货时请保留发票和原包装，商品未使用方可退货。"
               "退货运费由买家承担，质量问题除外。退款在收到退货后三个工作日内原路退回。\n")


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def start_server(pdsd, root):
    proc = subprocess.Popen([pdsd, "serve", "--root", root, "--port", "0", "-e", "bge-large-zh-v1.5"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"pdsd serve: (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain logs
            return proc, m.group(1)
    proc.kill()
    sys.exit("server did not start:\n" + "".join(lines))


def make_root(args, tmp):
    root = os.path.join(tmp, "data")
    models = os.path.join(root, "models")
    os.makedirs(models)
    run([args.pdsd, "--log-level", "warn", "model", "init", "--preset", "tiny", "--seed", "7",
         "--tokenizer", os.path.join(args.fixtures, "qwen-tokenizer"), "--out", os.path.join(models, "tiny-qwen")])
    bge = os.path.join(models, "bge-large-zh-v1.5")
    os.makedirs(bge)
    tiny_bert = os.path.join(args.fixtures, "golden", "tiny-bert")
    wp = os.path.join(args.src, "tests", "tokenizer", "fixtures", "wordpiece")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_bert, f), bge)
    shutil.copy(os.path.join(wp, "tokenizer_config.json"), bge)
    with open(os.path.join(wp, "vocab.txt"), encoding="utf-8") as src, open(os.path.join(bge, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.writelines(line for _, line in zip(range(1000), src))
    run([args.pdsd, "init", "--root", root, "-l", "tiny-qwen", "-e", "bge-large-zh-v1.5"])
    settings = os.path.join(root, "kb_settings.yaml")
    with open(settings, encoding="utf-8") as f:
        text = f.read()
    with open(settings, "w", encoding="utf-8") as f:   # Chatchat's local KBs are dense (FAISS) search
        f.write(re.sub(r"(?m)^search_mode:\s*\w+", "search_mode: dense", text))
    run([args.pdsd, "kb", "--recreate-vs", "--root", root, "--no-progress"])
    return root


def parse_args():
    """The command line both Chatchat oracles take (tests/CMakeLists.txt passes it)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--src", required=True, help="the pdsd source tree (tests/tokenizer fixtures)")
    return ap.parse_args()


class Checks:
    """Named checks: each prints ok/FAIL as it runs; finish() exits 1 when any failed."""

    def __init__(self):
        self.failures, self.passed = [], []

    def __call__(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        (self.passed if cond else self.failures).append(what)

    def finish(self):
        if self.failures:
            print(f"{len(self.failures)} check(s) failed, {len(self.passed)} passed", file=sys.stderr)
            sys.exit(1)
        print(f"all {len(self.passed)} checks passed")


def main():
    args = parse_args()

    tmp = tempfile.mkdtemp(prefix="pdsd-chatchat-")
    os.environ["CHATCHAT_ROOT"] = os.path.join(tmp, "chatchat")   # Chatchat writes its settings/logs here
    os.makedirs(os.environ["CHATCHAT_ROOT"])
    try:
        import openai
        from chatchat.settings import Settings
        from chatchat.webui_pages.utils import ApiRequest
        from chatchat.server.knowledge_base.utils import format_reference
    except ImportError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        from oracle_required import skip  # exit 77, or 1 when PDSD_ORACLES_REQUIRED names chatchat
        skip("chatchat", f"langchain-chatchat 0.3.1.3 is not importable ({e}); make .venv-chatchat "
             "(scripts/setup_oracles.sh chatchat) or set PDSD_CHATCHAT_PYTHON")

    check = Checks()

    root = make_root(args, tmp)
    content = os.path.join(root, "knowledge_base", "samples", "content")
    n_files = sum(len(fs) for _, _, fs in os.walk(content))
    top_k = Settings.kb_settings.VECTOR_SEARCH_TOP_K
    check(Settings.kb_settings.SCORE_THRESHOLD == 2.0, f"Chatchat's default score_threshold is 2.0 ({Settings.kb_settings.SCORE_THRESHOLD})")
    proc, url = start_server(args.pdsd, root)
    try:
        api = ApiRequest(base_url=url)

        # serve found the model through model_settings.yaml and -e NAME under <root>/models
        models = [m.id for m in openai.Client(base_url=url + "/v1", api_key="NONE").models.list().data]
        check("tiny-qwen" in models and "bge-large-zh-v1.5" in models, f"/v1/models from model_settings.yaml and -e NAME: {models}")

        kbs = api.list_knowledge_bases()
        check("samples" in [k["kb_name"] for k in kbs], f"list_knowledge_bases -> {[k['kb_name'] for k in kbs]}")

        # the client's defaults (top_k, score_threshold 2.0) == pdsd kb search with pdsd's defaults
        def pdsd_search(q, mode):
            out = run([args.pdsd, "kb", "search", "--root", root, "-n", "samples", q, "--json", "--top_k", str(top_k), "--mode", mode])
            hits = json.loads(out)
            hits = hits.get("hits", hits) if isinstance(hits, dict) else hits
            return [(h["file_name"], h["chunk_index"]) for h in hits]

        for q in QUERIES:
            docs = api.search_kb_docs("samples", q)
            got = [(d["metadata"]["source"], d["metadata"]["chunk_index"]) for d in docs]
            want = pdsd_search(q, "dense")
            check(got == want and len(got) > 0, f"search_kb_docs('{q}') dense == pdsd kb search: {got} vs {want}")
            check(all(abs(d["score"] - (2 - 2 * d["metadata"]["pdsd"]["cosine"])) < 1e-6 for d in docs),
                  "score = Chatchat's distance 2 - 2*cos, pdsd's cosine under metadata.pdsd")
            raw = api.post("/knowledge_base/search_docs", json={"query": q, "knowledge_base_name": "samples", "top_k": top_k,
                                                                "score_threshold": 2.0, "search_mode": "bm25"}).json()
            got = [(d["metadata"]["source"], d["metadata"]["chunk_index"]) for d in raw]
            want = pdsd_search(q, "bm25")
            check(got == want and len(got) > 0, f"search_docs('{q}') bm25, threshold 2.0 == pdsd kb search --mode bm25: {got} vs {want}")
        docs = api.search_kb_docs("samples", QUERIES[0], top_k=10)
        if len(docs) >= 2:
            t = docs[1]["score"]
            strict = api.search_kb_docs("samples", QUERIES[0], top_k=10, score_threshold=t)
            check(0 < len(strict) <= len(docs) and all(d["score"] <= t + 1e-9 for d in strict),
                  f"score_threshold {t:.4f} keeps only distances <= it ({len(strict)} of {len(docs)})")
        check(api.search_kb_docs("samples", QUERIES[0], score_threshold=0.0) == [] or
              all(d["score"] <= 1e-9 for d in api.search_kb_docs("samples", QUERIES[0], score_threshold=0.0)),
              "score_threshold 0 keeps only exact matches")

        # create -> upload -> list -> search -> update_docs -> update_info -> delete_docs -> delete
        kb = "售后测试"
        up = os.path.join(tmp, "退货政策.txt")
        with open(up, "w", encoding="utf-8") as f:
            f.write(UPLOAD_TEXT)
        r = api.create_knowledge_base(kb, embed_model="bge-large-zh-v1.5")
        check(r.get("code") == 200, f"create_knowledge_base -> {r}")
        r = api.upload_kb_docs([up], knowledge_base_name=kb)
        check(r.get("code") == 200 and r["data"]["failed_files"] == {}, f"upload_kb_docs -> {r}")
        files = [f["file_name"] for f in api.list_kb_docs(kb)]
        check(files == ["退货政策.txt"], f"list_kb_docs -> {files}")
        docs = api.search_kb_docs(kb, "退货需要保留什么")
        check(len(docs) > 0 and docs[0]["metadata"]["source"] == "退货政策.txt", f"search after upload -> {len(docs)} doc(s)")
        r = api.update_kb_docs(kb, ["退货政策.txt", "不存在.txt"])
        check(r.get("code") == 200 and list(r["data"]["failed_files"]) == ["不存在.txt"], f"update_docs -> {r}")
        check(len(api.search_kb_docs(kb, "退货需要保留什么")) > 0, "search after update_docs")
        r = api.update_kb_info(kb, "售后与退货政策")
        check(r.get("code") == 200, f"update_kb_info -> {r}")
        info = [k["kb_info"] for k in api.list_knowledge_bases() if k["kb_name"] == kb]
        check(info == ["售后与退货政策"], f"kb_info stored -> {info}")
        r = api.delete_kb_docs(kb, ["退货政策.txt"], delete_content=True)
        check(r.get("code") == 200 and r["data"]["failed_files"] == {}, f"delete_kb_docs -> {r}")
        check(api.list_kb_docs(kb) == [] and api.search_kb_docs(kb, "退货需要保留什么") == [], "KB empty after delete_kb_docs")
        r = api.delete_knowledge_base(kb)
        check(r.get("code") == 200 and kb not in [k["kb_name"] for k in api.list_knowledge_bases()], f"delete_knowledge_base -> {r}")

        # recreate_vector_store: the client parses one frame per read; every file's frame arrives
        frames = list(api.recreate_vector_store("samples", embed_model="bge-large-zh-v1.5"))
        ok = [f for f in frames if isinstance(f, dict) and f.get("code") == 200]
        check(len(ok) == n_files and [f["finished"] for f in ok] == list(range(1, n_files + 1))
              and all(f["total"] == n_files for f in ok), f"recreate_vector_store: {len(ok)} progress frames of {n_files} files")

        cfg = api.get_server_configs()
        check(cfg.get("api_address", "").startswith("http://"), f"get_server_configs -> {cfg}")
        tpl = json.loads(api.get_prompt_template("rag", "default"))
        check("{{context}}" in tpl.get("data", "") and "{{question}}" in tpl["data"], "get_prompt_template rag/default")
        # every llm_model / rag default of Chatchat's PromptSettings, byte for byte, from the
        # prompt_settings.yaml pdsd init wrote; an unknown name is Chatchat's "not found"
        from chatchat.settings import PromptSettings
        for ty in ("llm_model", "rag"):
            for name, want in PromptSettings.model_fields[ty].default.items():
                got = json.loads(api.get_prompt_template(ty, name))
                check(got.get("code") == 200 and got.get("data") == want, f"get_prompt_template {ty}/{name} == Chatchat's default")
        got = json.loads(api.get_prompt_template("rag", "nope"))
        check(got.get("code") != 200 and got.get("msg", "").startswith("Prompt template not found"), f"get_prompt_template rag/nope -> {got.get('msg')!r}")

        # the KB page's view of one file: search_kb_docs(file_name=...) without a query = its chunks, in order
        biggest = max(api.list_kb_docs("samples"), key=lambda f: f["docs_count"])   # the file of most chunks
        sample = biggest["file_name"]
        docs = api.search_kb_docs(knowledge_base_name="samples", file_name=sample)
        check(len(docs) == biggest["docs_count"] > 1 and all(d["metadata"]["source"] == sample and d["page_content"] for d in docs)
              and [d["metadata"]["chunk_index"] for d in docs] == list(range(len(docs))),
              f"search_kb_docs(file_name={sample!r}): {len(docs)} chunks of that file, in order")

        # KB chat, as webui_pages/kb_chat.py calls it
        messages = [{"role": "user", "content": QUERIES[0]}]
        extra_body = dict(top_k=top_k, score_threshold=2.0, temperature=0.0, prompt_name="default", return_direct=False)
        client = openai.Client(base_url=f"{url}/knowledge_base/local_kb/samples", api_key="NONE")
        chunks = list(client.chat.completions.create(messages=messages, model="tiny-qwen", stream=True, max_tokens=8, extra_body=extra_body))
        first = chunks[0]
        docs = getattr(first, "docs", None)
        check(isinstance(docs, list) and len(docs) == len(api.search_kb_docs("samples", QUERIES[0]))
              and docs[0].startswith("出处 [1] [") and f"{url}/knowledge_base/download_doc?" in docs[0],
              f"kb chat: first chunk carries docs ({(docs or [''])[0][:60]!r})")
        want_docs = format_reference("samples", api.search_kb_docs("samples", QUERIES[0]), url)
        check(docs == want_docs, f"kb chat: docs == Chatchat's format_reference over search_kb_docs, byte for byte ({len(want_docs)})")
        text = "".join(c.choices[0].delta.content or "" for c in chunks[1:] if c.choices and getattr(c.choices[0], "delta", None))
        check(len(chunks) >= 3 and len(text) > 0, f"kb chat: {len(chunks)} chunks, answer {text[:30]!r}")
        extra_body["return_direct"] = True
        chunks = list(client.chat.completions.create(messages=messages, model="tiny-qwen", stream=True, extra_body=extra_body))
        check(len(chunks) == 1 and len(getattr(chunks[0], "docs", [])) > 0, f"kb chat return_direct: {len(chunks)} chunk with docs only")

        # the same stream through ApiRequest's own one-frame-per-read parser: no frame lost
        gen = api._httpx_stream2generator(api.post("/chat/kb_chat", json={"query": QUERIES[0], "kb_name": "samples", "stream": True,
                                                                          "temperature": 0, "max_tokens": 6}, stream=True), as_json=True)
        frames = list(gen)
        check(len(frames) >= 3 and "docs" in frames[0] and all("choices" in f for f in frames), f"/chat/kb_chat via ApiRequest: {len(frames)} frames parsed")

        # file chat: upload_temp_docs, then the temp_kb route and /chat/file_chat
        r = api.upload_temp_docs([up])
        kid = (r.get("data") or {}).get("id")
        check(r.get("code") == 200 and kid and r["data"]["failed_files"] == [], f"upload_temp_docs -> {r}")
        check(all(k["kb_name"] != kid for k in api.list_knowledge_bases()), "the temp KB is not listed")
        tclient = openai.Client(base_url=f"{url}/knowledge_base/temp_kb/{kid}", api_key="NONE")
        extra_body["return_direct"] = False
        chunks = list(tclient.chat.completions.create(messages=[{"role": "user", "content": "退货需要保留什么"}], model="tiny-qwen",
                                                      stream=True, max_tokens=8, extra_body=extra_body))
        docs = getattr(chunks[0], "docs", None) or []
        check(len(docs) > 0 and "退货政策.txt" in docs[0] and len(chunks) >= 3, f"temp_kb chat: docs {docs[0][:40] if docs else None!r}, {len(chunks)} chunks")
        frames = list(api.file_chat("退货需要保留什么", knowledge_id=kid, stream=True, max_tokens=6))
        answers = [f for f in frames if "answer" in f]
        check(len(answers) >= 1 and "docs" in frames[-1] and "退货政策.txt" in frames[-1]["docs"][0], f"/chat/file_chat: {len(answers)} answer frames, then docs")

        # LLM chat through Chatchat's unified route
        cc = openai.Client(base_url=f"{url}/chat", api_key="NONE")
        chunks = list(cc.chat.completions.create(model="tiny-qwen", messages=[{"role": "user", "content": "你好"}], stream=True, max_tokens=6))
        body = [c for c in chunks if c.choices]
        check(len(body) >= 2 and all(hasattr(c, "message_id") for c in chunks), f"/chat/chat/completions stream: {len(chunks)} chunks")

        # search engine: no internet -> a clear error in Chatchat's shape
        sclient = openai.Client(base_url=f"{url}/knowledge_base/search_engine/duckduckgo", api_key="NONE")
        try:
            list(sclient.chat.completions.create(messages=messages, model="tiny-qwen", stream=True, extra_body=extra_body))
            check(False, "search_engine mode -> error")
        except openai.APIError as e:
            check("not available offline" in str(e.message) + str(e.body), f"search_engine mode -> {e.message}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        check(rc == 130, f"SIGINT -> exit {rc}")
        check(not os.path.exists(os.path.join(root, "temp")) or os.listdir(os.path.join(root, "temp")) == [], "temp KBs removed at shutdown")
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
