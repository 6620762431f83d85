"""Benchmark `train serve` (issue 13) against a sequential transformers ``generate`` loop, same model, same run.

Model: the example tiny Llama (``examples/tiny/model``: 4 layers, hidden 128, vocab 2,048) with seeded
random weights saved next to the tokenizer, served whole. Requests: seeded chat prompts of 8-40 words,
greedy, ``--max-tokens`` new tokens each, as OpenAI chat completion requests over HTTP.

* ``serve``: ``train serve MODEL --engine E`` in a subprocess; C client threads each send requests
  back to back (closed loop) until ``--requests`` per level are done.
* ``baseline``: what serving without batching is: the same C client threads, in this process, each
  taking a lock and calling ``model.generate`` on one prompt (the chat template applied as
  ``train generate`` does), so requests are served one at a time.

For C in ``--clients`` (default 1, 8, 32): requests/s, completion tokens/s and p50/p99 latency per
request, and the ratio of throughputs. ``match`` is the share of serve answers equal to the baseline's
greedy answer for the same prompt (batching must not change them). ``other_cpu_s`` is CPU time the
rest of the machine used meanwhile: large values mean contended timings.

Usage::

    uv run python benchmarks/serve/bench_serve.py                      # 1, 8, 32 clients
    uv run python benchmarks/serve/bench_serve.py --clients 1,4 --requests 8 --max-tokens 8   # toy
    uv run python benchmarks/serve/bench_serve.py --engine vllm --device cuda                 # GPU

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `train` sets it before torch loads OpenMP

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
]


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used (user + nice + system), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_model(root: Path) -> Path:
    """The example tiny Llama with seed-0 random weights, and the example tokenizer, in one directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(REPO / "examples/tiny/model"))
    model.save_pretrained(root / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(REPO / "examples/tiny/tokenizer" / name, root / "model" / name)
    return root / "model"


def prompts(n: int, seed: int) -> list[str]:
    """Seeded questions of 8-40 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(8, 41)))) + "?" for _ in range(n)]


def drive(clients: int, questions: list[str], ask: Callable[[str], tuple[str, int]]) -> dict[str, object]:
    """``clients`` threads send ``questions`` (closed loop); latency per request, throughput over all."""
    latencies: list[float] = [0.0] * len(questions)
    answers: list[str] = [""] * len(questions)
    tokens = [0] * len(questions)
    following = iter(range(len(questions)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(following, None)
            if index is None:
                return
            started = time.perf_counter()
            answers[index], tokens[index] = ask(questions[index])
            latencies[index] = time.perf_counter() - started

    busy = busy_cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(questions),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(questions) / wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "p50_s": round(float(np.percentile(latencies, 50)), 4),
        "p99_s": round(float(np.percentile(latencies, 99)), 4),
        "other_cpu_s": None,  # filled by the caller, which knows its own CPU time
        "_busy": busy_cpu_seconds() - busy,
        "_answers": answers,
    }


def baseline_asker(model_path: Path, max_tokens: int, device: str) -> Callable[[str], tuple[str, int]]:
    """One request at a time through ``model.generate`` (the chat template applied as ``train generate`` does)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = (
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
        .to(device)
        .eval()
    )
    lock = threading.Lock()

    def ask(question: str) -> tuple[str, int]:
        with lock, torch.no_grad():
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}],
                add_generation_prompt=True,
                return_dict=True,
                return_tensors="pt",
            )["input_ids"].to(device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
            new = out[0, ids.shape[1] :]
            return tokenizer.decode(new, skip_special_tokens=True), int(new.numel())

    return ask


def start_server(model_path: Path, engine: str, device: str) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "tunekit_cli.train",
        "serve",
        f"tiny={model_path}",
        "--port",
        "0",
        "--json",
        "--engine",
        engine,
        "--device",
        device,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        sys.exit("train serve did not start")
    return process, json.loads(line)["url"]


def serve_asker(url: str, max_tokens: int) -> Callable[[str], tuple[str, int]]:
    """POST /v1/chat/completions over one keep-alive connection per client thread.

    Plain ``http.client`` rather than the ``openai`` client (which the tests use): all clients share this
    process's GIL, and the openai client's per-call CPU (request and response models) for 8-32 threads
    would be measured as server latency and delay the clients' next requests.
    """
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(url)
    local = threading.local()

    def ask(question: str) -> tuple[str, int]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(address.hostname, address.port, timeout=600)
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        local.conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        answer = json.loads(local.conn.getresponse().read())
        return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]

    return ask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (at least the clients)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--engine", default="transformers", help="transformers | vllm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        model_path = make_model(root)
        process, url = start_server(model_path, args.engine, args.device)
        try:
            serve, base = (
                serve_asker(url, args.max_tokens),
                baseline_asker(model_path, args.max_tokens, args.device),
            )
            serve(prompts(1, args.seed + 99)[0]), base(prompts(1, args.seed + 99)[0])  # warm-up
            rows = []
            for clients in levels:
                questions = prompts(max(args.requests, clients), args.seed + clients)
                results = {}
                for name, ask in (("serve", serve), ("baseline", base)):
                    own, server_cpu = time.process_time(), process_cpu_seconds(process.pid)
                    result = drive(clients, questions, ask)
                    ours = time.process_time() - own + process_cpu_seconds(process.pid) - server_cpu
                    result["other_cpu_s"] = round(result.pop("_busy") - ours, 1)
                    results[name] = result
                served, plain = results["serve"].pop("_answers"), results["baseline"].pop("_answers")
                match = sum(a == b for a, b in zip(served, plain, strict=True)) / len(served)
                ratio = results["serve"]["requests_per_s"] / results["baseline"]["requests_per_s"]
                rows.append(
                    {"clients": clients, "ratio": round(ratio, 2), "match": round(match, 3), **results}
                )
            with urllib_open(f"{url}/health") as health:
                stats = json.load(health)
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{'clients':>7} {'serve req/s':>11} {'p50 s':>7} {'p99 s':>7} {'base req/s':>10} {'p50 s':>7} {'p99 s':>7} {'ratio':>6} {'match':>6}"
    )
    for r in rows:
        s, b = r["serve"], r["baseline"]
        print(
            f"{r['clients']:>7} {s['requests_per_s']:>11} {s['p50_s']:>7} {s['p99_s']:>7} {b['requests_per_s']:>10} {b['p50_s']:>7} {b['p99_s']:>7} {r['ratio']:>6} {r['match']:>6}"
        )
    print(f"server batch sizes: {stats.get('batch_sizes')}")
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "engine": args.engine,
        "device": args.device,
    }
    print(
        json.dumps(
            {
                "benchmark": "serve",
                "max_tokens": args.max_tokens,
                "machine": machine,
                "levels": rows,
                "server": stats,
            }
        )
    )


def urllib_open(url: str):
    import urllib.request

    return urllib.request.urlopen(url, timeout=30)


if __name__ == "__main__":
    main()
