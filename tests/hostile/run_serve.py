#!/usr/bin/env python3
"""The hostile corpus through `pdsd serve` (issue #16, server side).

  tests/hostile/run_serve.py PDSD [FIXTURES_DIR]

Every corpus document is uploaded to /knowledge_base/upload_docs twice, once with a
Content-Length body and once chunked; every JSON document is posted as the body of the
JSON routes, both ways too. Each answer must be a 2xx/4xx with a JSON body (never a 5xx,
never a dropped connection), the server must answer /health after each, a file whose
upload failed must not stay in content/, and the server's peak resident memory must stay
under PDSD_HOSTILE_RSS_MB (default 3072). Standard library only.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

PDSD = os.path.realpath(sys.argv[1])
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "fixtures")
RSS_LIMIT_MB = int(os.environ.get("PDSD_HOSTILE_RSS_MB", "3072"))
REQUEST_TIMEOUT = 120

failures = []
runs = 0
statuses = {}


def fail(name, why):
    failures.append(name)
    print(f"FAIL [{name}]: {why}")


def start_server(root):
    err = open(os.path.join(root, "serve.err"), "w+")
    p = subprocess.Popen([PDSD, "serve", "--port", "0", "--root", os.path.join(root, "data"),
                          "-e", "hash-ngram", "--max-body-bytes", str(32 << 20)],
                         stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(400):
        err.seek(0)
        m = re.search(r"pdsd serve: http://127\.0\.0\.1:(\d+)", err.read())
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.05)
    err.seek(0)
    sys.exit(f"FAIL: pdsd serve did not start:\n{err.read()[-2000:]}")


def request(port, method, path, body=b"", headers=None, chunked=False):
    """(status, parsed JSON or None, seconds); status -1 when the connection dropped."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    t0 = time.time()
    try:
        h = dict(headers or {})
        if chunked:
            pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]
            c.request(method, path, body=iter(pieces), headers=h, encode_chunked=True)
        else:
            c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        try:
            j = json.loads(data)
        except ValueError:
            j = None
        return r.status, j, time.time() - t0
    except (OSError, http.client.HTTPException) as e:
        return -1, str(e), time.time() - t0
    finally:
        c.close()


def multipart(kb, name, data):
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="knowledge_base_name"\r\n\r\n{kb}\r\n'.encode(),
             f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n",
             f"--{b}--\r\n".encode()]
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={b}"}


def check(name, status, body, secs, allowed):
    global runs
    runs += 1
    statuses[status] = statuses.get(status, 0) + 1
    if status == -1:
        return fail(name, f"connection dropped after {secs:.1f} s: {body}")
    if status not in allowed:
        return fail(name, f"status {status}, want one of {sorted(allowed)}: {json.dumps(body)[:300]}")
    if body is None or (status >= 400 and "error" not in body and "msg" not in body):
        return fail(name, f"status {status} without a JSON error body")


def alive(port, p, name):
    if p.poll() is not None:
        fail(name, f"server died: exit {p.returncode}")
        return False
    s, _, _ = request(port, "GET", "/health")
    if s != 200:
        fail(name, f"/health answered {s} afterwards")
        return False
    return True


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def upload_all(port, p, corpus, root):
    files = []
    for sub in ("docs", "good"):
        for n in sorted(os.listdir(os.path.join(corpus, sub).encode())):
            files.append((sub, n))
    for i, (sub, n) in enumerate(files):
        data = open(os.path.join(corpus.encode(), sub.encode(), n), "rb").read()
        fname = n.decode("utf-8", "replace")
        for chunked in (False, True):
            kb = f"h{i}{'c' if chunked else 'l'}"
            s, _, _ = request(port, "POST", "/knowledge_base/create_knowledge_base",
                              json.dumps({"knowledge_base_name": kb}).encode(), {"Content-Type": "application/json"})
            body, headers = multipart(kb, fname, data)
            name = f"upload {sub}/{fname} ({'chunked' if chunked else 'length'})"
            status, j, secs = request(port, "POST", "/knowledge_base/upload_docs", body, headers, chunked)
            check(name, status, j, secs, {200, 400, 413})
            if not alive(port, p, name):
                return
            content = os.path.join(root, "data", "knowledge_base", kb, "content")
            failed = status != 200 or (isinstance(j, dict) and fname in (j.get("data") or {}).get("failed_files", {}))
            if failed and os.path.isdir(content) and os.listdir(content):
                fail(name, f"a failed upload stayed in content/: {os.listdir(content)}")


JSON_ROUTES = ["/v1/chat/completions", "/v1/embeddings", "/knowledge_base/search_docs", "/chat/kb_chat",
               "/knowledge_base/create_knowledge_base", "/knowledge_base/update_info", "/chat/chat/completions"]


def post_json_docs(port, p, corpus):
    docs = [os.path.join(corpus, "docs", n) for n in ("deep_array.json", "deep_object.json", "key_amplify.json")]
    docs += [os.path.join(corpus, "good", "strings.json"), os.path.join(corpus, "embed_deep.jsonl")]
    for path in docs:
        data = open(path, "rb").read()
        for route in JSON_ROUTES:
            for chunked in (False, True):
                name = f"POST {route} {os.path.basename(path)} ({'chunked' if chunked else 'length'})"
                status, j, secs = request(port, "POST", route, data, {"Content-Type": "application/json"}, chunked)
                check(name, status, j, secs, {400, 404, 413, 422})
                if not alive(port, p, name):
                    return


def main():
    root = tempfile.mkdtemp(prefix="pdsd-hostile-serve-")
    corpus = os.path.join(root, "corpus")
    subprocess.run([sys.executable, os.path.join(HERE, "make_corpus.py"), corpus, FIXTURES], check=True)
    p, port = start_server(root)
    t0 = time.time()
    try:
        upload_all(port, p, corpus, root)
        if p.poll() is None:
            post_json_docs(port, p, corpus)
        rss = peak_rss_mb(p.pid) if p.poll() is None else 0
        if rss > RSS_LIMIT_MB:
            fail("memory", f"server peak RSS {rss} MB > {RSS_LIMIT_MB} MB")
        print(f"{runs} hostile requests in {time.time() - t0:.0f} s, server peak RSS {rss} MB, "
              f"statuses {dict(sorted(statuses.items()))}, {len(failures)} failures")
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
