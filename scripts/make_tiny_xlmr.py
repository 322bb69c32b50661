#!/usr/bin/env python3
"""Builds the tiny XLM-R (bge-m3-shaped) fixture used by tests/model/test_xlmr.cpp.

Writes tests/model/fixtures/tiny-xlmr/:
  sentencepiece.bpe.model   unigram sentencepiece model (~500 pieces) trained on the
                            repository's Chinese/English sample texts (bge-m3's file has
                            the same name and is a unigram model too)
  config.json, model.safetensors   XLMRobertaModel(hidden 32, 2 layers, 4 heads,
                            intermediate 64, vocab = spm pieces + 2), random weights
  tokenizer.json, tokenizer_config.json   HF's fast tokenizer converted from the spm model
  reference.json            token ids of ~50 strings from HF XLMRobertaTokenizer (fast,
                            the one sentence-transformers / FlagEmbedding use), truncated
                            ids, and last_hidden_state + L2-normalised CLS of a padded batch
                            from HF XLMRobertaModel (fp32, eager attention)

Needs torch + transformers (/work/main/.venv) and sentencepiece + protobuf: run as
  PYTHONPATH=/work/venvs/xlmr/lib/python3.11/site-packages .venv/bin/python scripts/make_tiny_xlmr.py
Deterministic (seeded); rerunning rewrites the same files.
"""
import glob
import io
import json
import os
import shutil
import sys

import sentencepiece as spm
import torch
from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "model", "fixtures", "tiny-xlmr")


def corpus():
    lines = []
    for pat in ["share/samples/*.md", "share/samples/*.txt", "share/samples/*.csv", "data/*.jsonl", "README.md"]:
        for p in sorted(glob.glob(os.path.join(ROOT, pat))):
            with open(p, encoding="utf-8") as f:
                for ln in f:
                    ln = ln.strip()
                    if ln:
                        lines.append(ln[:400])
    return lines[:1500]


STRINGS = [
    "你好，世界！",
    "Hello world",
    "hello   world",
    "  leading and trailing spaces  ",
    "pdsd 是一个 C++ 工具链，用于 Qwen2.5 聊天助手。",
    "知识库重建失败时请检查日志。",
    "The knowledge base is rebuilt with pdsd kb -r.",
    "错误码 E1024：配置文件缺失",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３",
    "tab\tseparated\tvalues",
    "line one\nline two\r\nline three",
    "数字 1234567890 和字母 abcXYZ",
    "emoji 😀 and symbols ©®™",
    "",
    " ",
    "a",
    "中",
    "UPPER lower MiXeD",
    "email: user@example.com, url: https://example.com/a?b=c",
    "①②③ ⅠⅡⅢ ㈱",
    "﻿BOM at start",
    "zero\u200bwidth\u200djoiner",
    "combining e\u0301 vs é",
    "安装指南：先运行 scripts/setup.sh，再执行 cmake --build build -j2。",
    "常见问题：为什么检索结果为空？",
    "Ünïcödé àccents",
    "日本語のテキストも少し",
    "한국어 텍스트",
    "Русский текст",
    "العربية",
    "((nested)) [brackets] {braces} <angle>",
    "<s> inside text </s>",
    "mask <mask> token",
    "repeated repeated repeated repeated repeated",
    "。。。！！！？？？",
    "1.5x faster, p95 < 10 ms",
    "\u3000全角空格\u3000",
    "non\u00a0breaking\u00a0space",
    "C:\\path\\to\\file.txt",
    "snake_case_name and camelCaseName",
    "x" * 40,
    "中文" * 20,
    "mixed中文English混合text",
    "发布说明 v1.2.0：修复了若干问题",
    "配置参考.json 中的 chunk_size 默认 750",
    "---",
    "   \t\n  ",
    "a  b   c    d",
    "end with newline\n",
    "问：如何增量更新？答：使用 pdsd kb -i。",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    model_io = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model_io, vocab_size=500, model_type="unigram",
        character_coverage=0.98, hard_vocab_limit=False, seed_sentencepiece_size=10000,
        num_threads=1, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    spm_path = os.path.join(OUT, "sentencepiece.bpe.model")
    with open(spm_path, "wb") as f:
        f.write(model_io.getvalue())
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    n_sp = sp.get_piece_size()

    # from_pretrained on a folder holding only the spm file converts it the way bge-m3's
    # tokenizer.json was made (XLMRobertaConverter: Unigram + Precompiled normalizer + Metaspace).
    tmp = os.path.join(OUT, ".spm-only")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shutil.copy(spm_path, tmp)
    tok = XLMRobertaTokenizer.from_pretrained(tmp, model_max_length=64)
    shutil.rmtree(tmp)
    tok.save_pretrained(OUT)
    # save_pretrained may or may not copy the spm file; keep ours in place.
    if not os.path.exists(spm_path):
        with open(spm_path, "wb") as f:
            f.write(model_io.getvalue())
    vocab = n_sp + 2  # fairseq: <s> <pad> </s> <unk> + spm[3:] + <mask>
    assert len(tok) == vocab, (len(tok), vocab)

    torch.manual_seed(7)
    cfg = XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=66, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                           hidden_act="gelu", attn_implementation="eager")
    model = XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init so layers matter
            p.normal_(0.0, 0.2)
    model.save_pretrained(OUT, safe_serialization=True)

    ref = {"strings": STRINGS, "ids": [tok(s)["input_ids"] for s in STRINGS],
           "spm_pieces": n_sp, "mask_id": tok.mask_token_id}
    ref["truncated_16"] = [tok(s, truncation=True, max_length=16)["input_ids"] for s in STRINGS]
    batch_texts = ["你好，世界！", "The knowledge base is rebuilt with pdsd kb -r.", "中", "安装指南：先运行 scripts/setup.sh"]
    enc = tok(batch_texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    cls = torch.nn.functional.normalize(h[:, 0], dim=-1)
    ref["batch"] = {"texts": batch_texts, "ids": enc["input_ids"].tolist(), "mask": enc["attention_mask"].tolist(),
                    "shape": list(h.shape), "last_hidden_state": [round(v, 7) for v in h.flatten().tolist()],
                    "cls": [round(v, 7) for v in cls.flatten().tolist()]}
    with open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=0)
    for extra in ["sentencepiece.bpe.model"]:
        assert os.path.exists(os.path.join(OUT, extra))
    print("wrote", OUT, "spm pieces", n_sp, file=sys.stderr)


if __name__ == "__main__":
    main()
