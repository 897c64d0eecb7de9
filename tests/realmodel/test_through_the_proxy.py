"""A real model answering through the proxy: llama.cpp's llama-server with Gemma 3 270M as an
`openai`-kind upstream (PROXY_UPSTREAMS_FILE), behind a real proxy process.

Real token streaming through every dialect and the WebSocket; time to first token and tokens/s
in the metrics and the audit row; usage numbers equal to the engine's; the same answer at
temperature 0 with a fixed seed, through the proxy and directly; and a caller leaving mid-stream
stops the generation in the engine. The model is a base model (no instruction tuning): its chat
answers are echoes, so content is checked on text completions (`generate`), where a base model
continues the text it is given.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import websockets.sync.client
import yaml

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, counted, metric, start_proxy, stop_proxy
from tests.support.real_model import LlamaServer, run_llama_server
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth, make_token

pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(120, func_only=True)]

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    with run_llama_server() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("proxy")
    upstreams = workdir / "upstreams.yml"
    upstreams.write_text(yaml.safe_dump({"upstreams": [
        {"name": "llama-cpp", "kind": "openai", "url": llama.openai_base}]}))
    proxy = start_proxy(workdir, {"PROXY_UPSTREAMS_FILE": str(upstreams)})
    try:
        wait_until(lambda: llama.model in httpx.get(
            f"{proxy.url}/api/llm/models", headers=auth(), timeout=scaled(10)).text,
            timeout=30)
        yield proxy
    finally:
        stop_proxy(proxy)


def ndjson(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_tokens_stream_through_every_dialect(proxy: ProxyProcess, llama: LlamaServer) -> None:
    options = {"num_predict": 12, **GREEDY}
    with httpx.Client(base_url=proxy.url, headers=auth(), timeout=scaled(60)) as client:
        with client.stream("POST", "/api/llm/generate", json={
                "model": llama.model, "prompt": COUNTING, "options": options}) as own:
            lines = ndjson(own)
        assert len(lines) >= 4 and lines[-1]["done"] is True
        text = "".join(str(line.get("response", "")) for line in lines[:-1])
        assert "11" in text  # a base model counting on

    pieces = list(ollama.Client(host=f"{proxy.url}/ollama", headers=auth()).generate(
        model=llama.model, prompt=COUNTING, options=options, stream=True))
    assert len(pieces) >= 4 and "".join(p.response for p in pieces) == text

    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=make_token(), max_retries=0) as oa:
        chunks = list(oa.completions.create(model=llama.model, prompt=COUNTING, max_tokens=12,
                                            stream=True, **GREEDY))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == text
        chat = list(oa.chat.completions.create(
            model=llama.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
            stream=True, stream_options={"include_usage": True}, **GREEDY))
        assert sum(bool(c.choices and c.choices[0].delta.content) for c in chat) >= 2
        assert chat[-1].usage is not None and chat[-1].usage.completion_tokens > 0

    ws_url = proxy.url.replace("http://", "ws://") + "/api/llm/ws?token=" + make_token()
    with websockets.sync.client.connect(ws_url, open_timeout=scaled(10)) as ws:
        assert json.loads(ws.recv(timeout=scaled(10)))["type"] == "ready"
        ws.send(json.dumps({"type": "generate", "id": "1", "model": llama.model,
                            "prompt": COUNTING, "options": options}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=scaled(60))))
    assert frames[-1]["type"] == "done"
    assert "".join(f["content"] for f in frames if f["type"] == "token") == text


def test_usage_and_answer_equal_the_engines(proxy: ProxyProcess, llama: LlamaServer) -> None:
    with openai.OpenAI(base_url=llama.openai_base, api_key="none", max_retries=0) as direct:
        engine = direct.completions.create(model=llama.model, prompt=COUNTING, max_tokens=16,
                                           **GREEDY)
    with httpx.Client(base_url=proxy.url, headers=auth(), timeout=scaled(60)) as client:
        answers = [client.post("/api/llm/generate", json={
            "model": llama.model, "prompt": COUNTING, "stream": False,
            "options": {"num_predict": 16, **GREEDY}}).json() for _ in range(2)]
    assert answers[0]["response"] == answers[1]["response"] == engine.choices[0].text
    assert engine.usage is not None
    assert answers[0]["usage"] == {"prompt_tokens": engine.usage.prompt_tokens,
                                   "completion_tokens": engine.usage.completion_tokens,
                                   "total_tokens": engine.usage.total_tokens}


def test_time_to_first_token_and_speed_reach_metrics_and_audit(
        proxy: ProxyProcess, llama: LlamaServer) -> None:
    user = f"real-{uuid.uuid4().hex[:8]}"
    # 0 if no generation of this module has reached its proxy yet (this test run alone).
    before = counted(proxy, "llm_proxy_time_to_first_token_seconds_count")
    with httpx.Client(base_url=proxy.url, headers=auth(user), timeout=scaled(60)) as client:
        with client.stream("POST", "/api/llm/generate", json={
                "model": llama.model, "prompt": COUNTING,
                "options": {"num_predict": 12, **GREEDY}}) as response:
            done = ndjson(response)[-1]
    timings = done["timings"]
    assert isinstance(timings, dict) and timings["first_token_ms"] > 0
    assert timings["tokens_per_second"] > 0
    assert metric(proxy, "llm_proxy_time_to_first_token_seconds_count") == before + 1
    assert metric(proxy, "llm_proxy_generation_tokens_per_second_count") >= 1
    database = proxy.env["DATABASE_URL"]
    wait_until(lambda: count_rows(
        database, 'SELECT count(*) FROM audit_log WHERE "user" = $1 AND ttft_ms > 0 '
                  "AND completion_tokens > 0", user) == 1, timeout=20)


def test_leaving_mid_stream_stops_the_engine(proxy: ProxyProcess, llama: LlamaServer) -> None:
    budget = 1500
    predicted_before = llama.metrics()["llamacpp:tokens_predicted_total"]
    with httpx.Client(base_url=proxy.url, headers=auth(), timeout=scaled(60)) as client, \
            client.stream("POST", "/api/llm/generate", json={
                "model": llama.model, "prompt": COUNTING,
                "options": {"num_predict": budget, **GREEDY}}) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert any(slot["is_processing"] for slot in llama.slots())
    wait_until(lambda: not any(slot["is_processing"] for slot in llama.slots()), timeout=15)
    predicted = llama.metrics()["llamacpp:tokens_predicted_total"] - predicted_before
    assert 3 <= predicted < budget // 2


def test_the_real_model_is_listed_in_every_dialect(proxy: ProxyProcess,
                                                   llama: LlamaServer) -> None:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=make_token(), max_retries=0) as oa:
        assert llama.model in [m.id for m in oa.models.list()]
    tags = ollama.Client(host=f"{proxy.url}/ollama", headers=auth()).list()
    assert llama.model in [m.model for m in tags.models]
    assert Path(llama.install.model).stat().st_size > 200_000_000
