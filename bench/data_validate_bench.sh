#!/bin/sh
# `pdsd data validate` with token statistics vs pure tokenization of the same text.
# Generates N alpaca records (default 100000) as one .json array, then times
#   A: pdsd data validate --tokenizer ... (read + convert + qwen template per-slot encode + stats)
#   B: pdsd tokenize --jsonl over the rendered training text of every record (one line each)
# on the same threads, and prints B/A's ratio. Target: A within 2x of B.
#   bench/data_validate_bench.sh [N] [threads]
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-100000}"
threads="${2:-0}"
pdsd="${PDSD:-$root/build/pdsd}"
tok="${PDSD_TOKENIZER:-$root/tests/fixtures/qwen-tokenizer}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$n" <<'PY'
import json, random, sys
work, n = sys.argv[1], int(sys.argv[2])
random.seed(0)
topics = ["VPN", "打印机", "云盘", "邮箱", "OA", "Wi-Fi", "域账号", "显示器", "会议室", "补丁"]
verbs = ["连不上", "报错", "很慢", "无法登录", "需要申请", "怎么设置", "提示证书错误", "同步失败"]
steps = ["请先重启设备。", "检查网络连接是否正常。", "在OA提交报修工单。", "联系IT服务台（内线8000）。",
         "Please restart the client and try again.", "清除浏览器缓存后重新登录。", "确认域账号没有被锁定。"]
sysmsg = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
recs, texts = [], []
for i in range(n):
    q = f"{random.choice(topics)}{random.choice(verbs)}，工单号 INC-{i:06d}，怎么办？"
    inp = "" if i % 3 else f"我在{random.randint(1, 9)}号楼{random.randint(1, 20)}层，用的是 Windows 11。"
    out = "".join(random.choice(steps) for _ in range(random.randint(2, 12)))
    recs.append({"instruction": q, "input": inp, "output": out})
    user = q + ("\n" + inp if inp else "")
    texts.append(f"<|im_start|>system\n{sysmsg}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{out}<|im_end|>\n")
json.dump({"bench": {"file_name": "bench.json"}}, open(f"{work}/dataset_info.json", "w"))
json.dump(recs, open(f"{work}/bench.json", "w"), ensure_ascii=False, indent=1)
with open(f"{work}/texts.jsonl", "w") as f:
    for t in texts:
        f.write(json.dumps(t, ensure_ascii=False) + "\n")
PY

now() { python3 -c 'import time; print(time.time())'; }
ta=$(now)
"$pdsd" --log-level warn data validate --dataset bench --dataset_dir "$work" --tokenizer "$tok" --cutoff_len 1024 > "$work/report.txt"
tb=$(now)
"$pdsd" --log-level warn tokenize --tokenizer "$tok" --jsonl --threads "$threads" - < "$work/texts.jsonl" > /dev/null
tc=$(now)
python3 - "$ta" "$tb" "$tc" "$n" "$(du -h "$work/bench.json" | cut -f1)" <<'PY'
import sys
ta, tb, tc, n, size = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
v, t = tb - ta, tc - tb
print(f"records: {n} ({size} json)")
print(f"pdsd data validate (+token stats): {v:.2f} s")
print(f"pdsd tokenize --jsonl (same text):  {t:.2f} s")
print(f"ratio validate/tokenize: {v / t:.2f}x (target <= 2x)")
PY
sed -n '1,12p' "$work/report.txt"
