#!/usr/bin/env python3
"""Load test for `pdsd serve`: N concurrent streaming clients for a bounded time.

Each client has its own prompt ("client i: ..."); before the timed phase it fetches the greedy
non-stream answer as its reference. During the timed phase it streams the same request again
and again and checks every stream: HTTP 200, first chunk carries role "assistant", every chunk
has the stream's own id, a finish chunk, then `data: [DONE]`, and the streamed text equals the
client's reference (so streams never mix between clients). Reports requests/s and time to first
token (first content delta) percentiles. Exit 1 on any error, mismatch, or idle client.

Standard library only. Either point it at a running server (--url) or let it start one on a
tiny random model (--pdsd BIN --fixtures DIR).

  python3 bench/serve_load.py --pdsd build/pdsd --fixtures tests/fixtures --clients 32 --duration 5
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def request(url, body, key, timeout=120):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
    return conn, conn.getresponse()


def chat_body(i, max_tokens, stream):
    return {"model": "any", "messages": [{"role": "user", "content": f"client {i}: 请讲一个故事"}],
            "temperature": 0, "max_tokens": max_tokens, "stream": stream}


def reference(url, i, max_tokens, key):
    conn, r = request(url, chat_body(i, max_tokens, False), key)
    data = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"reference for client {i}: HTTP {r.status} {data[:200]!r}")
    return json.loads(data)["choices"][0]["message"]["content"]


def one_stream(url, i, max_tokens, key):
    """Returns (ttft seconds, text) or raises with what was wrong."""
    t0 = time.perf_counter()
    conn, r = request(url, chat_body(i, max_tokens, True), key)
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    frames, ttft, buf = [], None, b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data: "):
            continue
        payload = line[6:].decode("utf-8")
        if payload == "[DONE]":
            frames.append(None)
            break
        f = json.loads(payload)
        if ttft is None and f["choices"] and f["choices"][0]["delta"].get("content"):
            ttft = time.perf_counter() - t0
        frames.append(f)
    conn.close()
    if not frames or frames[-1] is not None:
        raise RuntimeError("stream did not end with [DONE]")
    chunks = frames[:-1]
    if len(chunks) < 2 or chunks[0]["choices"][0]["delta"].get("role") != "assistant":
        raise RuntimeError("first chunk is not the role chunk")
    ids = {c["id"] for c in chunks}
    if len(ids) != 1:
        raise RuntimeError(f"mixed stream ids {ids}")
    if chunks[-1]["choices"][0]["finish_reason"] not in ("stop", "length"):
        raise RuntimeError("no finish chunk")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:-1])
    return (ttft if ttft is not None else time.perf_counter() - t0), text


def start_server(pdsd, fixtures, tmp, queue_size, max_batch):
    model = os.path.join(tmp, "tiny")
    subprocess.run([pdsd, "--log-level", "warn", "model", "init", "--preset", "tiny", "--seed", "11",
                    "--tokenizer", os.path.join(fixtures, "qwen-tokenizer"), "--out", model], check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([pdsd, "serve", "--model", model, "--port", "0", "--root", os.path.join(tmp, "data"),
                             "--queue-size", str(queue_size), "--max-batch", str(max_batch)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        m = re.search(r"pdsd serve: (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    sys.exit("server did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--pdsd")
    ap.add_argument("--fixtures")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=1, help="--max-batch of the server this script starts")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    proc = None
    url = args.url
    if not url:
        if not (args.pdsd and args.fixtures):
            sys.exit("give --url, or --pdsd and --fixtures")
        proc, url = start_server(args.pdsd, args.fixtures, tmp.name, args.clients + 8, args.max_batch)
    try:
        refs = [reference(url, i, args.max_tokens, args.api_key) for i in range(args.clients)]
        ttfts, errors, counts = [], [], [0] * args.clients
        lock = threading.Lock()
        stop_at = time.perf_counter() + args.duration
        start = threading.Barrier(args.clients)

        def client(i):
            start.wait()
            # Every started stream completes (the bound applies to starting new ones).
            while time.perf_counter() < stop_at:
                try:
                    ttft, text = one_stream(url, i, args.max_tokens, args.api_key)
                    if text != refs[i]:
                        raise RuntimeError(f"text differs from the reference: {text[:40]!r} vs {refs[i][:40]!r}")
                    with lock:
                        ttfts.append(ttft)
                        counts[i] += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        errors.append(f"client {i}: {e}")
                    return

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    total = sum(counts)
    ttfts.sort()
    p = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")  # noqa: E731
    print(json.dumps({"clients": args.clients, "max_batch": args.max_batch if proc else None, "duration_s": round(wall, 2), "max_tokens": args.max_tokens,
                      "streams": total, "requests_per_s": round(total / wall, 2),
                      "ttft_p50_s": round(p(0.50), 4), "ttft_p95_s": round(p(0.95), 4),
                      "ttft_mean_s": round(statistics.mean(ttfts), 4) if ttfts else None,
                      "min_streams_per_client": min(counts), "errors": len(errors)}))
    for e in errors[:10]:
        print("ERROR " + e, file=sys.stderr)
    if errors or min(counts) == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
