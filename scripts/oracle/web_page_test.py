#!/usr/bin/env python3
"""The web page in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
Selenium through /usr/bin/chromedriver) against a running `pdsd serve`.

Setup: `pdsd init` + `pdsd kb -r` on the bundled samples, and a tiny random-weight Qwen2 with
the real Qwen tokenizer (`pdsd model init --preset tiny --tokenizer ...`), so answers are
gibberish but streamed through the real model, template and tokenizer.

Checks: the page loads and lists the `samples` knowledge base; a question asked through the
textarea gets a streamed answer (text grows while the request is open) and its sources
(出处 entries naming sample files) under it; a file uploaded through the page is indexed
(search_docs finds it afterwards). A screenshot is written to --screenshot.

Exit 77 (ctest SKIP) when selenium, chromium or chromedriver is missing.
Usage: web_page_test.py --pdsd build/pdsd --fixtures tests/fixtures --screenshot OUT.png
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = 77


def need(cond, why):
    if not cond:
        print(f"SKIP: {why}")
        sys.exit(SKIP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}\n{r.stderr}")
    return r.stdout


def http_json(url, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait
    except ImportError:
        need(False, "selenium not installed (pip install selenium; CI: PDSD_TEST_VENV=1 scripts/setup.sh)")
    need(os.access(a.chromium, os.X_OK), f"no {a.chromium} (apt-get install chromium)")
    need(os.access(a.chromedriver, os.X_OK), f"no {a.chromedriver} (apt-get install chromium-driver)")

    tmp = tempfile.mkdtemp(prefix="pdsd_web_")
    server = None
    driver = None
    try:
        root, model = os.path.join(tmp, "data"), os.path.join(tmp, "model")
        run([a.pdsd, "init", "--root", root])
        run([a.pdsd, "kb", "-r", "--root", root, "--no-progress"])
        run([a.pdsd, "model", "init", "--preset", "tiny", "--out", model, "--seed", "7",
             "--tokenizer", os.path.join(a.fixtures, "qwen-tokenizer")])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(os.path.join(tmp, "serve.log"), "w")
        server = subprocess.Popen([a.pdsd, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model,
                                   "--root", root], stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None:
                sys.exit(f"FAIL: pdsd serve exited {server.returncode}\n" + open(log.name).read())
            time.sleep(0.1)
        else:
            sys.exit("FAIL: pdsd serve did not answer /health within 30 s")

        opts = webdriver.ChromeOptions()
        opts.binary_location = a.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900", "--lang=zh-CN"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(a.chromedriver), options=opts)
        driver.set_page_load_timeout(30)
        driver.get(base + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: any(o.get_attribute("value") == "samples"
                                 for o in d.find_elements(By.CSS_SELECTOR, "#kb option")))
        Select(driver.find_element(By.ID, "kb")).select_by_value("samples")
        status = driver.find_element(By.ID, "status").text
        print(f"status line: {status}")

        # Slow the stream down enough to see it grow: the tiny model is fast, so watch the
        # answer text from the page's own updates (textContent snapshots while sending).
        driver.execute_script("""
            window.__lengths = [];
            const obs = new MutationObserver(() => {
              const b = document.querySelectorAll('.msg.assistant .body');
              if (b.length) window.__lengths.push(b[b.length - 1].textContent.length);
            });
            obs.observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
        """)
        box = driver.find_element(By.ID, "input")
        box.send_keys("如何安装？")
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_element(By.ID, "send").is_enabled() and d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
        answer = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        text = answer.find_element(By.CSS_SELECTOR, ".body").text
        sources = answer.find_elements(By.CSS_SELECTOR, ".sources .source")
        lengths = driver.execute_script("return window.__lengths;")
        distinct = sorted(set(x for x in lengths if x > 0))
        print(f"answer ({len(text)} chars): {text[:80]!r}; sources: {len(sources)}; "
              f"answer length seen at {len(distinct)} distinct sizes while streaming")
        errors = driver.find_elements(By.CSS_SELECTOR, ".msg.error")
        if errors:
            sys.exit("FAIL: the page shows an error: " + errors[0].text)
        if not text.strip():
            sys.exit("FAIL: empty answer")
        if not sources:
            sys.exit("FAIL: no sources under the answer")
        src_text = " ".join(s.text for s in sources)
        if not any(name in src_text for name in ("安装指南.md", "常见问题.txt", "运维手册.docx", "发布说明.html",
                                                 "配置参考.json", "错误码.csv")):
            sys.exit("FAIL: sources do not name a sample file: " + src_text[:300])
        if len(distinct) < 2:
            sys.exit(f"FAIL: the answer did not stream (non-empty sizes seen: {distinct})")
        # Sources come after the answer text in the message box (under the answer).
        order = driver.execute_script(
            "const m = arguments[0]; return [...m.children].map(c => c.className);", answer)
        if order.index("sources") < order.index("body"):
            sys.exit(f"FAIL: sources above the answer: {order}")

        driver.execute_script("document.querySelector('.msg.user').scrollIntoView();")
        os.makedirs(os.path.dirname(os.path.abspath(a.screenshot)), exist_ok=True)
        driver.save_screenshot(a.screenshot)
        print(f"screenshot: {a.screenshot}")

        # Upload through the page, then find the new file's text over the API.
        up = os.path.join(tmp, "网页上传测试.txt")
        with open(up, "w", encoding="utf-8") as f:
            f.write("网页上传的文件：紫藤花开放时间是四月。")
        driver.find_element(By.ID, "files").send_keys(up)
        driver.find_element(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "uploadStatus").text.startswith(("已上传", "部分失败", "上传失败")))
        st = driver.find_element(By.ID, "uploadStatus").text
        print(f"upload status: {st}")
        if not st.startswith("已上传"):
            sys.exit("FAIL: upload: " + st)
        hits = http_json(base + "/knowledge_base/search_docs",
                         {"query": "紫藤花开放时间", "knowledge_base_name": "samples", "top_k": 3})
        hits = hits.get("data", hits) if isinstance(hits, dict) else hits
        if not any("紫藤花" in (h.get("page_content") or "") for h in hits):
            sys.exit(f"FAIL: uploaded file not found by search_docs: {json.dumps(hits, ensure_ascii=False)[:300]}")
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


if __name__ == "__main__":
    main()
