#!/usr/bin/env python3
"""Tokenizer throughput: pdsd vs Hugging Face tokenizers on the same ~10 MB corpus.

Corpus: the Chinese man pages of Debian's manpages-zh (/usr/share/man/zh_CN, all
sections) plus English man pages from /usr/share/man/man1 (sorted by name) until the
total reaches --mb megabytes; decompressed, decoded as UTF-8 (errors="replace"),
non-empty lines. Install with `apt-get install -y manpages-zh`.

Both sides encode every line without special tokens, timed without loading:
  - HF single thread: TOKENIZERS_PARALLELISM=false + RAYON_NUM_THREADS=1,
    `encode_batch` (a Rust loop; also the Python `encode` loop, the faster one is used);
  - pdsd single thread: `pdsd tokenize --bench FILE --threads 1` (an encode() loop);
  - pdsd / HF multi-thread: all cores.
The ids must agree (token count and FNV-1a checksum of all ids). Prints MB/s and the pdsd/HF ratio.

Usage: bench/tokenizer_bench.py [--pdsd build/pdsd] [--tokenizer DIR] [--mb 10] [--corpus FILE]
"""
import argparse
import gzip
import os
import re
import subprocess
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_corpus(path, mb):
    zh_root = "/usr/share/man/zh_CN"
    if not os.path.isdir(zh_root):
        sys.exit("no /usr/share/man/zh_CN: apt-get install -y manpages-zh")
    files = []
    for d, _, names in os.walk(zh_root):
        files += [os.path.join(d, n) for n in names]
    files.sort()
    en = sorted(os.path.join("/usr/share/man/man1", n) for n in os.listdir("/usr/share/man/man1"))
    limit = int(mb * 1e6)
    total = 0
    out = []

    def add(f):
        nonlocal total
        try:
            raw = gzip.open(f).read() if f.endswith(".gz") else open(f, "rb").read()
        except (OSError, EOFError):
            return
        for line in raw.decode("utf-8", "replace").split("\n"):
            if line.strip():
                out.append(line)
                total += len(line.encode("utf-8"))

    for f in files:
        add(f)
    for f in en:
        if total >= limit:
            break
        add(f)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    return out


def pdsd_bench(pdsd, tokenizer, corpus, threads, repeats):
    """Best of `repeats` runs (the machine is shared): MB/s, token count, checksum."""
    best = 0.0
    for _ in range(repeats):
        r = subprocess.run([pdsd, "tokenize", "--tokenizer", tokenizer, "--bench", corpus, "--threads", str(threads)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, text=True)
        m = re.search(r"= ([0-9.]+) MB/s", r.stderr)
        best = max(best, float(m.group(1)))
        count, checksum = r.stdout.split()
    return best, int(count), checksum


def fnv(all_ids):
    h = 0xCBF29CE484222325
    for ids in all_ids:
        for i in ids:
            h = ((h ^ i) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", default=os.path.join(ROOT, "build", "pdsd"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "..", "shared", "fixtures", "qwen-tokenizer"))
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--corpus", default="/tmp/pdsd_tokenizer_corpus.txt")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings (shared machines are noisy)")
    a = ap.parse_args()

    from tokenizers import Tokenizer
    import tokenizers

    lines = build_corpus(a.corpus, a.mb)
    nbytes = sum(len(x.encode("utf-8")) for x in lines)
    zh = sum(1 for x in lines if re.search(r"[\u4e00-\u9fff]", x))
    print(f"corpus: {len(lines)} lines, {nbytes / 1e6:.2f} MB ({zh} lines with Chinese), {a.corpus}")

    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    hf_batch = 0.0
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        enc = tok.encode_batch(lines, add_special_tokens=False)
        hf_batch = max(hf_batch, nbytes / 1e6 / (time.perf_counter() - t0))
    all_ids = [e.ids for e in enc]
    del enc
    hf_count = sum(len(x) for x in all_ids)
    hf_sum = fnv(all_ids)
    del all_ids
    t0 = time.perf_counter()
    for x in lines:
        tok.encode(x, add_special_tokens=False)
    hf_loop = nbytes / 1e6 / (time.perf_counter() - t0)
    hf1 = max(hf_batch, hf_loop)
    print(f"HF tokenizers {tokenizers.__version__} 1 thread: {hf1:.2f} MB/s "
          f"(encode_batch serial {hf_batch:.2f}, encode loop {hf_loop:.2f}), {hf_count} tokens")

    pd1, pd_count, pd_sum = pdsd_bench(a.pdsd, a.tokenizer, a.corpus, 1, a.repeats + 1)
    print(f"pdsd 1 thread: {pd1:.2f} MB/s, {pd_count} tokens")
    cores = os.cpu_count() or 1
    pdn, _, _ = pdsd_bench(a.pdsd, a.tokenizer, a.corpus, 0, a.repeats + 1)
    print(f"pdsd {cores} threads (encode_batch): {pdn:.2f} MB/s")

    os.environ.pop("RAYON_NUM_THREADS")
    r = subprocess.run([sys.executable, "-c", (
        "import os,sys,time;os.environ['TOKENIZERS_PARALLELISM']='true';from tokenizers import Tokenizer;"
        f"t=Tokenizer.from_file({os.path.join(a.tokenizer, 'tokenizer.json')!r});"
        f"L=open({a.corpus!r},encoding='utf-8').read().split('\\n')[:-1];n=sum(len(x.encode()) for x in L);"
        "t0=time.perf_counter();t.encode_batch(L,add_special_tokens=False);print(n/1e6/(time.perf_counter()-t0))")],
        stdout=subprocess.PIPE, text=True, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
    hfn = float(r.stdout.strip())
    print(f"HF {cores} threads (encode_batch): {hfn:.2f} MB/s")
    print(f"ratio pdsd/HF single thread: {pd1 / hf1:.2f}x; multi-thread: {pdn / hfn:.2f}x")
    if pd_count != hf_count or pd_sum != hf_sum:
        print(f"IDS DIFFER: pdsd {pd_count} tokens / {pd_sum} vs HF {hf_count} / {hf_sum}")
        return 1
    print(f"ids identical: {pd_count} tokens, FNV-1a {pd_sum}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
