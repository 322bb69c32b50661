#!/usr/bin/env python3
"""Writes the hostile-input corpus into OUT (generated at test time, never committed).

  tests/hostile/make_corpus.py OUT

Each file is small on disk (under 2 MB) and hostile when read: deep nesting, entity
and zip bombs, amplification (a key repeated per array element, a CSV header repeated
per row), huge lines, NUL bytes, a non-UTF-8 file name, wrong types and numbers out of
range. run_cli.sh feeds them to every pdsd subcommand that reads files.
"""
import json
import os
import sys
import zipfile
import zlib

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    # an option here is a user asking for help, not a folder to fill (a run with --help once
    # wrote the corpus into ./--help and it was committed)
    print(__doc__.strip())
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
OUT = sys.argv[1]


def write(rel, data):
    path = os.path.join(OUT, rel) if isinstance(rel, str) else os.path.join(OUT.encode(), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


DEEP = 100_000   # levels: the crash reports were from 20,000 (kb split) to 75,000 (datasets)
deep_array = "[" * DEEP + "]" * DEEP
deep_object = '{"a":' * DEEP + "1" + "}" * DEEP

# ---- kb documents (each goes into its own KB run) -----------------------------------
docs = "docs"
write(f"{docs}/deep_array.json", deep_array)
write(f"{docs}/deep_object.json", deep_object)
write(f"{docs}/deep_line.jsonl", '{"ok": 1}\n' + deep_array + "\n")
# 10 KB key x 30,000 elements: 300 MB of "key: 1" lines from a 70 KB file
write(f"{docs}/key_amplify.json", json.dumps({"k" * 10_000: [1] * 30_000}))
# 20,000 columns of 100-char names x 2,000 rows: 4 GB of "name: None" lines from 2 MB
write(f"{docs}/csv_amplify.csv", ",".join(f"{i:0100d}" for i in range(20_000)) + "\n" + "x\n" * 2_000)
write(f"{docs}/bad.pdf", b"%PDF-1.7\n" + os.urandom(4096))


def docx(rel, document_xml, compress=zipfile.ZIP_DEFLATED):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", compress) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", document_xml)


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
lol = "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
docx(f"{docs}/billion_laughs.docx",
     f'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY l0 "lol">{lol}]>'
     f'<w:document {W}><w:body><w:p><w:r><w:t>&l9;</w:t></w:r></w:p></w:body></w:document>')
docx(f"{docs}/xxe.docx",
     f'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     f'<w:document {W}><w:body><w:p><w:r><w:t>&x;</w:t></w:r></w:p></w:body></w:document>')
docx(f"{docs}/deep_xml.docx",
     f'<?xml version="1.0"?><w:document {W}><w:body>' + "<w:sdt>" * 50_000 + "</w:sdt>" * 50_000 +
     "</w:body></w:document>")
write(f"{docs}/not_a_zip.docx", os.urandom(2048))

# Zip bomb: word/document.xml of 256 MiB of spaces, about 250 KB deflated (streamed, never in memory).
zpath = os.path.join(OUT, docs, "zip_bomb.docx")
with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("[Content_Types].xml", "<Types/>")
    with z.open("word/document.xml", "w", force_zip64=True) as f:
        block = b" " * (1 << 20)
        for _ in range(256):
            f.write(block)

# ---- kb documents that must be indexed (the rest of a KB with hostile files) --------
write("good/readme.md", "# pdsd\nA knowledge base keeps indexing the good files next to hostile ones.\n")
write("good/nul.txt", b"text with \x00 NUL \x00 bytes\x00 inside\n")
write("good/huge_line.txt", "x" * (8 << 20))                 # 8 MiB, one line, no separator
write("good/entities.html", "<p>" + "&" * 500_000 + "</p>" + "<script>a</script>" * 50_000 + "<p>end</p>")
write("good/strings.json", json.dumps({"s": "[" * 10_000 + "{" * 10_000}))   # brackets inside a string
write(b"good/bad_name_\xff\xfe.txt", b"a file whose name is not UTF-8\n")

# ---- datasets ------------------------------------------------------------------------
def dataset(name, info, files):
    for rel, data in files.items():
        write(f"datasets/{name}/{rel}", data)
    write(f"datasets/{name}/dataset_info.json", info if isinstance(info, str) else json.dumps(info))


alpaca = {"d": {"file_name": "d.json"}}
sharegpt = {"d": {"file_name": "d.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages"},
                  "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}
dataset("deep_registry", deep_object, {"d.json": "[]"})
dataset("deep_record", alpaca, {"d.json": "[" + deep_array + "]"})
dataset("deep_record_jsonl", {"d": {"file_name": "d.jsonl"}}, {"d.jsonl": deep_array + "\n"})
dataset("deep_tools", {"d": {"file_name": "d.json", "columns": {"tools": "tools"}}},
        {"d.json": json.dumps([{"instruction": "a", "output": "b", "tools": deep_array}])})
dataset("content_null", sharegpt,
        {"d.json": json.dumps([{"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}])})
dataset("wrong_types", alpaca, {"d.json": json.dumps([{"instruction": 5, "output": ["x"]}])})
dataset("nul_bytes", alpaca, {"d.json": b'[{"instruction": "a\x00", "output": "b"}]'})
dataset("num_overflow", alpaca, {"d.json": '[{"instruction": "a", "output": "b", "n": 1e999}]'})

# ---- tokenizers -------------------------------------------------------------------------
write("tok/array/tokenizer.json", "[]")
write("tok/model_number/tokenizer.json", '{"model": 5}')
write("tok/deep/tokenizer.json", deep_object)
write("tok/type_number/tokenizer.json", '{"model": {"type": 7, "vocab": {}, "merges": []}}')

# ---- kb_settings.yaml and kb JSON inputs ---------------------------------------------
write("settings/top_k_negative/kb_settings.yaml", "top_k: -3\n")
write("settings/chunk_size_negative/kb_settings.yaml", "chunk_size: -1\n")
write("settings/chunk_size_overflow/kb_settings.yaml", "chunk_size: 99999999999999999999\n")
write("settings/deep_yaml/kb_settings.yaml", "top_k: " + "[" * 20_000 + "]" * 20_000 + "\n")
write("embed_number.jsonl", '"a text"\n5\n')
write("embed_deep.jsonl", deep_array + "\n")
write("split_no_size.jsonl", '{"text": "abc", "chunk_overlap": 0}\n')
write("split_negative.jsonl", '{"text": "abc", "chunk_size": -5, "chunk_overlap": 0}\n')
write("split_deep.jsonl", deep_array + "\n")
write("qa_deep.jsonl", deep_array + "\n")
write("not_a_folder", "a file where a folder is expected\n")

# ---- tokenizer.json schema (from the vendored Qwen tokenizer, when given) ------------
if len(sys.argv) > 2:
    src = os.path.join(sys.argv[2], "qwen-tokenizer", "tokenizer.json")
    if os.path.exists(src):
        with open(src, encoding="utf-8") as f:
            tj = json.load(f)
        tj["added_tokens"] = "x"
        write("tok/added_tokens_string/tokenizer.json", json.dumps(tj))
        tj["added_tokens"] = []
        os.makedirs(os.path.join(OUT, "tok_ok"), exist_ok=True)
        write("tok_ok/no_added_tokens/tokenizer.json", json.dumps(tj))
