#!/usr/bin/env python3
"""Measure the real engine on this machine: llama.cpp's llama-server with Gemma 3 270M on CPU
(tests/support/real_model.py starts it; scripts/real-model installs it).

Reports, as a markdown table on stdout:
  - the install check (scripts/real-model with the cache present) and the server's start-up
    (process start to `/health` 200 and the model id read);
  - for a 64-token streamed chat answer (generation held to the budget with `ignore_eos`):
    time to the first content chunk (TTFT), and decode speed per request, (tokens - 1) over the
    time from the first to the last content chunk, then the total rate across requests;
    first one request alone, then N at once (`--concurrent`, default 4) on as many slots.
Figures are for this machine at this moment: a shared, busy machine gives lower ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.real_model import install_real_model, run_llama_server  # noqa: E402

TOKENS = 64


@dataclass
class Sample:
    ttft: float  # seconds from sending the request to the first content chunk
    decode: float  # seconds from the first content chunk to the last
    tokens: int  # completion tokens, from the stream's usage chunk


def one_answer(client: openai.OpenAI, model: str, prompt: str) -> Sample:
    sent = time.perf_counter()
    first = last = 0.0
    tokens = 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=TOKENS,
        temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Sample(ttft=first - sent, decode=last - first, tokens=tokens)


def at_once(client: openai.OpenAI, model: str, count: int) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        sample = one_answer(client, model, f"Tell me a story about the number {index}.")
        with lock:
            samples.append(sample)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - started


def row(label: str, samples: list[Sample], wall: float) -> str:
    ttft = statistics.mean(s.ttft for s in samples) * 1000
    per_request = statistics.mean((s.tokens - 1) / s.decode for s in samples if s.decode > 0)
    total = sum(s.tokens for s in samples) / wall
    return f"| {label} | {ttft:.0f} ms | {per_request:.1f} tok/s | {total:.1f} tok/s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=4, help="requests at once (default 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama-server's threads (default: the tests' default)")
    args = parser.parse_args()

    started = time.perf_counter()
    install_real_model()
    install_check = time.perf_counter() - started

    with run_llama_server(parallel=args.concurrent, threads=args.threads) as server:
        with openai.OpenAI(base_url=server.openai_base, api_key="unused", max_retries=0,
                           timeout=300) as client:
            one_answer(client, server.model, "Warm up.")
            single, single_wall = at_once(client, server.model, 1)
            many, many_wall = at_once(client, server.model, args.concurrent)
        threads = server.args[server.args.index("--threads") + 1]

    print(f"install check (cache present): {install_check:.2f} s")
    print(f"server start-up to ready: {server.ready_after:.2f} s ({threads} threads)")
    print()
    print(f"| {TOKENS}-token answers | TTFT (mean) | decode per request | total |")
    print("|---|---|---|---|")
    print(row("1 request", single, single_wall))
    print(row(f"{args.concurrent} at once", many, many_wall))


if __name__ == "__main__":
    main()
