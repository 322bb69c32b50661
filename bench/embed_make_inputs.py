#!/usr/bin/env python3
"""Inputs of bench/embed_bench.sh:
  1. a bge-large-zh-v1.5-shaped BertModel with random weights (24 layers, hidden 1024,
     16 heads, intermediate 4096, vocab 21128, 512 positions; seed 0), saved by
     transformers' save_pretrained as model.safetensors, with a 21128-token vocab.txt in
     bert-base-chinese's layout ([PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102,
     [MASK] 103, ASCII, CJK U+4E00.., ## pieces) and the sentence-transformers files of
     bge (CLS pooling, Normalize), so both tools load the same folder;
  2. N Chinese chunks of about 300 characters cut from Debian's manpages-zh (roff
     stripped), as JSONL (one JSON string per line).
  embed_make_inputs.py MODEL_DIR CHUNKS.jsonl [--chunks 64] [--chars 300]
"""
import argparse, glob, gzip, json, os, re

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("chunks")
ap.add_argument("--chunks", dest="n", type=int, default=64)
ap.add_argument("--chars", type=int, default=300)
a = ap.parse_args()

if not os.path.exists(os.path.join(a.model_dir, "model.safetensors")):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=21128, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                     layer_norm_eps=1e-12, pad_token_id=0)
    BertModel(cfg, add_pooling_layer=True).eval().save_pretrained(a.model_dir, safe_serialization=True)
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [chr(c) for c in range(33, 127)]
    seen = set(vocab)
    for c in list(range(0x4E00, 0x9FA6)) + [ord(x) for x in "，。：；！？（）、《》“”‘’…—·「」【】"]:
        if chr(c) not in seen:
            vocab.append(chr(c)); seen.add(chr(c))
    k = 0
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    while len(vocab) < 21128:
        t = "##" + letters[k % 36] + (letters[(k // 36) % 36] if k >= 36 else "")
        if t not in seen:
            vocab.append(t); seen.add(t)
        k += 1
    vocab = vocab[:21128]
    with open(os.path.join(a.model_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
               "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "mask_token": "[MASK]"}, open(os.path.join(a.model_dir, "tokenizer_config.json"), "w"))
    json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
              open(os.path.join(a.model_dir, "modules.json"), "w"))
    os.makedirs(os.path.join(a.model_dir, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(a.model_dir, "2_Normalize"), exist_ok=True)
    json.dump({"word_embedding_dimension": 1024, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
              open(os.path.join(a.model_dir, "1_Pooling", "config.json"), "w"))
    json.dump({"max_seq_length": 512, "do_lower_case": True},
              open(os.path.join(a.model_dir, "sentence_bert_config.json"), "w"))

paras = []
for f in sorted(glob.glob("/usr/share/man/zh_CN/man*/*.gz")):
    try:
        t = gzip.open(f, "rt", encoding="utf-8", errors="replace").read()
    except OSError:
        continue
    out = []
    for line in t.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            line = re.sub(r"^\.[A-Za-z]+\s*", "", line)
        line = re.sub(r"\\f[BIRP]|\\f\(..|\\s[-+]?\d|\\&|\\e", "", line).replace("\\-", "-").replace('"', "").strip()
        if line:
            out.append(line)
    text = "\n".join(out)
    if re.search(r"[\u4e00-\u9fff]", text):
        paras.append(text)
if not paras:
    raise SystemExit("no /usr/share/man/zh_CN: apt-get install -y manpages-zh")
chunks = []
for p in paras:
    for s in range(0, len(p) - a.chars // 2, a.chars):
        c = p[s:s + a.chars].strip()
        if len(re.findall(r"[\u4e00-\u9fff]", c)) >= a.chars // 5:
            chunks.append(c)
step = max(1, len(chunks) // a.n)
chunks = chunks[::step][:a.n]
with open(a.chunks, "w", encoding="utf-8") as f:
    for c in chunks:
        f.write(json.dumps(c, ensure_ascii=False) + "\n")
print(f"{len(chunks)} chunks, mean {sum(map(len, chunks)) / len(chunks):.0f} chars -> {a.chunks}")
