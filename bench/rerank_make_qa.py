#!/usr/bin/env python3
"""Labelled Chinese retrieval set for `pdsd kb eval --compare` (bench/rerank_bench.sh).

Documents: paragraphs of Debian's Chinese man pages (manpages-zh, /usr/share/man/zh_CN,
roff markup stripped), one .txt file per paragraph, so every question has one known source
file. Questions: up to three clauses of each paragraph, each (8..30 characters) with one character in ten
dropped, so a question is never a verbatim substring. Without manpages-zh the script
fails (exit 1): there is no other Chinese text with known answers on this machine.

  rerank_make_qa.py CONTENT_DIR QA_JSONL [--docs 400] [--queries 250] [--seed 11]
"""
import argparse, glob, gzip, json, os, random, re, sys

ap = argparse.ArgumentParser()
ap.add_argument("content")
ap.add_argument("qa")
ap.add_argument("--docs", type=int, default=400)
ap.add_argument("--queries", type=int, default=250)
ap.add_argument("--seed", type=int, default=11)
a = ap.parse_args()
rng = random.Random(a.seed)
CJK = re.compile(r"[\u4e00-\u9fff]")


def strip_roff(line):
    line = re.sub(r"\\f[BIRP1-4]|\\f\(..|\\s[+-]?\d+|\\\(..|\\[&|^~]|\\-", lambda m: "-" if m.group(0) == "\\-" else "", line)
    return line.replace("\\e", "\\").strip()


paras = []
for f in sorted(glob.glob("/usr/share/man/zh_CN/man*/*.gz")):
    try:
        text = gzip.open(f, "rt", encoding="utf-8", errors="replace").read()
    except OSError:
        continue
    cur = []
    for line in text.splitlines() + [".PP"]:
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith(".") and line[1:3] in ("PP", "SH", "SS", "TP", "IP", "LP", "P", "br", "sp"):
            p = "".join(cur).strip()
            if len(CJK.findall(p)) >= 30:
                paras.append(p)
            cur = []
            continue
        if line.startswith("."):
            line = re.sub(r"^\.[A-Za-z]+\s*", "", line)
        s = strip_roff(line)
        if s:
            cur.append(s + ("" if CJK.search(s[-1:]) else " "))
if len(paras) < 50:
    print(f"FAIL: only {len(paras)} Chinese paragraphs under /usr/share/man/zh_CN (apt-get install manpages-zh)")
    sys.exit(1)
paras = list(dict.fromkeys(paras))   # unique
rng.shuffle(paras)
paras = paras[: a.docs]
os.makedirs(a.content, exist_ok=True)
for i, p in enumerate(paras):
    with open(os.path.join(a.content, f"p{i:04d}.txt"), "w", encoding="utf-8") as f:
        f.write(p[:700] + "\n")   # one chunk per file (chunk_size 750)
n = 0
with open(a.qa, "w", encoding="utf-8") as out:
    # Up to three questions per document (distinct clauses), documents in random order.
    picks = []
    for i in range(len(paras)):
        clauses = list(dict.fromkeys(c.strip() for c in re.split(r"[，。；：！？,.;:!?()（）]", paras[i][:700])
                                     if 8 <= len(c.strip()) <= 30 and len(CJK.findall(c)) >= 6))
        rng.shuffle(clauses)
        picks += [(k, i, c) for k, c in enumerate(clauses[:3])]
    rng.shuffle(picks)
    picks.sort(key=lambda t: t[0])   # first clauses of every document before second ones
    for _, i, clause in picks[: a.queries]:
        c = list(clause)
        for _ in range(max(1, len(c) // 10)):
            del c[rng.randrange(len(c))]
        out.write(json.dumps({"question": "".join(c), "source": f"p{i:04d}.txt"}, ensure_ascii=False) + "\n")
        n += 1
print(f"{len(paras)} documents, {n} questions")
