#!/usr/bin/env python3
"""Bench corpus for the knowledge base: Chinese text from Debian's manpages-zh
(/usr/share/man/zh_CN, roff markup stripped), or generated text when it is absent.
Writes CSV files (one chunk per row: CSV rows are never split) with N rows in total,
and a query file of M queries drawn from the same text.

  kb_gen_corpus.py OUT_CONTENT_DIR QUERIES_FILE [--rows 100000] [--queries 200]
"""
import argparse, csv, glob, gzip, os, random, re

ap = argparse.ArgumentParser()
ap.add_argument("content")
ap.add_argument("queries")
ap.add_argument("--rows", type=int, default=100000)
ap.add_argument("--nqueries", type=int, default=200)
ap.add_argument("--seed", type=int, default=7)
a = ap.parse_args()
rng = random.Random(a.seed)

paras = []
for f in sorted(glob.glob("/usr/share/man/zh_CN/man*/*.gz")):
    try:
        t = gzip.open(f, "rt", encoding="utf-8", errors="replace").read()
    except OSError:
        continue
    cur = []
    for line in t.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            line = re.sub(r"^\.[A-Za-z]+\s*", "", line)
        line = re.sub(r"\\f[BIRP]|\\f\(..|\\s[-+]?\d|\\&|\\e", "", line).replace("\\-", "-").replace('"', "")
        line = line.strip()
        if not line:
            if cur:
                paras.append(" ".join(cur)); cur = []
            continue
        cur.append(line)
    if cur:
        paras.append(" ".join(cur))
paras = [p for p in paras if re.search(r"[\u4e00-\u9fff]", p) and len(p) >= 20]
source = "manpages-zh" if paras else "generated"
if not paras:
    han = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你能而子那得着下自之年过发后里道行所然家种事方多经么去法学如都同现当没动面起看定天还进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局"
    for _ in range(20000):
        paras.append("".join(rng.choice(han) for _ in range(rng.randint(40, 300))) + "。")

os.makedirs(a.content, exist_ok=True)
files, per_file = 50, a.rows // 50
rows_written = 0
for fi in range(files):
    with open(os.path.join(a.content, f"man_{fi:03d}.csv"), "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["编号", "内容"])
        n = per_file if fi < files - 1 else a.rows - rows_written
        for r in range(n):
            p = paras[(fi * per_file + r) % len(paras)]
            # vary the window so repeated paragraphs give different chunks
            start = rng.randint(0, max(0, len(p) - 120))
            w.writerow([f"{fi}-{r}", p[start:start + rng.randint(120, 400)]])
        rows_written += n
cjk_runs = [m for p in paras[:5000] for m in re.findall(r"[\u4e00-\u9fff]{2,8}", p)]
words = [m for p in paras[:5000] for m in re.findall(r"[a-z][a-z_]{3,}", p)]
with open(a.queries, "w", encoding="utf-8") as fh:
    for _ in range(a.nqueries):
        q = [rng.choice(cjk_runs) for _ in range(rng.randint(1, 3))]
        if words and rng.random() < 0.3:
            q.append(rng.choice(words))
        fh.write(" ".join(q) + "\n")
print(f"source {source}: {len(paras)} paragraphs, {rows_written} rows, {a.nqueries} queries")
