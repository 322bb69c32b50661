#!/usr/bin/env python3
"""Differential test of pdsd's WordPiece tokenizer against Hugging Face BertTokenizer.

A generated vocabulary (BERT's special tokens, ASCII, Latin words and ## pieces, a few
thousand CJK characters with gaps so that [UNK] occurs) and thousands of generated
strings (Chinese/English mix, accents, full-width and ASCII punctuation, odd whitespace,
control characters, special tokens inside text, long words, long texts that truncate)
go through `pdsd tokenize --tokenizer DIR --jsonl` and through
`BertTokenizer.from_pretrained(DIR)(text, truncation=True)["input_ids"]`, for four
do_lower_case/strip_accents settings. Any difference fails (exit 1) and is printed.

  wordpiece_diff.py --pdsd build/pdsd [--n 3000]          # the oracle test
  wordpiece_diff.py --write-golden tests/tokenizer/fixtures/wordpiece --n 300
      # the committed golden (vocab.txt, tokenizer_config.json, cases.json, and
      # <dir>-json/ with HF's tokenizer.json form) that
      # tests/tokenizer/test_wordpiece.cpp checks without Python

Exit 77 (ctest SKIP) when transformers is missing.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    from transformers import BertTokenizer
except Exception as e:  # noqa: BLE001
    print(f"SKIP: transformers not importable ({e})")
    sys.exit(77)

SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "model", "token", "embed", "search", "know", "ledge", "base", "install", "config", "python",
         "torch", "linux", "server", "file", "data", "café", "naïve", "résumé", "über", "straße", "hello", "world",
         "qwen", "bge", "large", "zh", "v1", "retrieval", "chunk", "split", "test", "ing", "ed", "er", "s", "un",
         "able", "tion", "ment", "gpu", "cpu", "api", "http", "json", "yaml", "Ωmega", "ÉCOLE", "İstanbul"]
# CJK: common ideographs, some extension A/B, compatibility ones; hangul/kana are not
# "Chinese" for BERT and stay inside words.
CJK_RANGES = [(0x4E00, 0x4E00 + 3000), (0x3400, 0x3420), (0x20000, 0x20010), (0xF900, 0xF910)]


def make_vocab(seed):
    rnd = random.Random(seed)
    vocab = list(SPECIALS)
    vocab += [chr(c) for c in range(33, 127)]
    vocab += ["##" + chr(c) for c in range(48, 58)] + ["##" + chr(c) for c in range(97, 123)]
    for w in WORDS:
        for v in (w, w.lower()):
            if v not in vocab:
                vocab.append(v)
        for k in range(2, len(w)):
            p = "##" + w[k:].lower()
            if p not in vocab and rnd.random() < 0.5:
                vocab.append(p)
    for lo, hi in CJK_RANGES:
        for c in range(lo, hi):
            if rnd.random() < 0.85:   # gaps -> [UNK]
                vocab.append(chr(c))
    vocab += ["，", "。", "：", "；", "！", "？", "（", "）", "、", "《", "》", "“", "”", "é", "ü", "ß", "ω", "##ß", "가", "##나", "カ"]
    seen, out = set(), []
    for t in vocab:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


PIECES_ASCII = WORDS + ["Hello", "WORLD", "Model-7", "e.g.", "x86_64", "3.14", "1,000", "a/b", "C++", "`code`",
                        "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[mask]", "[CLS", "##lo", "don't"]
WS = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2003", "\u2028", "\x0b", "\x0c", "\x85"]
CTRL = ["\x00", "\x01", "\x1f", "\x7f", "\u200b", "\u200d", "\ufeff", "\ufffd", "\u00ad", "\ue000"]
PUNCT = list("，。：；！？（）、《》“”‘’…—·「」【】") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["¿", "¡", "§"]
ACCENTED = ["é", "É", "ñ", "Ñ", "ü", "Ö", "ç", "å", "ø", "ł", "ő", "ǎ", "ȁ", "ḗ", "e\u0301", "a\u0308", "ﬁ", "Ⅻ", "ǅ",
            "ß", "Σ", "ς", "İ", "ı", "K", "Å", "ǰ"]
OTHER = ["한국어", "カタカナ", "ひらがな", "Ελληνικά", "Русский", "עברית", "😀", "👍🏽", "①", "²", "½", "〇", "ｆｕｌｌ",
         "ＡＢＣ", "１２３"]


def rand_cjk(rnd, n):
    out = []
    for _ in range(n):
        lo, hi = rnd.choice(CJK_RANGES[:1] * 6 + CJK_RANGES[1:])
        out.append(chr(rnd.randrange(lo, hi + 40)))   # a little past the vocab's range
    return "".join(out)


def gen_text(rnd):
    kind = rnd.random()
    parts = []
    n = rnd.randint(1, 25)
    for _ in range(n):
        r = rnd.random()
        if r < 0.3:
            parts.append(rand_cjk(rnd, rnd.randint(1, 12)))
        elif r < 0.5:
            parts.append(rnd.choice(PIECES_ASCII))
        elif r < 0.6:
            parts.append(rnd.choice(WS))
        elif r < 0.7:
            parts.append(rnd.choice(PUNCT))
        elif r < 0.8:
            w = rnd.choice(WORDS)
            parts.append("".join(rnd.choice(ACCENTED) if rnd.random() < 0.2 else c for c in w))
        elif r < 0.85:
            parts.append(rnd.choice(CTRL))
        elif r < 0.9:
            parts.append(rnd.choice(OTHER))
        elif r < 0.95:
            parts.append(" ")
        else:
            parts.append("".join(rnd.choice("abcdefghij") for _ in range(rnd.choice([5, 99, 100, 101, 150]))))
    s = "".join(parts)
    if kind < 0.02:   # long: truncation at 512
        s = (s + "，") * 80
    return s


def hf_ids(model_dir, texts):
    tok = BertTokenizer.from_pretrained(model_dir)
    return [tok(t, truncation=True, max_length=512)["input_ids"] for t in texts]


def write_model(d, vocab, cfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    c = {"tokenizer_class": "BertTokenizer", "model_max_length": 512, "unk_token": "[UNK]", "cls_token": "[CLS]",
         "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "tokenize_chinese_chars": True}
    c.update(cfg)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(c, f, ensure_ascii=False, indent=1)


CONFIGS = [{"do_lower_case": True, "strip_accents": None}, {"do_lower_case": False, "strip_accents": None},
           {"do_lower_case": True, "strip_accents": False}, {"do_lower_case": False, "strip_accents": True}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write-golden")
    a = ap.parse_args()
    vocab = make_vocab(a.seed)
    rnd = random.Random(a.seed + 1)
    texts = [gen_text(rnd) for _ in range(a.n)]

    if a.write_golden:
        write_model(a.write_golden, vocab, CONFIGS[0])
        cases = [{"text": t, "ids": ids} for t, ids in zip(texts, hf_ids(a.write_golden, texts))]
        with open(os.path.join(a.write_golden, "cases.json"), "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=True, separators=(",", ":")) for c in cases) + "\n]\n")
        # the same tokenizer as HF saves it (tokenizer.json only): the loader's second form
        BertTokenizer.from_pretrained(a.write_golden).save_pretrained(a.write_golden + "-json")
        print(f"wrote {len(cases)} cases, vocab {len(vocab)} to {a.write_golden}")
        return 0

    if not a.pdsd:
        ap.error("--pdsd or --write-golden")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, cfg in enumerate(CONFIGS):
            d = os.path.join(tmp, f"m{k}")
            write_model(d, vocab, cfg)
            want = hf_ids(d, texts)
            inp = "".join(json.dumps(t, ensure_ascii=True) + "\n" for t in texts)
            r = subprocess.run([a.pdsd, "--log-level", "warn", "tokenize", "--tokenizer", d, "--jsonl"], input=inp.encode(),
                               capture_output=True)
            if r.returncode != 0:
                print(r.stderr.decode(errors="replace"))
                return 1
            got = [json.loads(l) for l in r.stdout.decode().splitlines()]
            if len(got) != len(texts):
                print(f"config {cfg}: {len(got)} outputs for {len(texts)} texts")
                return 1
            nbad = 0
            for t, w, g in zip(texts, want, got):
                if w != g:
                    nbad += 1
                    if nbad <= 5:
                        tok = BertTokenizer.from_pretrained(d)
                        print(f"MISMATCH {cfg} text={t!r}\n  hf  ={tok.convert_ids_to_tokens(w)}\n  pdsd={tok.convert_ids_to_tokens(g)}")
            print(f"config {cfg}: {len(texts) - nbad}/{len(texts)} identical")
            bad += nbad
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
