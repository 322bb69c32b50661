#!/usr/bin/env python3
"""KB retrieval over HTTP vs in-process (issue 17's figure): with N concurrent clients,
p95 of POST /knowledge_base/search_docs and of POST /chat/kb_chat (retrieval only:
return_direct, no model) against `pdsd kb search --queries Q --clients N` on the same KB,
queries and search mode; prints each p95 and the HTTP / in-process ratio (goal <= 1.2).

  bench/kb_http_search.py --pdsd build/pdsd [--dir WORK] [--rows 100000] [--clients 8]
                          [--modes bm25,dense,hybrid] [--embed hash-ngram] [--rounds 2] [--repeat 3]

WORK (default: a temp folder) keeps the corpus and the KB between runs: the --rows-chunk
corpus of bench/kb_gen_corpus.py (one chunk per CSV row) is built into
WORK/root/knowledge_base/bench once per (rows, embed) (`pdsd kb -r -e EMBED`; 100k rows with
hash-ngram: ~20 s on 2 cores). --embed is any `kb -r -e` value: hash-ngram (no model), or a
BERT/bge folder (a real model; dense searches then take turns on it). Each client keeps one
HTTP/1.1 keep-alive connection on a raw socket (request bytes made before the clock starts,
responses read by Content-Length: http.client's own parsing cost 3x more client CPU, which on a
small machine is taken from the server) and takes the next query from the shared list, as the
in-process threads do; every query runs `rounds` times per measurement after an untimed
warm-up; in-process and HTTP runs are interleaved `repeat` times and each figure is the median
of its p95s (the load of a shared machine drifts). Also printed: the transport floor (the same
clients posting search_docs with an empty query: HTTP, JSON and the route, no search) and the
clients' own CPU per request. Before timing, search_docs' hits for every query are checked
against `kb search --dump-hits` (both paths must do the same search). Stdlib only.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def build_kb(pdsd, work, rows, embed):
    """WORK/root-ROWS with KB `bench` built with `embed` (rebuilt when the embed changed)."""
    root = os.path.join(work, f"root-{rows}")
    content = os.path.join(root, "knowledge_base", "bench", "content")
    queries = os.path.join(work, f"queries-{rows}.txt")
    if not os.path.isdir(content):
        subprocess.run([sys.executable, os.path.join(HERE, "kb_gen_corpus.py"), content, queries, "--rows", str(rows)], check=True)
    stamp = os.path.join(root, "built-with")   # the embed the KB was last built with
    if not os.path.exists(stamp) or open(stamp, encoding="utf-8").read() != embed:
        t0 = time.time()
        log = os.path.join(root, "build.log")   # a small model warns once per truncated chunk
        with open(log, "w", encoding="utf-8") as f:
            r = subprocess.run([pdsd, "--log-level", "warn", "kb", "--root", root, "-r", "-n", "bench", "-e", embed, "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=f)
        if r.returncode != 0:
            sys.exit(f"kb -r failed (exit {r.returncode}); see {log}:\n" + open(log, encoding="utf-8").read()[-2000:])
        print(f"# built KB bench ({rows} rows, {embed}) in {time.time() - t0:.1f} s", flush=True)
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(embed)
    with open(queries, encoding="utf-8") as f:
        return root, queries, [q for q in f.read().splitlines() if q]


def kb_search(pdsd, root, queries_file, mode, clients, extra=()):
    """`pdsd kb search --queries` output line (p50_ms, p95_ms, ...)."""
    out = subprocess.run([pdsd, "--log-level", "warn", "kb", "--root", root, "search", "-n", "bench", "--queries", queries_file,
                          "--mode", mode, "--clients", str(clients), *extra], check=True, capture_output=True, text=True).stdout
    m = re.search(r"p50_ms ([0-9.]+) p95_ms ([0-9.]+)", out)
    if not m:
        sys.exit("unexpected kb search output: " + out)
    return float(m.group(2)), out.strip()


def start_server(pdsd, root, embed):
    proc = subprocess.Popen([pdsd, "serve", "--port", "0", "--root", root, "-e", embed, "--threads", "32"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        m = re.search(r"pdsd serve: http://(\S+):(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1), int(m.group(2))
    proc.kill()
    sys.exit("server did not start")


SEARCH_DOCS, KB_CHAT = "/knowledge_base/search_docs", "/chat/kb_chat"


def request_bytes(host, port, route, query, mode):
    if route == SEARCH_DOCS:
        body = {"query": query, "knowledge_base_name": "bench", "search_mode": mode}
    else:
        body = {"query": query, "mode": "local_kb", "kb_name": "bench", "search_mode": mode, "return_direct": True, "stream": False}
    payload = json.dumps(body).encode()
    return (f"POST {route} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it (its
    keep_alive_max, 100 requests). Responses must carry Content-Length (pdsd's JSON do)."""

    def __init__(self, host, port):
        self.addr, self.sock, self.buf = (host, port), None, b""

    def post(self, req):
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=120)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self.read()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        if not m:
            sys.exit(f"response without Content-Length: {head[:200]!r}")
        n = int(m.group(1))
        while len(self.buf) < n:
            self.read()
        data, self.buf = self.buf[:n], self.buf[n:]
        if re.search(rb"\r\nconnection: *close", head, re.I):
            self.close()
        return int(head.split(b" ", 2)[1]), data

    def read(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            sys.exit("server closed the connection mid-response")
        self.buf += chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def http_run(host, port, route, queries, mode, clients, rounds, keep=False):
    """(per-request wall ms, client CPU ms per request, queries/s, bodies of the first pass if
    keep) of `rounds` passes over `queries` by `clients` threads."""
    reqs = [request_bytes(host, port, route, q, mode) for q in queries]
    work = [i for _ in range(rounds) for i in range(len(queries))]
    ms, bodies, errors, lock, nxt = [], {}, [], threading.Lock(), [0]

    def client():
        conn = Connection(host, port)
        while not errors:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= len(work):
                break
            t0 = time.perf_counter()
            status, data = conn.post(reqs[work[k]])
            dt = (time.perf_counter() - t0) * 1e3
            if status != 200:
                errors.append(f"{route}: HTTP {status} {data[:200]!r}")
                break
            with lock:
                ms.append(dt)
                if keep and k < len(queries):
                    bodies[k] = data
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    c0, w0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu_ms = (time.process_time() - c0) * 1e3 / max(1, len(ms))
    qps = len(ms) / (time.perf_counter() - w0)
    if errors:
        sys.exit(errors[0])
    return ms, cpu_ms, qps, bodies


def check_same_hits(pdsd, root, qfile, queries, mode, host, port):
    """search_docs' hits (source#chunk_index, in order) equal `kb search --dump-hits`' for every query."""
    dump = qfile + f".{mode}.hits"
    kb_search(pdsd, root, qfile, mode, 1, ("--dump-hits", dump))
    with open(dump, encoding="utf-8") as f:
        want = f.read().split("\n")[: len(queries)]
    *_, bodies = http_run(host, port, SEARCH_DOCS, queries, mode, 1, 1, keep=True)
    bad = 0
    for i, q in enumerate(queries):
        got = "\t".join(f"{d['metadata']['source']}#{d['metadata']['chunk_index']}" for d in json.loads(bodies[i]))
        if got != want[i]:
            bad += 1
            if bad <= 3:
                print(f"# hits differ for {q!r}: http {got!r} in-process {want[i]!r}")
    if bad:
        sys.exit(f"{mode}: search_docs and kb search disagree on {bad} of {len(queries)} queries")
    print(f"# {mode}: search_docs hits == kb search hits for all {len(queries)} queries", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdsd", required=True)
    ap.add_argument("--dir", help="work folder kept between runs (default: a temp folder)")
    ap.add_argument("--rows", type=int, default=100000, help="chunks in the KB (one per CSV row)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--modes", default="bm25,dense,hybrid")
    ap.add_argument("--embed", default="hash-ngram", help="embed model of the KB and the server (kb -r -e / serve -e)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the query list per measurement")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved measurements; the median p95 is reported")
    a = ap.parse_args()
    tmp = None
    work = a.dir
    if not work:
        tmp = tempfile.TemporaryDirectory()
        work = tmp.name
    os.makedirs(work, exist_ok=True)
    root, qfile, queries = build_kb(a.pdsd, work, a.rows, a.embed)
    qrounds = qfile + f".x{a.rounds}"   # the list `rounds` times, as the HTTP runs send it
    with open(qrounds, "w", encoding="utf-8") as f:
        f.write("".join(q + "\n" for q in queries) * a.rounds)
    print(f"# machine: {os.cpu_count()} cpus, load {open('/proc/loadavg').read().split()[:3]}, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; {a.rows} chunks, embed {a.embed}, "
          f"{len(queries)} queries x {a.rounds}, {a.clients} clients", flush=True)
    proc, host, port = start_server(a.pdsd, root, a.embed)
    routes = (SEARCH_DOCS, KB_CHAT)
    worst = 0.0
    try:
        floor, floor_cpu, _, _ = http_run(host, port, SEARCH_DOCS, [""] * len(queries), "bm25", a.clients, a.rounds)
        print(f"transport floor (search_docs, empty query): p50_ms {pct(floor, 0.5):.3f} p95_ms {pct(floor, 0.95):.3f} "
              f"client_cpu_ms/req {floor_cpu:.3f}", flush=True)
        for mode in a.modes.split(","):
            check_same_hits(a.pdsd, root, qfile, queries, mode, host, port)   # also the warm-up (index loaded, pool filled)
            http_run(host, port, KB_CHAT, queries[: max(a.clients, 8)], mode, a.clients, 1)
            # Interleaved repeats (in-process, then each route): a shared machine's load drifts,
            # so each figure is the median of its `repeat` p95s taken side by side.
            p95 = {"in-process": [], **{r: [] for r in routes}}
            for rep in range(a.repeat):
                ip95, line = kb_search(a.pdsd, root, qrounds, mode, a.clients)
                p95["in-process"].append(ip95)
                print(f"[{rep + 1}/{a.repeat}] in-process {mode}: {line}", flush=True)
                for route in routes:
                    ms, cpu, qps, _ = http_run(host, port, route, queries, mode, a.clients, a.rounds)
                    p95[route].append(pct(ms, 0.95))
                    print(f"[{rep + 1}/{a.repeat}] http {mode} {route}: n {len(ms)} p50_ms {pct(ms, 0.5):.3f} "
                          f"p95_ms {pct(ms, 0.95):.3f} qps {qps:.1f} client_cpu_ms/req {cpu:.3f}", flush=True)
            base = statistics.median(p95["in-process"])
            print(f"{mode}: in-process p95_ms {base:.3f} (median of {a.repeat})")
            for route in routes:
                m = statistics.median(p95[route])
                worst = max(worst, m / base)
                print(f"{mode}: {route} p95_ms {m:.3f} ratio {m / base:.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"worst p95 ratio http / in-process: {worst:.2f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
