#!/usr/bin/env python3
"""Tiny random XLMRobertaForSequenceClassification (bge-reranker-shaped) and its golden scores.

  make_tiny_reranker.py [--out DIR]              writes the fixture (default
                                                 tests/fixtures/tiny-xlmr-reranker)
  make_tiny_reranker.py --out DIR --check PDSD   rebuilds it in DIR and compares pdsd's
                                                 scores (pdsd kb rerank) with the live
                                                 CrossEncoder's; exit 1 on a mismatch
  make_tiny_reranker.py --bench-model DIR        bge-reranker-base-shaped random model
                                                 (hidden 768, 12 layers; not committed) for
                                                 bench/rerank_bench.sh

Files: config.json + model.safetensors (random, seeded: same bytes each run, hidden 32,
2 layers, 4 heads, one label); sentencepiece.bpe.model, tokenizer.json, tokenizer_config.json
copied from tests/model/fixtures/tiny-xlmr (identical blobs in git); reference.json: pairs,
their token ids from HF's tokenizer (pair encoding, longest_first truncation), HF logits
and sentence-transformers CrossEncoder.predict scores (fp32, CPU).
Needs /work/main/.venv (torch, transformers, sentence-transformers).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK_SRC = os.path.join(ROOT, "tests", "model", "fixtures", "tiny-xlmr")
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "tiny-xlmr-reranker")
MAX_LENGTH = 64

QUERIES = ["如何重建知识库？", "忘记管理员密码怎么办", "What does pdsd kb -r do?", "错误码 E1024"]
DOCS = [
    "pdsd kb -r -n samples 重建知识库，先删除旧的分块再重新索引。",
    "管理员密码可以在设置页面重置，或者联系运维。",
    "The knowledge base is rebuilt with pdsd kb -r.",
    "错误码 E1024：配置文件缺失，请检查 configs/ 目录。",
    "天气很好。",
    "",
    # long enough that the pair is truncated (longest_first) at 64 tokens
    "知识库重建失败时请检查日志。" * 12,
    "Hybrid search fuses the BM25 and dense lists with reciprocal-rank fusion; " * 4,
]


def build(out, hidden=32, layers=2, heads=4, inter=64, max_pos=MAX_LENGTH + 2, seed=20, std=0.3):
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    os.makedirs(out, exist_ok=True)
    for f in ["sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copyfile(os.path.join(TOK_SRC, f), os.path.join(out, f))
    if max_pos != MAX_LENGTH + 2:   # the copied tokenizer_config says 64 tokens
        tc = os.path.join(out, "tokenizer_config.json")
        with open(tc, encoding="utf-8") as f:
            j = json.load(f)
        j["model_max_length"] = max_pos - 2
        with open(tc, "w", encoding="utf-8") as f:
            json.dump(j, f, indent=2)
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(vocab_size=502, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=inter, max_position_embeddings=max_pos, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1,
                           architectures=["XLMRobertaForSequenceClassification"])
    model = XLMRobertaForSequenceClassification(cfg)
    with torch.no_grad():   # wider than HF's 0.02 init so that scores differ visibly between pairs
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                continue
            p.normal_(0.0, std)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def pairs():
    return [[q, d] for q in QUERIES for d in DOCS]


def oracle_scores(model_dir, ps):
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids, logits = [], []
    with torch.no_grad():
        for q, d in ps:
            # list form, as CrossEncoder calls it (tok(q, "") would drop an empty pair text)
            enc = tok([q], [d], truncation="longest_first", max_length=MAX_LENGTH, return_tensors="pt")
            ids.append(enc["input_ids"][0].tolist())
            logits.append(float(hf(**enc).logits[0, 0]))
    ce = CrossEncoder(model_dir, max_length=MAX_LENGTH, device="cpu")
    scores = [float(x) for x in ce.predict(ps, batch_size=8, show_progress_bar=False)]
    return ids, logits, scores


def write_reference(model_dir):
    ps = pairs()
    ids, logits, scores = oracle_scores(model_dir, ps)
    import sentence_transformers
    import transformers
    ref = {"max_length": MAX_LENGTH, "pairs": ps, "input_ids": ids, "logits": logits, "crossencoder_scores": scores,
           "made_by": "tests/kb/make_tiny_reranker.py; transformers " + transformers.__version__ +
                      ", sentence-transformers " + sentence_transformers.__version__}
    with open(os.path.join(model_dir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
    return ref


def check(pdsd, model_dir):
    ps = pairs()
    _, logits, scores = oracle_scores(model_dir, ps)
    with tempfile.TemporaryDirectory() as tmp:
        pf = os.path.join(tmp, "pairs.jsonl")
        with open(pf, "w", encoding="utf-8") as f:
            for q, d in ps:
                f.write(json.dumps({"query": q, "document": d}, ensure_ascii=False) + "\n")
        out = subprocess.run([pdsd, "kb", "rerank", "-m", model_dir, "--pairs", pf, "--max-length", str(MAX_LENGTH), "--json"],
                             check=True, capture_output=True, text=True).stdout
    got = json.loads(out)
    worst = 0.0
    for i, (g, l, s) in enumerate(zip(got["results"], logits, scores)):
        worst = max(worst, abs(g["logit"] - l), abs(g["relevance_score"] - s))
    print(f"{len(ps)} pairs: max |pdsd - oracle| = {worst:.2e} (logits vs HF, scores vs CrossEncoder)")
    if len(got["results"]) != len(ps) or worst > 1e-4:
        print("FAIL: differs by more than 1e-4")
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", metavar="PDSD", help="compare this pdsd binary with the live oracle")
    ap.add_argument("--bench-model", metavar="DIR", help="write a bge-reranker-base-shaped random model here")
    a = ap.parse_args()
    try:
        import sentence_transformers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"SKIP: oracle packages missing ({e})")
        return 77
    if a.bench_model:
        # bge-reranker-base: XLM-R base (hidden 768, 12 layers, 12 heads, intermediate 3072);
        # the tiny tokenizer's 502-piece vocabulary stands in for the 250002 (embedding rows
        # only: the same work per token).
        build(a.bench_model, hidden=768, layers=12, heads=12, inter=3072, max_pos=514, std=0.02)
        return 0
    build(a.out)
    if a.check:
        return check(a.check, a.out)
    ref = write_reference(a.out)
    print(f"wrote {a.out}: {len(ref['pairs'])} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
