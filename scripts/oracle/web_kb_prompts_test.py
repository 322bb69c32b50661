#!/usr/bin/env python3
"""The web page's prompt templates, a file's chunk preview and a stopped answer, in a real
browser: headless Chromium (Debian's /usr/bin/chromium, Selenium through /usr/bin/chromedriver)
against a running `pdsd serve` (the harness of web_page_test.py: `pdsd init` + `pdsd kb -r` on
the samples, a tiny random-weight Qwen2 with the real Qwen tokenizer).

Checks (issue 17's leftovers):
  * 提示词模板: the sidebar's select lists the rag templates of <root>/prompt_settings.yaml (one
    added to the file pdsd init wrote), picking one puts its name in the kb_chat request, and
    the server filled it: the stored greedy answer equals a direct request with that body, whose
    prompt is longer than the default template's by the added words (usage.prompt_tokens);
  * the KB tab: clicking a file name shows its chunks (index, characters, text), as many as
    list_files counts for it, in order, the text that search_docs returns for the file;
  * 停止: an LLM answer stopped mid-stream keeps the text shown: the stored row holds it (the
    server's pieces up to the stop), and after a reload the page shows that answer.
Screenshots: --screenshot and <stem>_chunks.png beside it.

Exit 77 (ctest SKIP) when selenium, chromium or chromedriver is missing.
Usage: web_kb_prompts_test.py --pdsd build/pdsd --fixtures tests/fixtures --screenshot OUT.png
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

from web_harness import check_browser, fail, http_json, new_driver, parse_args, run, start_server

# Added under rag: in the file pdsd init writes (a YAML block, as a user would add it).
CONCISE = "  concise: |-\n    请用一句话回答，只根据下面的资料。\n    资料：{{context}}\n    问题：{{question}}\n"


def main():
    a = parse_args()
    check_browser(a)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    tmp = tempfile.mkdtemp(prefix="pdsd_web_kbp_")
    server = driver = None
    try:
        root, model = os.path.join(tmp, "data"), os.path.join(tmp, "model")
        run([a.pdsd, "init", "--root", root])
        run([a.pdsd, "kb", "-r", "--root", root, "--no-progress"])
        settings = os.path.join(root, "prompt_settings.yaml")
        if not os.path.exists(settings):
            fail("pdsd init wrote no prompt_settings.yaml")
        with open(settings, encoding="utf-8") as f:
            text = f.read()
        if "\nrag:\n" not in text or not text.endswith("\n"):
            fail("prompt_settings.yaml has no rag: section at the end")
        with open(settings, "a", encoding="utf-8") as f:
            f.write(CONCISE)
        run([a.pdsd, "model", "init", "--preset", "tiny", "--out", model, "--seed", "7",
             "--tokenizer", os.path.join(a.fixtures, "qwen-tokenizer")])
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

        def options(select_id):
            return driver.execute_script("return [...document.querySelectorAll('#' + arguments[0] + ' option')].map(o => o.value);", select_id)

        def set_number(input_id, value):
            by_id(input_id).clear()
            by_id(input_id).send_keys(str(value))

        def answered(count):
            return lambda d: (d.find_element(By.ID, "send").is_enabled() and
                              len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions")) >= count) or d.find_elements(By.CSS_SELECTOR, ".msg.error")

        def no_error():
            errors = driver.find_elements(By.CSS_SELECTOR, ".msg.error")
            if errors:
                fail("the page shows an error: " + errors[0].text)

        # Every JSON body the page posts, to check what a request carried.
        record_js = """
            window.__bodies = [];
            const orig = window.fetch;
            window.fetch = (url, init) => {
              if (init && typeof init.body === 'string') window.__bodies.push([String(url), init.body]);
              return orig(url, init);
            };"""

        # ---- 提示词模板: the select lists the file's rag names; the pick rides in the request ----
        wait.until(lambda d: "samples" in options("kb") and "concise" in options("promptName"))
        driver.execute_script(record_js)
        names = options("promptName")
        print(f"prompt template select: {names}")
        if names != ["default", "concise"]:
            fail(f"the prompt select should list the rag templates but 'empty' (used when nothing is found): {names}")
        if by_id("promptRow").is_displayed():
            fail("the prompt select shows in LLM chat mode")
        Select(by_id("mode")).select_by_value("kb_chat")
        Select(by_id("kb")).select_by_value("samples")
        if not by_id("promptRow").is_displayed():
            fail("no prompt select in KB chat mode")
        Select(by_id("promptName")).select_by_value("concise")
        set_number("temperature", 0)   # greedy: the answer can be checked against a direct request
        set_number("maxTokens", 16)
        question = "如何安装？"
        by_id("input").send_keys(question)
        by_id("send").click()
        wait.until(answered(1))
        no_error()
        sent = [json.loads(b) for u, b in driver.execute_script("return window.__bodies;") if u.endswith("chat/kb_chat")]
        if len(sent) != 1 or sent[0].get("prompt_name") != "concise":
            fail(f"the kb_chat request did not carry prompt_name concise: {sent}")
        cid = http_json(base + "/chat/conversations")["data"][0]["id"]
        stored = http_json(base + "/chat/conversations/messages?conversation_id=" + cid)["data"][0]["response"]
        direct = dict(sent[0], stream=False)
        direct.pop("conversation_id", None)
        got = http_json(base + "/chat/kb_chat", direct)
        plain = http_json(base + "/chat/kb_chat", dict(direct, prompt_name="default"))
        concise_tokens, default_tokens = got["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"]
        print(f"kb_chat with concise: {concise_tokens} prompt tokens (default template: {default_tokens}); answer {stored[:40]!r}")
        if got["choices"][0]["message"]["content"] != stored or not stored:
            fail(f"the page's answer {stored[:60]!r} is not the concise template's {got['choices'][0]['message']['content'][:60]!r}")
        if concise_tokens == default_tokens:
            fail("the concise and default templates gave the same prompt length: the name was not used")
        if by_id("promptName").get_attribute("value") != "concise":
            fail("the pick did not stay selected")
        shot("")

        # ---- KB tab: a file's chunks in a panel ----
        by_id("tabKb").click()
        Select(by_id("kbManage")).select_by_value("samples")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fileTable .file-link"))
        files = {f["file_name"]: f for f in http_json(base + "/knowledge_base/list_files?knowledge_base_name=samples")["data"]}
        target = max(files, key=lambda n: files[n]["docs_count"])   # the file of most chunks
        link = [e for e in driver.find_elements(By.CSS_SELECTOR, "#fileTable .file-link") if e.text == target]
        if not link:
            fail(f"no clickable name for {target} in the file table")
        link[0].click()
        wait.until(lambda d: d.find_element(By.ID, "chunkPanel").is_displayed() and d.find_elements(By.CSS_SELECTOR, "#chunkTable tbody tr"))
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#chunkTable tbody tr')].map(r => [...r.children].map(c => c.textContent));")
        want = http_json(base + "/knowledge_base/search_docs", {"knowledge_base_name": "samples", "query": "", "file_name": target})
        print(f"chunk preview of {target}: {len(rows)} rows (list_files: {files[target]['docs_count']}); "
              f"title {by_id('chunkTitle').text!r}")
        if len(rows) != files[target]["docs_count"] or len(rows) < 2:
            fail(f"{len(rows)} chunk rows for {target}, list_files counts {files[target]['docs_count']}")
        for i, (row, doc) in enumerate(zip(rows, want)):
            if row[0] != str(i) or row[1] != str(len(doc["page_content"])) or row[2] != doc["page_content"]:
                fail(f"chunk row {i} is {row[0]!r} / {row[1]!r} / {row[2][:40]!r}, search_docs has {doc['page_content'][:40]!r}")
        if target not in by_id("chunkTitle").text:
            fail("the panel does not name the file")
        shot("chunks")
        by_id("chunkClose").click()
        if by_id("chunkPanel").is_displayed():
            fail("the chunk panel does not close")

        # ---- stop: the shown part is the stored answer, and comes back after a reload ----
        by_id("tabChat").click()
        by_id("newConv").click()
        Select(by_id("mode")).select_by_value("llm_chat")
        set_number("maxTokens", 1024)   # long enough (seconds here) to be stopped mid-answer
        set_number("temperature", 0.7)  # sampled: the greedy answer of the random model is blank lines
        by_id("input").send_keys("写一首很长的诗")
        by_id("send").click()
        WebDriverWait(driver, 30, poll_frequency=0.05).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body") and
            len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text.strip()) > 10)
        by_id("stop").click()
        wait.until(lambda d: d.find_element(By.ID, "send").is_enabled())
        shown = driver.execute_script("return state.turns[state.turns.length - 1].response;")
        status = by_id("status").text
        if not status.startswith("已停止") or "已保存" not in status:
            fail(f"stop: status {status!r}")
        lid = http_json(base + "/chat/conversations")["data"][0]["id"]
        kept = ""
        for _ in range(100):   # the server notices at its next write
            kept = http_json(base + "/chat/conversations/messages?conversation_id=" + lid)["data"][0]["response"]
            if kept:
                break
            time.sleep(0.05)
        print(f"stopped after {len(shown)} characters shown; stored answer {len(kept)} characters: {kept[:40]!r}")
        if not kept.startswith(shown):
            fail(f"the stored answer ({len(kept)} chars) does not start with the {len(shown)} shown")
        if len(kept) > len(shown) + 200:
            fail(f"the stored answer ({len(kept)} chars) runs far past the {len(shown)} shown: not a stopped answer")
        driver.refresh()
        wait.until(lambda d: d.execute_script("return state.conv;") == lid and d.find_elements(By.CSS_SELECTOR, ".msg.assistant .actions"))
        again = driver.execute_script("return state.turns.map(t => t.response);")
        body = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text
        if again != [kept] or not body.strip() or "没有保存的回答" in body:
            fail(f"after a reload the stopped turn shows {body[:60]!r} (turns {[len(x) for x in again]})")
        print(f"reloaded: the stopped turn shows its {len(kept)} stored characters")
    finally:
        if driver:
            driver.quit()
        if server:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
