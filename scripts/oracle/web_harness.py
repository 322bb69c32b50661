"""The harness the headless-Chromium page tests share (web_page_test.py, web_kb_prompts_test.py):
skip/fail exits, a free loopback port, running pdsd, JSON requests, a `pdsd serve` waited for on
/health, the command line and a headless Chromium driver."""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

SKIP = 77   # ctest's SKIP_RETURN_CODE


def need(cond, why):
    if not cond:
        print(f"SKIP: {why}")
        sys.exit(SKIP)


def fail(why):
    sys.exit(f"FAIL: {why}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} exited {r.returncode}\n{r.stderr}")
    return r.stdout


def http_json(url, body=None, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start_server(pdsd, model, root, tmp):
    """`pdsd serve` on a free port, its log in tmp/serve.log; (process, base URL) once /health answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "serve.log"), "w")
    server = subprocess.Popen([pdsd, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model, "--root", root],
                              stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    return server, base
        except OSError:
            pass
        if server.poll() is not None:
            fail(f"pdsd serve exited {server.returncode}\n" + open(log.name).read())
        time.sleep(0.1)
    fail("pdsd serve did not answer /health within 30 s")


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    return ap.parse_args()


def check_browser(a):
    """Skips (exit 77) without selenium, chromium or chromedriver."""
    try:
        import selenium  # noqa: F401  (only whether it imports)
    except ImportError:
        need(False, "selenium not installed (pip install selenium; CI: PDSD_TEST_VENV=1 scripts/setup.sh)")
    need(os.access(a.chromium, os.X_OK), f"no {a.chromium} (apt-get install chromium)")
    need(os.access(a.chromedriver, os.X_OK), f"no {a.chromedriver} (apt-get install chromium-driver)")


def new_driver(a):
    """Headless Chromium, 1400x900, Chinese UI language, 30 s page-load timeout."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--lang=zh-CN"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(a.chromedriver), options=opts)
    driver.set_page_load_timeout(30)
    return driver
