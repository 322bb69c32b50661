#!/usr/bin/env python3
"""Oracle: the official `openai` Python client (PyPI) against a running `pdsd serve`.

Makes a tiny random-weight Qwen2 with the real Qwen tokenizer (`pdsd model init --preset tiny`),
starts `pdsd serve --port 0 --api-key ... --embed-model hash-ngram`, and checks with the
openai client: models.list, chat non-stream (usage exact: prompt + completion = total,
completion == max_tokens at finish_reason length), chat stream (role chunk, content deltas,
finish chunk, equal to the non-stream text for greedy), embeddings (the client's default
base64 encoding and float), and errors (bad key -> AuthenticationError, bad request ->
BadRequestError, a 404 route -> NotFoundError). Then SIGINT: exit status 130.

Needs `openai` (scripts/requirements-oracle.txt). Without it, re-runs itself in the venv
$PDSD_SERVE_VENV (default /work/venvs/serve) when that exists, else exits 77 (ctest SKIP).

  python3 scripts/oracle/serve_openai.py --pdsd build/pdsd --fixtures tests/fixtures
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

VENV = os.environ.get("PDSD_SERVE_VENV", "/work/venvs/serve")


def ensure_openai():
    try:
        import openai  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.path.exists(py) and os.path.realpath(sys.prefix) != os.path.realpath(VENV) and not os.environ.get("PDSD_SERVE_REEXEC"):
        os.environ["PDSD_SERVE_REEXEC"] = "1"
        os.execv(py, [py] + sys.argv)
    print("SKIP: the openai package is not installed (pip install openai, or make the venv " + VENV + ")", file=sys.stderr)
    sys.exit(77)


def start_server(pdsd, model, root, key):
    proc = subprocess.Popen([pdsd, "serve", "--model", model, "--port", "0", "--api-key", key,
                             "--embed-model", "hash-ngram", "--root", root],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    url = None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"pdsd serve: (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if not url:
        proc.kill()
        sys.exit("server did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain logs
    return proc, url


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdsd", required=True)
    ap.add_argument("--fixtures", required=True)
    args = ap.parse_args()
    ensure_openai()
    import openai

    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        subprocess.run([args.pdsd, "--log-level", "warn", "model", "init", "--preset", "tiny", "--seed", "7",
                        "--tokenizer", os.path.join(args.fixtures, "qwen-tokenizer"), "--out", model],
                       check=True, stdout=subprocess.DEVNULL)
        key = "sk-pdsd-test"
        proc, url = start_server(args.pdsd, model, os.path.join(tmp, "data"), key)
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            ids = [m.id for m in client.models.list().data]
            check("tiny" in ids and "hash-ngram" in ids, f"models.list -> {ids}")

            msgs = [{"role": "user", "content": "你好，请介绍一下你自己。"}]
            r = client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=12)
            text = r.choices[0].message.content
            check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", "chat non-stream shape")
            check(r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length",
                  f"max_tokens 12 -> completion_tokens {r.usage.completion_tokens}, finish {r.choices[0].finish_reason}")
            check(r.usage.prompt_tokens > 20 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
                  f"usage {r.usage}")

            chunks = list(client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=12, stream=True,
                                                         stream_options={"include_usage": True}))
            check(chunks[0].choices[0].delta.role == "assistant", "stream: first chunk carries the role")
            body = [c for c in chunks if c.choices]
            check(body[-1].choices[0].finish_reason == "length", "stream: finish chunk says length")
            streamed = "".join(c.choices[0].delta.content or "" for c in body)
            check(streamed == text, "stream text == non-stream text (greedy)")
            check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12, "stream: include_usage chunk")
            check(len({c.id for c in chunks}) == 1, "stream: one id")

            s1 = client.chat.completions.create(model="tiny", messages=msgs, temperature=0.9, top_p=0.9, seed=42, max_tokens=8)
            s2 = client.chat.completions.create(model="tiny", messages=msgs, temperature=0.9, top_p=0.9, seed=42, max_tokens=8)
            check(s1.choices[0].message.content == s2.choices[0].message.content, "seeded sampling reproducible")

            # The legacy completions route (LangChain's OpenAI LLM, lm-eval-harness, llama.cpp users).
            c1 = client.completions.create(model="tiny", prompt="从前有座山，", temperature=0, max_tokens=10)
            check(c1.object == "text_completion" and c1.usage.completion_tokens <= 10 and c1.choices[0].finish_reason in ("length", "stop"),
                  f"completions shape, usage {c1.usage}")
            cs = list(client.completions.create(model="tiny", prompt="从前有座山，", temperature=0, max_tokens=10, stream=True))
            check("".join(c.choices[0].text for c in cs) == c1.choices[0].text and cs[-1].choices[0].finish_reason is not None,
                  "completions stream text == non-stream text")
            ce = client.completions.create(model="tiny", prompt="从前有座山，", temperature=0, max_tokens=10, echo=True)
            check(ce.choices[0].text == "从前有座山，" + c1.choices[0].text, "completions echo")

            e = client.embeddings.create(model="hash-ngram", input=["如何安装", "退货政策"])   # client default: base64
            check(len(e.data) == 2 and len(e.data[0].embedding) == 256, "embeddings (base64 transport)")
            n2 = sum(x * x for x in e.data[0].embedding)
            check(abs(n2 - 1) < 1e-4, f"embedding L2 norm^2 {n2:.6f}")
            ef = client.embeddings.create(model="hash-ngram", input="如何安装", encoding_format="float")
            check(max(abs(a - b) for a, b in zip(ef.data[0].embedding, e.data[0].embedding)) < 1e-6, "float == base64 embedding")

            bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
            try:
                bad.models.list()
                check(False, "bad key -> AuthenticationError")
            except openai.AuthenticationError:
                check(True, "bad key -> AuthenticationError")
            try:
                client.chat.completions.create(model="tiny", messages=msgs, temperature=7)
                check(False, "temperature 7 -> BadRequestError")
            except openai.BadRequestError as ex:
                check(ex.body is not None and "temperature" in str(ex.body), "temperature 7 -> BadRequestError naming the field")
            try:
                client.chat.completions.create(model="tiny", messages="hi")
                check(False, "messages as string -> BadRequestError")
            except openai.BadRequestError:
                check(True, "messages as string -> BadRequestError")
            try:
                client.moderations.create(input="hi")
                check(False, "/v1/moderations -> NotFoundError")
            except openai.NotFoundError:
                check(True, "/v1/moderations (not served) -> NotFoundError")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = None
        check(rc == 130, f"SIGINT -> exit {rc}")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
