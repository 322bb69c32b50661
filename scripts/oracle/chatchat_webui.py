#!/usr/bin/env python3
"""Oracle: Chatchat 0.3.1.3's own Streamlit web UI (chatchat/webui.py, unchanged) on `pdsd serve`.

Runs the real script with Streamlit's testing harness (streamlit.testing.v1.AppTest, a
headless script runner: widgets are set from Python, what the page shows is read back as
elements), pointed at a `pdsd serve` this test starts. The set-up is chatchat_api.py's
(tiny Qwen2, a tiny BERT named bge-large-zh-v1.5, the samples KB), plus the three YAML files
a Chatchat user edits, written into CHATCHAT_ROOT before chatchat is imported:

  basic_settings.yaml  API_SERVER = pdsd's host/port; KB_ROOT_PATH = <root>/knowledge_base and
                       SQLALCHEMY_DATABASE_URI = sqlite:///<root>/knowledge_base/info.db: the KB
                       page reads the catalog with Chatchat's own SQLAlchemy models from pdsd's DB
  model_settings.yaml  one openai-type platform at pdsd's /v1 with the served model names
  kb_settings.yaml     DEFAULT_KNOWLEDGE_BASE: samples

Then, as a user: 多功能对话 (LLM chat: type a prompt, get an answer), RAG 对话 (knowledge-base
chat: the 知识库匹配结果 expander with the 出处 sources, then the answer; and 仅返回检索结果),
知识库管理 (the KB list with vs_type/embed model, the files table of samples = its content/
folder, the KB introduction saved through the page, 新建知识库, a file added, 依据源文件重建向量库,
删除知识库). Every run must show no exception element and no st.error.

Not driven through the page (AppTest 1.34 cannot): st.file_uploader (no upload in the harness;
the file goes in with the page's own ApiRequest.upload_kb_docs call and the page must then list
it) and row selection in the st_aggrid table (a custom component; the per-file buttons act on
the selected rows).

  .venv-chatchat/bin/python scripts/oracle/chatchat_webui.py --pdsd build/pdsd --fixtures tests/fixtures --src .
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatchat_api import QUERIES, UPLOAD_TEXT, Checks, make_root, parse_args, start_server  # noqa: E402  (one set-up for both oracles)

NEW_KB = "webui_test"


def write_chatchat_settings(cc_root, url, kb_root):
    import yaml
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    port = int(port)
    files = {
        "basic_settings.yaml": {
            "KB_ROOT_PATH": kb_root,
            "SQLALCHEMY_DATABASE_URI": "sqlite:///" + os.path.join(kb_root, "info.db"),
            "API_SERVER": {"host": host, "port": port, "public_host": host, "public_port": port},
        },
        "model_settings.yaml": {
            "DEFAULT_LLM_MODEL": "tiny-qwen",
            "DEFAULT_EMBEDDING_MODEL": "bge-large-zh-v1.5",
            "MAX_TOKENS": 8,   # short answers from the random tiny model
            "MODEL_PLATFORMS": [{"platform_name": "pdsd", "platform_type": "openai", "api_base_url": url + "/v1",
                                 "api_key": "EMPTY", "auto_detect_model": False,
                                 "llm_models": ["tiny-qwen"], "embed_models": ["bge-large-zh-v1.5"]}],
        },
        "kb_settings.yaml": {"DEFAULT_KNOWLEDGE_BASE": "samples"},
    }
    for name, data in files.items():
        with open(os.path.join(cc_root, name), "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, allow_unicode=True)


def walk(node):
    yield node
    for c in getattr(node, "children", {}).values():
        yield from walk(c)


def texts(node):
    """The markdown/text/info values under a node (what the user reads)."""
    return [n.value for n in walk(node) if type(n).__name__ in ("Markdown", "Text", "Caption", "Info") and isinstance(n.value, str)]


def aggrid_rows(at):
    """Row data of every st_aggrid table on the page (a custom component: its args carry the rows)."""
    tables = []
    for n in walk(at.main):
        if type(n).__name__ == "UnknownElement" and n.type == "component_instance" and "st_aggrid" in n.proto.component_name:
            args = json.loads(n.proto.json_args)
            opts = args.get("gridOptions") or {}
            if isinstance(opts, str):
                opts = json.loads(opts)
            rows = opts.get("rowData") if "rowData" in opts else args.get("row_data")
            if isinstance(rows, str):
                rows = json.loads(rows)
            tables.append(rows or [])
    return tables


def main():
    args = parse_args()

    try:
        import chatchat  # noqa: F401  (only the package: its settings are read at import of chatchat.settings)
        import streamlit
        from streamlit.testing.v1 import AppTest
    except ImportError as e:
        from oracle_required import skip  # exit 77, or 1 when PDSD_ORACLES_REQUIRED names chatchat
        skip("chatchat", f"langchain-chatchat 0.3.1.3 / streamlit.testing is not importable ({e}); make .venv-chatchat "
             "(scripts/setup_oracles.sh chatchat) or set PDSD_CHATCHAT_PYTHON")

    check = Checks()

    tmp = tempfile.mkdtemp(prefix="pdsd-chatchat-webui-")
    cc_root = os.path.join(tmp, "chatchat")
    os.makedirs(cc_root)
    os.environ["CHATCHAT_ROOT"] = cc_root
    root = make_root(args, tmp)
    kb_root = os.path.join(root, "knowledge_base")
    proc, url = start_server(args.pdsd, root)
    try:
        write_chatchat_settings(cc_root, url, kb_root)
        from chatchat.webui_pages.utils import ApiRequest
        api = ApiRequest(base_url=url)
        webui = os.path.join(os.path.dirname(chatchat.__file__), "webui.py")
        at = None

        def open_page(page):
            # A fresh session per page, the menu set to `page`. (One session across pages fails in
            # the harness only: AppTest re-serialises every widget through its format_func before a
            # run, and 多功能对话's 选择工具 format_func closes over `tools`, which the page rebinds
            # to a list after a prompt; a browser never calls it again.)
            nonlocal at
            at = AppTest.from_file(webui, default_timeout=120)
            at.session_state["selected_page"] = page
            at.run()
            clean(f"first load of {page}")

        def clean(what):
            errs = [e.value for e in at.error]
            exc = [e.message for e in at.exception]
            check(not errs and not exc, f"{what}: no exception or st.error on the page {(exc + errs)[:2]}")

        def last_assistant():
            msgs = [m for m in at.chat_message if m.name == "assistant"]
            return msgs[-1] if msgs else None

        print(f"streamlit {streamlit.__version__}, Chatchat webui {webui}", flush=True)
        open_page("多功能对话")
        check(len(at.chat_input) == 1 and any(b.label == "新建" for b in at.button), "多功能对话: the chat box and the 会话 buttons")

        # ---- 多功能对话: LLM chat through /chat/chat/completions ----
        at.chat_input(key="prompt").set_value("你好").run()
        clean("LLM chat")
        users = [m for m in at.chat_message if m.name == "user"]
        check(users and "你好" in texts(users[-1]), "LLM chat: the prompt is shown as the user's message")
        a = last_assistant()
        answer = "".join(texts(a)) if a else ""
        check(answer.strip() != "" and "正在思考" not in answer, f"LLM chat: a non-empty answer {answer[:40]!r}")

        # ---- RAG 对话: knowledge-base chat through /knowledge_base/local_kb/samples/chat/completions ----
        open_page("RAG 对话")
        kb_box = [s for s in at.selectbox if s.label == "请选择知识库："]
        check(kb_box and "samples" in kb_box[0].options and kb_box[0].value == "samples",
              f"RAG: the KB box lists samples and selects it {kb_box[0].options if kb_box else None}")
        n_msgs = len(at.chat_message)
        at.chat_input(key="prompt").set_value(QUERIES[0]).run()
        clean("KB chat")
        a = last_assistant()
        exp = [e for e in walk(a) if type(e).__name__ in ("Expander", "Status")]  # streamlit_chatbox: st.status if a else []
        refs = "\n".join(texts(exp[0])) if exp else ""
        want = api.search_kb_docs("samples", QUERIES[0])   # the page's defaults: top_k 3, score_threshold 2.0
        check(len(at.chat_message) == n_msgs + 2, "KB chat: a user and an assistant message were added")
        check(exp and exp[0].label == "知识库匹配结果" and refs.count("出处 [") == len(want) > 0
              and f"{url}/knowledge_base/download_doc?" in refs and want[0]["metadata"]["source"] in refs,
              f"KB chat: the 知识库匹配结果 expander holds {refs.count('出处 [')} 出处 sources (search_kb_docs: {len(want)}), "
              "with download links")
        outside = [t for t in texts(a) if t not in texts(exp[0])] if exp else []
        check(any(t.strip() and "正在查询知识库" not in t for t in outside), f"KB chat: a non-empty answer {outside[-1:]!r}")
        # 仅返回检索结果 (return_direct): the sources only
        at.checkbox(key="return_direct").check().run()
        at.chat_input(key="prompt").set_value(QUERIES[1]).run()
        clean("KB chat, 仅返回检索结果")
        a = last_assistant()
        exp = [e for e in walk(a) if type(e).__name__ in ("Expander", "Status")]  # streamlit_chatbox: st.status if a else []
        refs = "\n".join(texts(exp[0])) if exp else ""
        check("出处 [1]" in refs, "KB chat with 仅返回检索结果: the sources are shown")
        at.checkbox(key="return_direct").uncheck().run()

        # ---- 知识库管理: the catalog through Chatchat's SQLAlchemy models on pdsd's info.db ----
        open_page("知识库管理")
        box = [s for s in at.selectbox if s.label == "请选择或新建知识库："]
        check(box and box[0].options == ["samples (faiss @ bge-large-zh-v1.5)", "新建知识库"] and box[0].value == "samples",
              f"KB page: the KB list {box[0].options if box else None}")
        check(box and box[0].format_func("samples") == "samples (faiss @ bge-large-zh-v1.5)",
              f"KB page: samples shown with vs_type and embed model ({box[0].format_func('samples') if box else None})")
        box[0].select("samples").run()
        clean("KB page, samples")
        content = os.path.join(kb_root, "samples", "content")
        on_disk = sorted(os.path.relpath(os.path.join(d, f), content).replace(os.sep, "/")
                         for d, _, fs in os.walk(content) for f in fs)
        tables = aggrid_rows(at)
        rows = tables[0] if tables else []
        listed = sorted(r["file_name"] for r in rows)
        check(listed == on_disk and len(on_disk) > 0, f"KB page: the files table lists content/ ({len(listed)} of {len(on_disk)} files)")
        db_files = {f["file_name"]: f for f in api.list_kb_docs("samples")}
        check(rows and all(r["in_folder"] == "✓" and r["in_db"] == "✓" and r["docs_count"] == db_files[r["file_name"]]["docs_count"] > 0
                           for r in rows),
              "KB page: every file is in the folder (✓) and the vector store (✓), docs_count as list_files")
        info = [t for t in at.text_area if t.label == "请输入知识库介绍:"]
        check(info and info[0].value == [k["kb_info"] for k in api.list_knowledge_bases() if k["kb_name"] == "samples"][0],
              "KB page: the introduction box shows kb_info")
        info[0].input("样例知识库（网页修改）").run()
        clean("KB page, introduction edited")
        check([k["kb_info"] for k in api.list_knowledge_bases() if k["kb_name"] == "samples"] == ["样例知识库（网页修改）"],
              "KB page: the edited introduction is stored (update_info)")
        n_chunks = [k["chunk_count"] for k in api.list_knowledge_bases() if k["kb_name"] == "samples"][0]
        [b for b in at.button if b.label == "依据源文件重建向量库"][0].click().run()
        clean("KB page, 依据源文件重建向量库")
        check([k["chunk_count"] for k in api.list_knowledge_bases() if k["kb_name"] == "samples"] == [n_chunks],
              f"KB page: rebuilt from the source files, {n_chunks} chunks again")

        # 新建知识库 (the form), a file added, then 删除知识库
        [s for s in at.selectbox if s.label == "请选择或新建知识库："][0].select("新建知识库").run()
        clean("KB page, 新建知识库 form")
        at.text_input(key="kb_name").input(NEW_KB).run()
        check([s.value for s in at.selectbox if s.label == "Embeddings模型"] == ["bge-large-zh-v1.5"],
              "新建知识库: the embed model box offers pdsd's embedder")
        [b for b in at.button if b.label == "新建"][0].click().run()
        clean("KB page, 新建")
        box = [s for s in at.selectbox if s.label == "请选择或新建知识库："][0]
        check(f"{NEW_KB} (faiss @ bge-large-zh-v1.5)" in box.options and box.value == NEW_KB, f"新建: {NEW_KB} created and selected {box.options}")
        check(any(f"知识库 `{NEW_KB}` 中暂无文件" in t for t in texts(at.main)), "新建: the page says the new KB has no files")
        up = os.path.join(tmp, "退货政策.txt")
        with open(up, "w", encoding="utf-8") as f:
            f.write(UPLOAD_TEXT)
        chunk = [n.value for n in at.number_input if n.label == "单段文本最大长度："][0]
        overlap = [n.value for n in at.number_input if n.label == "相邻文本重合长度："][0]
        r = api.upload_kb_docs([up], knowledge_base_name=NEW_KB, override=True, chunk_size=chunk, chunk_overlap=overlap)
        check(r.get("code") == 200, f"添加文件到知识库 (the page's upload_kb_docs call, chunk {chunk}/{overlap}) -> {r.get('msg')}")
        at.run()
        clean("KB page after the upload")
        rows = (aggrid_rows(at) or [[]])[0]
        check([(r["file_name"], r["in_folder"], r["in_db"]) for r in rows] == [("退货政策.txt", "✓", "✓")] and rows[0]["docs_count"] > 0,
              f"KB page: the uploaded file is listed {[(r['file_name'], r['docs_count']) for r in rows]}")
        [b for b in at.button if b.label == "删除知识库"][0].click().run()
        clean("KB page, 删除知识库")
        box = [s for s in at.selectbox if s.label == "请选择或新建知识库："][0]
        check(all(not o.startswith(NEW_KB) for o in box.options) and NEW_KB not in [k["kb_name"] for k in api.list_knowledge_bases()]
              and not os.path.exists(os.path.join(kb_root, NEW_KB)), f"删除知识库: {NEW_KB} gone from the page, the API and the disk")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
