#!/usr/bin/env python3
"""The web page in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
Selenium through /usr/bin/chromedriver) against a running `pdsd serve`.

Setup: `pdsd init` + `pdsd kb -r` on the bundled samples, and a tiny random-weight Qwen2 with
the real Qwen tokenizer (`pdsd model init --preset tiny --tokenizer ...`), so answers are
gibberish but streamed through the real model, template and tokenizer.

Checks (the web app of issue 17): Chinese by default; a KB chat question gets a streamed answer
(text grows while the request is open), tokens/s, and its sources as collapsible cards under it
that name sample files, link to the document and show the Markdown chunks as HTML; the
conversation is stored server-side (GET /chat/conversations) and shown again after a page
reload, sources included; 👎 with a reason lands in the message row (/chat/feedback);
regenerate replaces the turn; an LLM chat answer stopped mid-stream stays on screen with its
query and the part answered before the stop stored, edit-and-resend replaces that turn here and
in the store, a sidebar rename is stored and heads the Markdown export; the language switch
gives English and keeps it across a reload;
the KB tab creates a KB, uploads a file, rebuilds with a finished progress bar, finds the file
with scores in its search box and deletes the KB; file chat answers from an uploaded file;
the Training tab lists the datasets of dataset_info.json (this repository's data/, copied into the
root) with a preview of one example, previews the `pdsd train` command and its dry-run plan, runs
3 steps on the tiny model whose loss curve appears (an SVG path through 3 points) with the
checkpoint list and the `pdsd serve --adapter` line; the run's adapter (and its checkpoint) is in
the dialogue's model picker (a broken model folder picked there shows its error in place and the
old model keeps serving), picking the run shows 加载中… and swaps the server's model (/health's id is
the run's), and an LLM chat answer then equals `pdsd chat --adapter` greedy output for the same
question (and differs from the base model's); the picker goes back to the base model, the
Training tab's 在对话中使用 button loads the run again and opens the dialogue; the Export tab
merges that adapter (the finished run is offered in its adapter list) and its 在对话中使用 loads
the merged model, whose answer equals `pdsd chat --model <export>`.
Screenshots: --screenshot and <stem>_english.png / <stem>_kb.png / <stem>_train.png /
<stem>_model_error.png / <stem>_models.png beside it.

Exit 77 (ctest SKIP) when selenium, chromium or chromedriver is missing.
Usage: web_page_test.py --pdsd build/pdsd --fixtures tests/fixtures --screenshot OUT.png
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from web_harness import check_browser, http_json, new_driver, parse_args, run, start_server

def main():
    a = parse_args()
    check_browser(a)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    tmp = tempfile.mkdtemp(prefix="pdsd_web_")
    server = None
    driver = None
    try:
        root, model = os.path.join(tmp, "data"), os.path.join(tmp, "model")
        run([a.pdsd, "init", "--root", root])
        run([a.pdsd, "kb", "-r", "--root", root, "--no-progress"])
        repo_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
        for name in os.listdir(repo_data):   # dataset_info.json and its files: the Training tab's datasets
            shutil.copy(os.path.join(repo_data, name), root)
        run([a.pdsd, "model", "init", "--preset", "tiny", "--out", model, "--seed", "7",
             "--tokenizer", os.path.join(a.fixtures, "qwen-tokenizer")])
        broken = os.path.join(root, "models", "broken")   # listed by the model picker, fails to load
        os.makedirs(broken)
        shutil.copy(os.path.join(a.fixtures, "qwen-tokenizer", "tokenizer.json"), broken)
        with open(os.path.join(broken, "config.json"), "w") as f:
            f.write("{ not json")
        server, base = start_server(a.pdsd, model, root, tmp)
        driver = new_driver(a)
        driver.get(base + "/")
        wait = WebDriverWait(driver, 60)
        by_id = lambda i: driver.find_element(By.ID, i)
        shot_dir = os.path.dirname(os.path.abspath(a.screenshot))
        os.makedirs(shot_dir, exist_ok=True)
        stem = os.path.splitext(os.path.basename(a.screenshot))[0]

        def shot(name):
            path = a.screenshot if name == "" else os.path.join(shot_dir, f"{stem}_{name}.png")
            driver.save_screenshot(path)
            print(f"screenshot: {path}")

        def options(select_id):   # read in one script: the page rebuilds its <option>s on every refresh
            return driver.execute_script("return [...document.querySelectorAll('#' + arguments[0] + ' option')].map(o => o.value);", select_id)

        def upload(name, text, input_id, button_id):   # writes tmp/name, picks it in the file input, clicks
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            by_id(input_id).send_keys(path)
            by_id(button_id).click()

        def no_error():
            errors = driver.find_elements(By.CSS_SELECTOR, ".msg.error")
            if errors:
                sys.exit("FAIL: the page shows an error: " + errors[0].text)

        def answered(count):
            # an answer is complete when its action bar is there and the send button is back
            return lambda d: (d.find_element(By.ID, "send").is_enabled() and
                              len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions")) >= count) or d.find_elements(By.CSS_SELECTOR, ".msg.error")

        wait.until(lambda d: "samples" in options("kb"))
        if driver.execute_script("return document.documentElement.lang") != "zh-CN" or by_id("send").text != "发送":
            sys.exit("FAIL: the page is not Chinese by default")
        Select(by_id("mode")).select_by_value("kb_chat")
        Select(by_id("kb")).select_by_value("samples")
        print(f"status line: {by_id('status').text}")

        # ---- KB chat: a streamed answer, sources as cards under it ----
        driver.execute_script("""
            window.__lengths = [];
            const obs = new MutationObserver(() => {
              const b = document.querySelectorAll('.msg.assistant .body');
              if (b.length) window.__lengths.push(b[b.length - 1].textContent.length);
            });
            obs.observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
        """)
        question = "如何安装？"
        by_id("input").send_keys(question)
        by_id("send").click()
        wait.until(answered(1))
        no_error()
        answer = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        text = answer.find_element(By.CSS_SELECTOR, ".body").text
        cards = answer.find_elements(By.CSS_SELECTOR, ".sources .source")
        lengths = driver.execute_script("return window.__lengths;")
        distinct = sorted(set(x for x in lengths if x > 0))
        speed = answer.find_element(By.CSS_SELECTOR, ".speed").text
        print(f"answer ({len(text)} chars): {text[:80]!r}; source cards: {len(cards)}; "
              f"answer length seen at {len(distinct)} distinct sizes while streaming; speed: {speed!r}")
        if not text.strip():
            sys.exit("FAIL: empty answer")
        if not cards:
            sys.exit("FAIL: no source cards under the answer")
        titles = " ".join(c.find_element(By.TAG_NAME, "summary").text for c in cards)
        samples = ("安装指南.md", "常见问题.txt", "运维手册.docx", "发布说明.html", "配置参考.json", "错误码.csv")
        if not any(name in titles for name in samples):
            sys.exit("FAIL: source cards do not name a sample file: " + titles[:300])
        if len(distinct) < 2:
            sys.exit(f"FAIL: the answer did not stream (non-empty sizes seen: {distinct})")
        if "tokens/s" not in speed:
            sys.exit(f"FAIL: no tokens/s after the answer: {speed!r}")
        order = driver.execute_script("const m = arguments[0]; return [...m.children].map(c => c.className);", answer)
        if order.index("sources") < order.index("body"):
            sys.exit(f"FAIL: sources above the answer: {order}")
        # A card opens the document (download_doc, inline) and is collapsible.
        links = answer.find_elements(By.CSS_SELECTOR, ".sources .source a.open")
        if not links or "knowledge_base/download_doc" not in links[0].get_attribute("href"):
            sys.exit("FAIL: a source card has no link to its document")
        with urllib.request.urlopen(links[0].get_attribute("href"), timeout=10) as r:
            if r.status != 200 or not r.read():
                sys.exit("FAIL: the source link does not download the document")
        cards[0].find_element(By.TAG_NAME, "summary").click()
        if cards[0].get_attribute("open") is None:
            sys.exit("FAIL: a source card does not open on click")
        # Markdown rendered as HTML: the chunks of the Markdown sample show headings / lists.
        md_tags = driver.execute_script(
            "return [...document.querySelectorAll('.sources .source .text')].flatMap(t => [...t.querySelectorAll('h1,h2,h3,h4,ul,ol,li,strong,code,table')].map(e => e.tagName));")
        print(f"rendered Markdown elements in the cards: {sorted(set(md_tags))}")
        if not md_tags:
            sys.exit("FAIL: no Markdown rendered as HTML in the source cards")
        shot("")

        # ---- the conversation is stored server-side and comes back after a reload ----
        convs = http_json(base + "/chat/conversations")["data"]
        if len(convs) != 1:
            sys.exit(f"FAIL: expected one stored conversation, got {convs}")
        cid = convs[0]["id"]
        rows = http_json(base + "/chat/conversations/messages?conversation_id=" + cid)["data"]
        if len(rows) != 1 or rows[0]["query"] != question or rows[0]["chat_type"] != "kb_chat" or not rows[0]["meta_data"].get("docs"):
            sys.exit(f"FAIL: the stored turn is not the asked one: {json.dumps(rows, ensure_ascii=False)[:400]}")
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#convList li") and d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions"))
        again = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        user_text = driver.find_elements(By.CSS_SELECTOR, ".msg.user .body")[-1].text
        if user_text != question or again.find_element(By.CSS_SELECTOR, ".body").text != text:
            sys.exit(f"FAIL: after a reload the conversation shows {user_text!r} / {again.text[:100]!r}")
        if not again.find_elements(By.CSS_SELECTOR, ".sources .source"):
            sys.exit("FAIL: after a reload the sources are gone")
        print(f"reloaded: conversation {convs[0]['name']!r} with its answer and {len(again.find_elements(By.CSS_SELECTOR, '.sources .source'))} source cards")

        # ---- feedback: thumbs down with a reason, stored in the message row ----
        again.find_element(By.CSS_SELECTOR, ".thumb-down").click()
        again.find_element(By.CSS_SELECTOR, ".fb-reason").send_keys("来源不对")
        again.find_element(By.CSS_SELECTOR, ".fb-submit").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .fb-done"))
        row = http_json(base + "/chat/conversations/messages?conversation_id=" + cid)["data"][0]
        if row["feedback_score"] != 0 or row["feedback_reason"] != "来源不对":
            sys.exit(f"FAIL: feedback not stored: {row['feedback_score']} {row['feedback_reason']!r}")
        print("feedback stored: score 0, reason 来源不对")

        # ---- regenerate replaces the turn ----
        again.find_element(By.CSS_SELECTOR, ".regenerate").click()

        def regenerated(d):
            ids = [m["id"] for m in http_json(base + "/chat/conversations/messages?conversation_id=" + cid)["data"]]
            return (d.find_element(By.ID, "send").is_enabled() and d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions")
                    and ids and ids[0] != row["id"]) or d.find_elements(By.CSS_SELECTOR, ".msg.error")
        wait.until(regenerated)
        no_error()
        rows = http_json(base + "/chat/conversations/messages?conversation_id=" + cid)["data"]
        if len(rows) != 1 or len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")) != 1:
            sys.exit(f"FAIL: regenerate did not replace the turn ({len(rows)} rows)")

        # ---- LLM chat: stop, edit-and-resend, rename ----
        by_id("newConv").click()
        Select(by_id("mode")).select_by_value("llm_chat")
        by_id("maxTokens").clear()
        by_id("maxTokens").send_keys("1024")   # long enough (~4 s here) to be stopped mid-answer
        by_id("input").send_keys("写一首很长的诗")
        by_id("send").click()
        WebDriverWait(driver, 30, poll_frequency=0.05).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body") and
            d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text.strip())
        by_id("stop").click()
        wait.until(lambda d: d.find_element(By.ID, "send").is_enabled())
        partial = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text
        status = by_id("status").text
        if not status.startswith("已停止") or not partial.strip():
            sys.exit(f"FAIL: stop: status {status!r}, partial answer {partial[:60]!r}")
        convs = http_json(base + "/chat/conversations")["data"]
        lid = convs[0]["id"]
        if convs[0]["chat_type"] != "llm_chat" or len(convs) != 2:
            sys.exit(f"FAIL: the LLM chat is not a new stored conversation: {convs}")

        def llm_rows():
            return http_json(base + "/chat/conversations/messages?conversation_id=" + lid)["data"]
        # The query is stored when asked; a stopped stream stores what was generated until the
        # server saw the client go (what was on screen, perhaps a few tokens more).
        time.sleep(0.5)
        stopped = llm_rows()
        if len(stopped) != 1 or stopped[0]["query"] != "写一首很长的诗" or not stopped[0]["response"].strip():
            sys.exit(f"FAIL: the stopped turn is stored as {json.dumps(stopped, ensure_ascii=False)[:300]}")
        print(f"stop: {status}; {len(partial)} characters on screen, {len(stopped[0]['response'])} stored")
        by_id("maxTokens").clear()
        by_id("maxTokens").send_keys("24")
        driver.find_elements(By.CSS_SELECTOR, ".msg.user .edit")[-1].click()
        if by_id("input").get_attribute("value") != "写一首很长的诗":
            sys.exit("FAIL: edit did not put the question back into the input box")
        by_id("input").clear()
        by_id("input").send_keys("写一首短诗")
        by_id("send").click()
        wait.until(lambda d: (d.find_element(By.ID, "send").is_enabled() and
                              len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions")) == 1 and
                              d.find_elements(By.CSS_SELECTOR, ".msg.user .body")[-1].text == "写一首短诗") or d.find_elements(By.CSS_SELECTOR, ".msg.error"))
        no_error()
        rows = llm_rows()
        users = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg.user .body")]
        if [r["query"] for r in rows] != ["写一首短诗"] or not rows[0]["response"] or users != ["写一首短诗"]:
            sys.exit(f"FAIL: edit-and-resend did not replace the turn: rows {[r['query'] for r in rows]}, on screen {users}")
        print("edit-and-resend: the edited question replaced the stopped turn, here and stored")
        item = driver.find_element(By.CSS_SELECTOR, f"#convList li[data-id='{lid}']")
        item.find_element(By.CSS_SELECTOR, ".rename").click()
        box = driver.find_element(By.CSS_SELECTOR, "#convList .rename-input")
        box.send_keys(Keys.CONTROL, "a")   # not clear(): WebDriver's clear blurs, and blur saves the box
        box.send_keys("诗\n")
        wait.until(lambda d: [c["name"] for c in http_json(base + "/chat/conversations")["data"] if c["id"] == lid] == ["诗"])
        with urllib.request.urlopen(base + "/chat/conversations/export?conversation_id=" + lid, timeout=10) as r:
            md = r.read().decode()
        if not md.startswith("# 诗\n") or "写一首短诗" not in md or rows[0]["response"].strip()[:10] not in md:
            sys.exit("FAIL: export after rename: " + md[:300])
        print("rename + export: the sidebar name is stored and heads the Markdown export")

        # ---- language switch: English, kept across a reload, and back ----
        by_id("lang").click()
        if by_id("send").text != "Send" or driver.execute_script("return document.documentElement.lang") != "en":
            sys.exit(f"FAIL: the language switch did not switch to English (send button {by_id('send').text!r})")
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#convList li"))
        if by_id("send").text != "Send" or by_id("tabKb").text != "Knowledge bases":
            sys.exit("FAIL: English not kept after a reload")
        shot("english")
        by_id("lang").click()
        if by_id("send").text != "发送":
            sys.exit("FAIL: could not switch back to Chinese")
        print("language switch: 中文 -> English (kept after reload) -> 中文")

        # ---- KB tab: create, upload, rebuild with progress, search with scores, delete ----
        by_id("tabKb").click()
        by_id("newKbName").send_keys("webtest")
        by_id("newKbInfo").send_keys("网页测试")
        by_id("createKb").click()
        wait.until(lambda d: d.find_element(By.ID, "createStatus").text)
        if not by_id("createStatus").text.startswith("已新建"):
            sys.exit("FAIL: create KB: " + by_id("createStatus").text)
        Select(by_id("kbManage")).select_by_value("webtest")
        upload("网页上传测试.md", "# 花期\n\n网页上传的文件：紫藤花开放时间是四月。\n", "files", "upload")
        wait.until(lambda d: d.find_element(By.ID, "uploadStatus").text.startswith(("已上传", "部分失败", "上传失败")))
        st = by_id("uploadStatus").text
        print(f"upload status: {st}")
        if not st.startswith("已上传"):
            sys.exit("FAIL: upload: " + st)
        wait.until(lambda d: "网页上传测试.md" in d.find_element(By.ID, "fileTable").text)
        by_id("rebuild").click()
        wait.until(lambda d: d.find_element(By.ID, "rebuildProgress").get_attribute("data-done") == "1"
                   or d.find_element(By.ID, "rebuildStatus").text.startswith("出错"))
        bar = by_id("rebuildProgress")
        print(f"rebuild: progress {bar.get_attribute('value')}/{bar.get_attribute('max')}; {by_id('rebuildStatus').text}")
        if bar.get_attribute("data-done") != "1" or float(bar.get_attribute("value")) < float(bar.get_attribute("max")):
            sys.exit("FAIL: rebuild: " + by_id("rebuildStatus").text)
        by_id("searchQuery").send_keys("紫藤花开放时间")
        by_id("searchBtn").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#searchResults .hit") or "出错" in d.find_element(By.ID, "searchResults").text)
        hit = driver.find_elements(By.CSS_SELECTOR, "#searchResults .hit")
        if not hit or "紫藤花" not in hit[0].text or "score" not in hit[0].text:
            sys.exit("FAIL: search box: " + by_id("searchResults").text[:300])
        print(f"search: {hit[0].find_element(By.CSS_SELECTOR, '.score').text}")
        shot("kb")
        by_id("deleteKb").click()
        by_id("deleteKb").click()   # the second click confirms
        wait.until(lambda d: "webtest" not in options("kbManage"))
        names = [k["kb_name"] for k in http_json(base + "/knowledge_base/list_knowledge_bases")["data"]]
        if "webtest" in names:
            sys.exit(f"FAIL: KB not deleted: {names}")
        print("KB tab: create -> upload -> rebuild -> search -> delete")

        # ---- file chat: upload a file, ask about it ----
        by_id("tabChat").click()
        by_id("newConv").click()
        Select(by_id("mode")).select_by_value("file_chat")
        upload("会议纪要.txt", "会议纪要：下次评审定在周五下午三点，地点是二号会议室。", "tempFiles", "tempUpload")
        wait.until(lambda d: d.find_element(By.ID, "tempStatus").text.startswith(("已上传", "上传失败")))
        if not by_id("tempStatus").text.startswith("已上传"):
            sys.exit("FAIL: file chat upload: " + by_id("tempStatus").text)
        by_id("input").send_keys("下次评审在哪里？")
        by_id("send").click()
        wait.until(answered(1))
        no_error()
        fa = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        ftitles = " ".join(c.text for c in fa.find_elements(By.CSS_SELECTOR, ".sources .source summary"))
        if "会议纪要.txt" not in ftitles:
            sys.exit("FAIL: file chat sources do not name the uploaded file: " + ftitles)
        convs = http_json(base + "/chat/conversations")["data"]
        if len(convs) != 3 or convs[0]["chat_type"] != "file_chat":
            sys.exit(f"FAIL: the file chat is not a stored conversation: {convs}")
        print("file chat: answered with the uploaded file as its source")
        train_tabs(driver, wait, by_id, options, shot, model, base, root, a.pdsd, no_error)
        print("OK")
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def train_tabs(driver, wait, by_id, options, shot, model, base, root, pdsd, no_error):
    """Training tab: datasets + preview, command preview + dry run, a 3-step run with its loss
    curve, checkpoints and serve line; the run's adapter chosen in the model picker answers as
    `pdsd chat --adapter` does; Export tab: merge the run's adapter, use the merged model in chat."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def fill(field, value):
        by_id(field).clear()
        by_id(field).send_keys(value)

    t0 = time.time()
    by_id("tabTrain").click()
    wait.until(lambda d: "helpdesk_alpaca_zh" in options("trDatasets"))
    Select(by_id("trDatasets")).select_by_value("helpdesk_alpaca_zh")
    wait.until(lambda d: "<|im_start|>assistant" in d.find_element(By.ID, "trPreviewExample").text)
    fill("trModel", model)
    for field, value in (("trMaxSteps", "3"), ("trLogSteps", "1"), ("trSaveSteps", "2"), ("trBatch", "2"), ("trAccum", "1"),
                         ("trCutoff", "128"), ("trLr", "0.01"), ("trDevice", "cpu")):
        fill(field, value)
    by_id("trPreview").click()
    wait.until(lambda d: not d.find_element(By.ID, "trPlan").get_attribute("hidden") or "出错" in d.find_element(By.ID, "trCommand").text)
    cmd, plan = by_id("trCommand").text, by_id("trPlan").text
    if not cmd.startswith("pdsd train ") or "--max_steps=3" not in cmd or "--dataset=helpdesk_alpaca_zh" not in cmd:
        sys.exit("FAIL: command preview: " + cmd[:400])
    if "3 total" not in plan:
        sys.exit("FAIL: dry-run plan: " + plan[:400])
    print(f"command preview: {cmd[:120]}...; plan: {plan.splitlines()[0] if plan else ''}")
    by_id("trStart").click()
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "trState").get_attribute("class") in ("state-finished", "state-failed", "state-stopped")
                                     or d.find_element(By.ID, "trState").text.startswith("出错"))
    state = by_id("trState").text
    if by_id("trState").get_attribute("class") != "state-finished":
        sys.exit(f"FAIL: training from the page: {state}\n" + by_id("trLog").text[-1500:])
    path = driver.find_elements(By.CSS_SELECTOR, "#lossCurve path#lossPath")
    d_attr = path[0].get_attribute("d") if path else ""
    points = d_attr.count("M") + d_attr.count("L")
    if points != 3:
        sys.exit(f"FAIL: the loss curve has {points} points (d={d_attr!r})")
    ckpts, serve = by_id("trCheckpoints").text, by_id("trServe").text
    if "checkpoint-2" not in ckpts or "--adapter" not in serve:
        sys.exit(f"FAIL: checkpoints {ckpts!r} / serve line {serve!r}")
    print(f"training from the page: {state}; loss curve through {points} points; checkpoints {ckpts}; {serve}")
    driver.execute_script("document.getElementById('lossCurve').scrollIntoView({block: 'center'});")
    shot("train")
    run_dir = http_json(base + "/pdsd/train/status")["data"]["output_dir"]
    use_models(driver, wait, by_id, options, shot, model, base, root, pdsd, no_error, run_dir)

    by_id("tabExport").click()
    wait.until(lambda d: d.find_element(By.ID, "exAdapter").get_attribute("value"))
    adapters = driver.execute_script("return [...document.querySelectorAll('#exAdapters option')].map(o => o.value);")
    if by_id("exAdapter").get_attribute("value") not in adapters or by_id("exModel").get_attribute("value") != model:
        sys.exit(f"FAIL: the export form is not prefilled with the run: {adapters}")
    Select(by_id("exDtype")).select_by_visible_text("fp32")
    by_id("exStart").click()
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "exState").get_attribute("class") in ("state-finished", "state-failed")
                                     or d.find_element(By.ID, "exState").text.startswith("出错"))
    if by_id("exState").get_attribute("class") != "state-finished" or "pdsd serve --model" not in by_id("exServe").text:
        sys.exit("FAIL: export from the page: " + by_id("exState").text + "\n" + by_id("exLog").text[-1500:])
    print(f"export from the page: {by_id('exState').text}; {by_id('exServe').text}; train + export tabs took {time.time() - t0:.1f} s")
    # The merged model in the dialogue: the Export tab's button loads it.
    export_dir = http_json(base + "/pdsd/export/status")["data"]["output_dir"]
    use_button(driver, wait, by_id, base, "exUse", os.path.basename(export_dir))
    got = ask_greedy(driver, wait, by_id, base, no_error, "导出后的模型你好")
    want = chat_cli(pdsd, root, "导出后的模型你好", "--model", export_dir)
    if got != want:
        sys.exit(f"FAIL: the exported model's answer on the page {got!r} is not `pdsd chat --model <export>`'s {want!r}")
    print(f"export in chat: /health model {health_model(base)!r}; answer = pdsd chat --model <export>'s ({got[:40]!r})")


QUESTION = "你好，你是谁？"
TOKENS = "16"


def chat_cli(pdsd, root, question, *model_args):
    """`pdsd chat -q` greedy, TOKENS new tokens: the answer the page must show for `question`."""
    r = subprocess.run([pdsd, "chat", *model_args, "--root", root, "-q", question, "--temperature", "0",
                        "--max_new_tokens", TOKENS], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        sys.exit(f"FAIL: pdsd chat {' '.join(model_args)} exited {r.returncode}\n{r.stderr[-1500:]}")
    return r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout


def health_model(base):
    return http_json(base + "/health")["model"]


def ask_greedy(driver, wait, by_id, base, no_error, question):
    """A new LLM chat at temperature 0 with TOKENS tokens: asks `question`, returns the stored answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    by_id("tabChat").click()
    by_id("newConv").click()
    Select(by_id("mode")).select_by_value("llm_chat")
    for field, value in (("temperature", "0"), ("maxTokens", TOKENS)):
        by_id(field).clear()
        by_id(field).send_keys(value)
    by_id("input").send_keys(question)
    by_id("send").click()
    wait.until(lambda d: (d.find_element(By.ID, "send").is_enabled() and d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions"))
               or d.find_elements(By.CSS_SELECTOR, ".msg.error"))
    no_error()
    conv = http_json(base + "/chat/conversations")["data"][0]
    rows = http_json(base + "/chat/conversations/messages?conversation_id=" + conv["id"])["data"]
    if len(rows) != 1 or rows[0]["query"] != question or not rows[0]["response"]:
        sys.exit(f"FAIL: no stored answer for {question!r}: {json.dumps(rows, ensure_ascii=False)[:300]}")
    return rows[0]["response"]


def wait_loaded(wait, by_id, base, want_id):
    """After a load was asked for: the picker's status says loaded (or failed), /health has `want_id`."""
    from selenium.webdriver.common.by import By
    wait.until(lambda d: d.find_element(By.ID, "modelStatus").text.startswith(("已加载", "加载失败")))
    status = by_id("modelStatus").text
    if not status.startswith("已加载") or health_model(base) != want_id:
        sys.exit(f"FAIL: loading {want_id!r}: status {status!r}, /health model {health_model(base)!r}")
    return status


def use_button(driver, wait, by_id, base, button, want_id):
    """A tab's 在对话中使用: loads what its job made, then the dialogue tab is open."""
    if not by_id(button).is_displayed() or by_id(button).text != "在对话中使用":
        sys.exit(f"FAIL: no 在对话中使用 button ({button}) after the job finished")
    by_id(button).click()
    wait_loaded(wait, by_id, base, want_id)
    wait.until(lambda d: by_id("chatPage").is_displayed())


def use_models(driver, wait, by_id, options, shot, model, base, root, pdsd, no_error, run_dir):
    """The finished run in the dialogue's model picker: picked, loaded (/health's id changes), and
    its greedy answer is `pdsd chat --adapter`'s; back to the base, then the Training tab's button."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    run = os.path.relpath(os.path.realpath(run_dir), os.path.realpath(root))

    def picker():   # adapter or model path -> the picker's option value (the load body)
        return {(c.get("adapter") or c.get("model")): v for v in options("model") if v for c in [json.loads(v)]}
    try:   # the page refreshes the picker when it sees the run finish
        WebDriverWait(driver, 10).until(lambda d: run in picker() and run + "/checkpoint-2" in picker())
    except TimeoutException:
        pass
    choices = picker()
    if run not in choices or run + "/checkpoint-2" not in choices:
        sys.exit(f"FAIL: the model picker does not offer the run {run!r} and its checkpoint-2: {sorted(choices)}")
    base_choice = choices.get(os.path.realpath(model))
    if not base_choice or health_model(base) != os.path.basename(model):
        sys.exit(f"FAIL: the picker does not offer the start-up model {model!r}: {sorted(choices)}")
    driver.execute_script("""
        window.__modelStatus = [];
        new MutationObserver(() => window.__modelStatus.push(document.getElementById('modelStatus').textContent))
          .observe(document.getElementById('modelStatus'), {subtree: true, childList: true, characterData: true});
    """)
    # A model that does not load: the error in place, the old model still serving and selected.
    Select(by_id("model")).select_by_value(choices["models/broken"])
    wait.until(lambda d: by_id("modelStatus").text.startswith(("已加载", "加载失败")))
    failed = by_id("modelStatus").text
    if not failed.startswith("加载失败") or "models/broken" not in failed or health_model(base) != os.path.basename(model) \
            or json.loads(Select(by_id("model")).first_selected_option.get_attribute("value")).get("model") != os.path.realpath(model):
        sys.exit(f"FAIL: a broken model: status {failed!r}, /health {health_model(base)!r}")
    print(f"broken model picked: {failed[:90]!r}; still serving {health_model(base)!r}")
    shot("model_error")
    Select(by_id("model")).select_by_value(choices[run])
    status = wait_loaded(wait, by_id, base, os.path.basename(run))
    seen = driver.execute_script("return window.__modelStatus;")
    if seen.count("加载中…") < 2:   # the broken model's load, then the run's
        sys.exit(f"FAIL: no 加载中… while the adapter loaded (status texts {seen})")
    loaded = http_json(base + "/pdsd/models")["data"]["loaded"]
    if loaded["adapter"] != run:
        sys.exit(f"FAIL: /pdsd/models does not report the run's adapter as loaded: {loaded}")
    got = ask_greedy(driver, wait, by_id, base, no_error, QUESTION)
    who = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .who")[-1].text
    want = chat_cli(pdsd, root, QUESTION, "--model", model, "--adapter", run_dir)
    plain = chat_cli(pdsd, root, QUESTION, "--model", model)
    print(f"picker: {status}; /health model {health_model(base)!r}; answer {got[:40]!r} "
          f"(pdsd chat --adapter: {want[:40]!r}; base model: {plain[:40]!r})")
    if got != want:
        sys.exit(f"FAIL: the adapter's answer on the page {got!r} is not `pdsd chat --adapter`'s {want!r}")
    if want == plain:
        sys.exit("FAIL: the adapter's answer equals the base model's: the swap is not visible")
    if os.path.basename(run) not in who:
        sys.exit(f"FAIL: the answer is not labelled with the loaded model: {who!r}")
    shot("models")
    # Back to the base model through the picker, then the Training tab's button loads the run again.
    Select(by_id("model")).select_by_value(base_choice)
    wait_loaded(wait, by_id, base, os.path.basename(model))
    by_id("tabTrain").click()
    use_button(driver, wait, by_id, base, "trUse", os.path.basename(run))
    print(f"picker -> the base model, then the Training tab's 在对话中使用 -> {health_model(base)!r} in the dialogue tab")


if __name__ == "__main__":
    main()
