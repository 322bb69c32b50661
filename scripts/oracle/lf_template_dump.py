#!/usr/bin/env python3
"""Golden input_ids/labels from LLaMA-Factory's own converter + `qwen` template + supervised
processor, for pdsd's template exactness test (tests/tokenizer/test_chat_template.cpp).

Cases: every record of the data/ demo datasets (default options and a few option variants),
plus hand-written tricky cases. Each case stores the dataset_info.json entry, the raw record,
LF's converted conversation and LF's input_ids/labels.

  /work/venvs/lf/bin/python scripts/oracle/lf_template_dump.py \
      --tokenizer tests/fixtures/qwen-tokenizer --out tests/data/golden/lf_qwen_template.json
  ... --check FILE   re-run and compare with FILE instead of writing (exit 1 on a difference)
"""
import argparse
import copy
import json
import os
import sys

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# LF's mm_plugin imports torchaudio unconditionally; a torchaudio wheel built for another CUDA
# raises at import. Text-only SFT never calls it, so an empty stand-in is enough then.
try:
    import torchaudio  # noqa: F401
except Exception:  # noqa: BLE001
    import importlib.machinery
    import types
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub

import llamafactory  # noqa: E402
import transformers  # noqa: E402
import tokenizers  # noqa: E402
from llamafactory.data.converter import get_dataset_converter  # noqa: E402
from llamafactory.data.parser import DatasetAttr  # noqa: E402
from llamafactory.data.processor.supervised import SupervisedDatasetProcessor  # noqa: E402
from llamafactory.data.template import TEMPLATES  # noqa: E402
from llamafactory.hparams import DataArguments  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_attr(entry):
    attr = DatasetAttr("file", dataset_name=entry.get("file_name", "inline"))
    attr.join(entry)
    return attr


def convert(entry, record):
    attr = make_attr(entry)
    data_args = DataArguments(template="qwen")
    # HF datasets gives every column to every row (None when absent): do the same.
    cols = [attr.prompt, attr.query, attr.response, attr.history, attr.messages, attr.system, attr.tools,
            attr.images, attr.videos, attr.audios, attr.chosen, attr.rejected, attr.kto_tag]
    example = {c: record.get(c) for c in cols if c}
    example.update(record)
    return get_dataset_converter(attr.formatting, attr, data_args)(example)


def encode(tokenizer, conv, options):
    data_args = DataArguments(template="qwen", cutoff_len=options.get("cutoff_len", 2048),
                              train_on_prompt=options.get("train_on_prompt", False),
                              mask_history=options.get("mask_history", False))
    template = copy.deepcopy(TEMPLATES["qwen"])
    if options.get("default_system") is not None:
        template.default_system = options["default_system"]
    proc = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=data_args)
    if len(conv["_prompt"]) % 2 != 1 or len(conv["_response"]) != 1:
        return None, None  # LF drops it ("Dropped invalid example")
    return proc._encode_data_example(conv["_prompt"], conv["_response"], conv["_system"], conv["_tools"], [], [], [])


def tricky_cases():
    alpaca = {"file_name": "inline.json", "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                       "history": "history", "system": "system"}}
    sharegpt = {"file_name": "inline.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools", "system": "system"}}
    long_prompt = "请详细阅读以下日志并找出错误原因：" + "ERROR 2026-03-12 09:10:01 auth-server certificate expired; " * 60
    long_resp = "排查步骤如下。" + "第一步，检查网络连接是否正常，确认网线和交换机端口指示灯。" * 40
    tools = json.dumps([{"name": "query_ticket", "description": "查询工单", "parameters": {"type": "object", "properties": {"ticket_id": {"type": "string"}}, "required": ["ticket_id"]}},
                        {"type": "function", "function": {"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], ensure_ascii=False)
    multi = {"instruction": "介绍一下你自己", "input": "", "output": "我是助手。", "history": [["你好", "您好！"]]}
    hist3 = {"instruction": "第三个问题：怎么申请VPN？", "input": "", "output": "在OA提交远程办公申请。",
             "history": [["第一个问题：打印机在哪？", "在每层的茶水间旁边。"], ["第二个问题：WiFi密码？", "QL-Office 使用域账号登录，无需单独密码。"]]}
    fc = {"conversations": [
        {"from": "system", "value": "你是IT助手。"},
        {"from": "human", "value": "查一下工单 INC-1 和天气"},
        {"from": "function_call", "value": json.dumps([{"name": "query_ticket", "arguments": {"ticket_id": "INC-1"}}, {"name": "get_weather", "arguments": {"city": "北京", "unit": "c"}}], ensure_ascii=False)},
        {"from": "observation", "value": "{\"status\": \"done\"}"},
        {"from": "gpt", "value": "工单 INC-1 已完成，北京晴。"}], "tools": tools}
    cases = [
        ("anchors_worked_example", alpaca, multi, {}),
        ("empty_input", alpaca, {"instruction": "你好", "input": "", "output": "您好！"}, {}),
        ("instruction_and_input", alpaca, {"instruction": "翻译成英文", "input": "服务器维护", "output": "Server maintenance"}, {}),
        ("only_input", alpaca, {"instruction": "", "input": "只有输入", "output": "好的"}, {}),
        ("alpaca_system", alpaca, {"instruction": "Hi", "input": "", "output": "Hello!", "system": "You are a terse assistant."}, {}),
        ("english_text", alpaca, {"instruction": "What's the VPN address? It's 'urgent'!", "input": "", "output": "It's vpn.qinglan.example — don't share it.\n\nThanks!"}, {}),
        ("history_three_turns", alpaca, hist3, {}),
        ("mask_history", alpaca, hist3, {"mask_history": True}),
        ("train_on_prompt", alpaca, hist3, {"train_on_prompt": True}),
        ("default_system_override", alpaca, multi, {"default_system": "你是青岚科技IT服务台助手。"}),
        ("long_prompt_cutoff", alpaca, {"instruction": long_prompt, "input": "", "output": "证书过期。"}, {"cutoff_len": 128}),
        ("long_response_cutoff", alpaca, {"instruction": "怎么排查网络？", "input": "", "output": long_resp}, {"cutoff_len": 64}),
        ("long_both_cutoff", alpaca, {"instruction": long_prompt, "input": "", "output": long_resp}, {"cutoff_len": 100}),
        ("history_cutoff_drops_turns", alpaca, hist3, {"cutoff_len": 60}),
        ("mask_history_cutoff", alpaca, hist3, {"cutoff_len": 60, "mask_history": True}),
        ("tiny_cutoff", alpaca, multi, {"cutoff_len": 5}),
        ("sharegpt_function_observation_tools", sharegpt, fc, {}),
        ("sharegpt_function_cutoff", sharegpt, fc, {"cutoff_len": 200}),
        ("sharegpt_system_multiturn_mask", sharegpt, {"conversations": [
            {"from": "system", "value": "Answer in English."},
            {"from": "human", "value": "Where is the printer?"}, {"from": "gpt", "value": "Next to the pantry."},
            {"from": "human", "value": "And the scanner?"}, {"from": "gpt", "value": "Same place."}]}, {"mask_history": True}),
        ("sharegpt_thought_in_function", sharegpt, {"conversations": [
            {"from": "human", "value": "查工单 INC-2"},
            {"from": "function_call", "value": "<think>\n需要查询工单\n</think>\n\n{\"name\": \"query_ticket\", \"arguments\": {\"ticket_id\": \"INC-2\"}}"},
            {"from": "observation", "value": "处理中"}, {"from": "gpt", "value": "工单处理中。"}], "tools": tools}, {}),
        ("whitespace_and_newlines", alpaca, {"instruction": "  前后有空格  \n\n", "input": "\t制表符", "output": "多行\n\n回答  "}, {}),
    ]
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests", "fixtures", "qwen-tokenizer"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "golden", "lf_qwen_template.json"))
    ap.add_argument("--check", help="compare against this golden instead of writing")
    args = ap.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    info = json.load(open(os.path.join(args.data, "dataset_info.json"), encoding="utf-8"))
    cases = []
    variants = [{}, {"cutoff_len": 48}, {"cutoff_len": 96, "mask_history": True}, {"train_on_prompt": True}]
    for name, entry in info.items():
        path = os.path.join(args.data, entry["file_name"])
        if path.endswith(".jsonl"):
            records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        else:
            records = json.load(open(path, encoding="utf-8"))
        for i, rec in enumerate(records):
            for v, opts in enumerate(variants):
                if v > 0 and i % 4 != v % 4:
                    continue  # option variants on a subset keep the golden small
                cases.append((f"{name}[{i}]" + (f"/{v}" if v else ""), entry, rec, opts, name, i))
    for c in tricky_cases():
        cases.append(c + (None, None))

    out_cases = []
    for name, entry, rec, opts, ds, idx in cases:
        conv = convert(entry, rec)
        input_ids, labels = encode(tokenizer, conv, opts)
        out_cases.append({
            "name": name, "dataset": ds, "index": idx, "entry": entry, "record": rec, "options": opts,
            "conversation": {"system": conv["_system"] or "", "tools": conv["_tools"] or "",
                             "messages": [{"role": m["role"], "content": m["content"]} for m in conv["_prompt"] + conv["_response"]]},
            "input_ids": input_ids, "labels": labels,
        })
    golden = {
        "generator": "scripts/oracle/lf_template_dump.py",
        "versions": {"llamafactory": llamafactory.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "python": sys.version.split()[0]},
        "tokenizer": "tests/fixtures/qwen-tokenizer (tokenizer.json)",
        "template": "qwen",
        "cases": out_cases,
    }
    if args.check:
        old = json.load(open(args.check, encoding="utf-8"))
        bad = 0
        old_cases = {c["name"]: c for c in old["cases"]}
        for c in out_cases:
            o = old_cases.get(c["name"])
            if o is None or o["input_ids"] != c["input_ids"] or o["labels"] != c["labels"] or o["conversation"] != c["conversation"]:
                print(f"DIFF {c['name']}")
                bad += 1
        print(f"{len(out_cases)} cases, {bad} differ from {args.check} (golden made with {old['versions']}, now {golden['versions']})")
        return 1 if bad else 0
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(out_cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
