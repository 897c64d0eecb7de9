"""Several engines behind one proxy (PROXY_UPSTREAMS_FILE): real proxy processes in front of
several simulator processes. One killed under load loses no request before its first token, is
ejected, and comes back once it answers again; weights share the traffic; aliases and fallbacks
pick the model; an OpenAI-compatible engine (the simulator's own /v1 layer, as Ollama serves
it) answers through every dialect."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from tests.support.proxy_process import ProxyProcess, metric
from tests.support.simulator import completion_tokens, run_simulator
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled, wait_until
from tests.support.tokens import admin_auth, auth, make_token

MODEL = "llama3.2"


def simulators(count: int, **config: Any) -> tuple[ExitStack, list[SimulatorProcess]]:
    stack = ExitStack()
    settings = {"first_token_delay": 0.01, "tokens_per_second": 400, **config}
    sims = [stack.enter_context(run_simulator(
        startup_timeout=scaled(15), control_timeout=scaled(5), **settings))
        for _ in range(count)]
    return stack, sims


@pytest.fixture
def routed(tmp_path: Path, proxy_factory: Callable[..., ProxyProcess]
           ) -> Callable[..., ProxyProcess]:
    """A proxy whose upstreams file is `routing` (upstreams, aliases, fallbacks)."""

    def start(routing: dict[str, Any], **env: str) -> ProxyProcess:
        path = tmp_path / f"upstreams-{uuid.uuid4().hex[:6]}.yml"
        path.write_text(yaml.safe_dump(routing))
        return proxy_factory(PROXY_UPSTREAMS_FILE=str(path), PROXY_UPSTREAM_PROBE_SECONDS="0.2",
                             PROXY_UPSTREAM_EJECT_AFTER="2",
                             PROXY_UPSTREAM_COOLDOWN_SECONDS="1", **env)

    return start


def upstream_states(proxy: ProxyProcess) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{proxy.url}/api/llm/status", headers=admin_auth(),
                     timeout=scaled(10)).json()
    return {u["name"]: u for u in body["details"]["upstreams"]}


def stream_generate(proxy: ProxyProcess, prompt: str) -> tuple[int, list[dict[str, Any]]]:
    """A streamed generate: its status and every line it got."""
    with httpx.Client(base_url=proxy.url, timeout=scaled(30)) as client, client.stream(
            "POST", "/api/llm/generate", headers=auth(),
            json={"model": MODEL, "prompt": prompt}) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        return 200, [json.loads(line) for line in response.iter_lines() if line]


def test_a_killed_upstream_loses_no_request_before_its_first_token(routed) -> None:
    stack, sims = simulators(3, tokens_per_second=100)
    with stack:
        proxy = routed({"upstreams": [{"name": f"engine-{i}", "url": s.url}
                                      for i, s in enumerate(sims)]})
        wait_until(lambda: all(u["models"] for u in upstream_states(proxy).values()))
        victim = sims[1]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(stream_generate, proxy, f"prompt {n}") for n in range(60)]
            wait_until(lambda: victim.stats()["requests"].get("/api/generate", 0) >= 3)
            victim.process.kill()
            results = [f.result() for f in futures]
        refused = [lines for status, lines in results if status != 200]
        assert refused == [], "requests failed before their first token"
        for _, lines in results:
            # Either a whole answer, or one cut by the kill that says so in its last line.
            assert lines[-1]["done"] is True
            if "error" in lines[-1]:
                assert any(line.get("response") for line in lines[:-1])
        assert upstream_states(proxy)["engine-1"]["healthy"] is False
        # It failed requests (each retried elsewhere before its first token) and was ejected.
        assert metric(proxy, "llm_proxy_upstream_failures_total", upstream="engine-1") >= 1

        # Back on the same port: the probe lets it in again.
        with run_simulator(victim.port, startup_timeout=scaled(15)):
            wait_until(lambda: upstream_states(proxy)["engine-1"]["healthy"], timeout=20)


@pytest.mark.parametrize(("stream", "deadline"), [(True, 1), (False, 2)],
                         ids=["stream", "whole"])
def test_an_engine_with_no_answer_in_time_is_left_for_another(routed, stream: bool,
                                                              deadline: int) -> None:
    """A stream's deadline is its first token (OLLAMA_FIRST_TOKEN_TIMEOUT); a non-streamed
    request is sent upstream non-streamed, and nothing comes before the whole answer, so its
    deadline is the answer's (OLLAMA_ANSWER_TIMEOUT)."""
    stack, sims = simulators(2)
    with stack:
        # The hung engine is all but certain to be asked first.
        proxy = routed({"upstreams": [
            {"name": "hung", "url": sims[0].url, "models": [MODEL], "weight": 1000},
            {"name": "spare", "url": sims[1].url, "models": [MODEL], "weight": 0.001}]},
            OLLAMA_FIRST_TOKEN_TIMEOUT="1", OLLAMA_ANSWER_TIMEOUT="2")
        sims[0].set_fault("hang")
        started = time.monotonic()
        response = httpx.post(f"{proxy.url}/api/llm/generate", headers=auth(),
                              timeout=scaled(30),
                              json={"model": MODEL, "prompt": "x", "stream": stream})
        waited = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert deadline <= waited < deadline + scaled(5)
        assert sims[0].stats()["requests"]["/api/generate"] == 1
        assert sims[1].stats()["requests"]["/api/generate"] == 1


def test_weights_share_the_traffic(routed) -> None:
    stack, sims = simulators(2)
    with stack:
        proxy = routed({"upstreams": [{"name": "light", "url": sims[0].url, "weight": 1},
                                      {"name": "heavy", "url": sims[1].url, "weight": 3}]})
        wait_until(lambda: all(u["models"] for u in upstream_states(proxy).values()))
        with httpx.Client(base_url=proxy.url, headers=auth(), timeout=scaled(30)) as client:
            for n in range(80):
                assert client.post("/api/llm/generate", json={
                    "model": MODEL, "prompt": f"w{n}", "stream": False}).status_code == 200
        heavy = metric(proxy, "llm_proxy_upstream_requests_total", upstream="heavy")
        light = metric(proxy, "llm_proxy_upstream_requests_total", upstream="light")
        assert heavy + light == 80
        # 3:1 of 80 is 60 for the heavy one; 45..75 is four standard deviations either way.
        assert 45 <= heavy <= 75, (heavy, light)


def test_aliases_and_fallbacks_pick_the_model(routed) -> None:
    stack, sims = simulators(2)
    with stack:
        small, big = sims
        proxy = routed({
            "upstreams": [{"name": "small", "url": small.url, "models": [MODEL]},
                          {"name": "big", "url": big.url, "models": ["mistral"]}],
            "aliases": {"chat": MODEL, "writer": "mistral"},
            "fallbacks": {"mistral": [MODEL]},
        })
        with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=make_token(),
                           max_retries=0) as oa:
            listed = {m.id for m in oa.models.list()}
            assert {"chat:latest", "writer:latest", "llama3.2:latest", "mistral:latest"} <= listed
            reply = oa.chat.completions.create(model="chat", messages=[
                {"role": "user", "content": "alias"}])
            assert reply.choices[0].message.content == "".join(completion_tokens("alias"))
            assert small.stats()["last_body"]["/api/chat"]["model"] == MODEL
            oa.chat.completions.create(model="writer", messages=[
                {"role": "user", "content": "x"}])
            assert big.stats()["last_body"]["/api/chat"]["model"] == "mistral"

            big.process.kill()
            wait_until(lambda: not upstream_states(proxy)["big"]["healthy"])
            small.reset()
            fallback = oa.chat.completions.create(model="mistral", messages=[
                {"role": "user", "content": "fall back"}])
            assert fallback.choices[0].message.content
            assert small.stats()["last_body"]["/api/chat"]["model"] == MODEL


def test_a_model_no_healthy_upstream_serves_is_503_naming_it(routed) -> None:
    stack, sims = simulators(2)
    with stack:
        proxy = routed({"upstreams": [{"name": "a", "url": sims[0].url, "models": [MODEL]},
                                      {"name": "b", "url": sims[1].url, "models": ["mistral"]}]})
        sims[1].process.kill()
        wait_until(lambda: not upstream_states(proxy)["b"]["healthy"])
        response = httpx.post(f"{proxy.url}/api/llm/generate", headers=auth(), timeout=10,
                              json={"model": "mistral", "prompt": "x", "stream": False})
        assert response.status_code == 503
        assert response.json()["error"] == "no healthy upstream serves model 'mistral'"
        assert int(response.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def openai_engine() -> Iterator[SimulatorProcess]:
    with run_simulator(first_token_delay=0.01, tokens_per_second=400,
                       startup_timeout=scaled(15)) as sim:
        yield sim


def test_an_openai_compatible_engine_serves_every_dialect(routed, openai_engine) -> None:
    proxy = routed({"upstreams": [{"name": "compat", "kind": "openai",
                                   "url": f"{openai_engine.url}/v1"}]})
    wait_until(lambda: upstream_states(proxy)["compat"]["models"])
    expected = "".join(completion_tokens("every dialect"))
    asked = [{"role": "user", "content": "every dialect"}]
    with httpx.Client(base_url=proxy.url, headers=auth(), timeout=scaled(30)) as raw:
        own = raw.post("/api/llm/chat", json={"model": MODEL, "messages": asked,
                                              "stream": False}).json()
        assert own["message"]["content"] == expected
        assert own["usage"]["completion_tokens"] == len(completion_tokens("every dialect"))
        with raw.stream("POST", "/api/llm/chat",
                        json={"model": MODEL, "messages": asked}) as streamed:
            lines = [json.loads(line) for line in streamed.iter_lines() if line]
        assert "".join(line["message"]["content"] for line in lines[:-1]) == expected
    native = ollama.Client(host=f"{proxy.url}/ollama", headers=auth())
    assert native.chat(model=MODEL, messages=asked).message.content == expected
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=make_token(), max_retries=0) as oa:
        chunks = list(oa.chat.completions.create(model=MODEL, messages=asked, stream=True,
                                                 stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == len(completion_tokens("every dialect"))
        completion = oa.completions.create(model=MODEL, prompt="a prompt")
        assert completion.choices[0].text == "".join(completion_tokens("a prompt"))
        vectors = oa.embeddings.create(model=MODEL, input=["one", "two"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 3072
    # The engine was asked in its own dialect.
    assert set(openai_engine.stats()["requests"]) >= {"/v1/chat/completions", "/v1/completions",
                                                      "/v1/embeddings"}
