#!/usr/bin/env bash
# Time to first token of `pdsd chat -q` (load + tokenizer + prompt + first token), CPU.
#   bench/chat_ttft.sh [RUNS=5] [THREADS=2]
# Env: MODEL=dir (default: a Qwen2.5-0.5B random-weight checkpoint with the real Qwen
# tokenizer, made once by `pdsd model init`), PDSD=binary, QUESTION=text,
# CHAT_ARGS="extra chat options" (e.g. "--dtype fp32"), DROP_CACHE=1 (posix_fadvise DONTNEED on
# model.safetensors before each run: a cold start, as far as the kernel drops clean pages).
# Per run: TTFT = wall from spawn to the first byte on stdout (a pipe read by Python),
# total wall, the process's CPU time (user+sys from wait4: the honest cost on a loaded
# machine), and the phase stamps `pdsd -v chat` logs (wall/cpu ms since process start).
# Prints median and best of each column, and the load average at start and end.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pdsd=${PDSD:-$here/build/pdsd}
runs=${1:-5}; threads=${2:-2}
model=${MODEL:-/tmp/pdsd-bench-qwen2.5-0.5b-tok}
tok=${TOKENIZER:-$(dirname "$0")/../tests/fixtures/qwen-tokenizer}
question=${QUESTION:-你好，请介绍一下你自己。}
if [ ! -f "$model/model.safetensors" ]; then
  "$pdsd" --log-level warn model init --preset qwen2.5-0.5b --out "$model" --tokenizer "$tok" --seed 0 >/dev/null
fi
echo "model: $model, threads $threads, chat args: ${CHAT_ARGS:-none}, $(nproc) cores, $(date -u '+%F %H:%M UTC'), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$pdsd" "$model" "$threads" "$runs" "$question" "${CHAT_ARGS:-}" <<'PY'
import os, re, shlex, statistics, subprocess, sys, time
pdsd, model, threads, runs, question = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cmd = [pdsd, "-t", threads, "-v", "chat", "--model", model, "-q", question, "--max_new_tokens", "1"] + shlex.split(sys.argv[6])
phases = [("main", r"main\(\) running at"), ("tokenizer", r"tokenizer loaded at"), ("model", r"model loaded at"),
          ("encoded", r"prompt encoded .* at"), ("first_token", r"first token at")]
rows = []
for i in range(runs):
    if os.environ.get("DROP_CACHE") == "1":  # cold start: the checkpoint leaves the page cache
        fd = os.open(os.path.join(model, "model.safetensors"), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    ttft = (time.monotonic() - t0) * 1e3
    out_rest = p.stdout.read()
    err = p.stderr.read().decode("utf-8", "replace")
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.monotonic() - t0) * 1e3
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0 or not first:
        sys.exit(f"run {i}: exit {p.returncode}, stderr:\n{err}")
    row = {"ttft": ttft, "wall": wall, "cpu": (ru.ru_utime + ru.ru_stime) * 1e3}
    for name, pat in phases:
        m = re.search(pat + r" (\d+) ms \(cpu (\d+) ms\)", err)
        if m:
            row[name] = float(m.group(1)); row[name + "_cpu"] = float(m.group(2))
    rows.append(row)
    print(f"run {i}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()), flush=True)
cols = ["ttft", "wall", "cpu"] + [c for n, _ in phases for c in (n, n + "_cpu")]
print(f"{'ms (since spawn / process start)':34} {'median':>8} {'best':>8}")
for c in cols:
    v = [r[c] for r in rows if c in r]
    if v:
        print(f"{c:34} {statistics.median(v):8.0f} {min(v):8.0f}")
print("load avg at end:", open("/proc/loadavg").read().split()[:3])
PY
