"""The Ollama simulator, driven over real HTTP as a separate process.

These tests hold the simulator to Ollama's documented API: if they pass, a proxy tested against
the simulator is tested against Ollama's documented behaviour, faults included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.simulator.conftest import module_simulator
from tests.support.simulator import completion_tokens, run_simulator
from tests.support.simulator.cli import build_parser, config_from_args
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import TIME_SCALE, scaled, wait_until

RATE = 200.0  # tokens/s of the shared simulator: quick, yet slow enough to measure
QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with module_simulator(
        first_token_delay=0.02,
        tokens_per_second=RATE,
        pull_duration=0.2,
    ) as s:
        yield s


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def wait_for(sim: SimulatorProcess, check: Any, timeout: float = 3.0) -> dict[str, Any]:
    """The simulator's stats once `check` holds, or the last ones when the (scaled) budget is
    spent: the caller's assertion on them then says what was missing."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        stats = sim.stats()
        if check(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


COUNTERS = {
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}

# -- plain routes ---------------------------------------------------------------------------


def test_root_answers_get_and_head(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert response.headers["content-type"].startswith("text/plain")
    head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""


def test_unknown_path_is_plain_text_404(client: httpx.Client) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.text == "404 page not found"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/tags"), ("GET", "/api/generate"), ("GET", "/api/delete"), ("PUT", "/")],
)
def test_wrong_method_is_405(client: httpx.Client, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 405


def test_version(client: httpx.Client) -> None:
    response = client.get("/api/version")
    assert response.status_code == 200
    assert response.json() == {"version": "0.33.0"}


def test_tags_lists_the_three_default_models(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert set(models) == {"llama3.2:latest", "mistral:latest", "codellama:7b"}
    llama = models["llama3.2:latest"]
    assert llama["model"] == "llama3.2:latest"
    assert llama["size"] == 2019393189
    assert llama["digest"] == "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"
    assert llama["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }
    assert models["mistral:latest"]["size"] == 4113301824
    assert models["mistral:latest"]["details"]["parameter_size"] == "7.2B"
    assert models["mistral:latest"]["details"]["quantization_level"] == "Q4_0"
    assert models["codellama:7b"]["size"] == 3825910662
    assert models["codellama:7b"]["details"]["parameter_size"] == "7B"
    for model in models.values():
        assert len(model["digest"]) == 64
        assert model["modified_at"].endswith("Z")


def test_show_known_model_and_errors(client: httpx.Client) -> None:
    shown = client.post("/api/show", json={"model": "llama3.2"}).json()
    assert shown["details"]["family"] == "llama"
    assert shown["capabilities"] == ["completion", "tools"]
    assert {"modelfile", "parameters", "template", "model_info"} <= set(shown)

    missing = client.post("/api/show", json={"model": "nope"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'nope' not found"}
    no_name = client.post("/api/show", json={})
    assert no_name.status_code == 400
    assert no_name.json() == {"error": "model is required"}


def test_missing_tag_means_latest(client: httpx.Client) -> None:
    for name in ("llama3.2", "llama3.2:latest"):
        reply = client.post("/api/generate", json={"model": name, "prompt": "hi", "stream": False})
        assert reply.status_code == 200
        assert reply.json()["model"] == name  # echoed as sent, like Ollama
    # Only codellama:7b is on the shelf; "codellama" means codellama:latest.
    reply = client.post("/api/generate", json={"model": "codellama", "prompt": "hi"})
    assert reply.status_code == 404
    assert reply.json() == {"error": "model 'codellama' not found"}


def test_ps_shows_models_after_use_and_unload(client: httpx.Client) -> None:
    assert client.get("/api/ps").json() == {"models": []}
    client.post("/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
    running = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in running] == ["llama3.2:latest"]
    assert running[0]["size_vram"] == running[0]["size"] == 2019393189
    assert running[0]["expires_at"].endswith("Z")

    unload = client.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0})
    assert unload.json()["done_reason"] == "unload"
    assert client.get("/api/ps").json() == {"models": []}


# -- generate ---------------------------------------------------------------------------------


def test_generate_streams_ndjson_with_counters_only_at_the_end(client: httpx.Client) -> None:
    prompt = "Why is the sky blue?"
    lines = ndjson(client.post("/api/generate", json={"model": "llama3.2", "prompt": prompt}))
    *chunks, final = lines
    expected = completion_tokens(prompt)
    assert [c["response"] for c in chunks] == expected
    for chunk in chunks:
        assert chunk["done"] is False
        assert chunk["model"] == "llama3.2"
        assert chunk["created_at"].endswith("Z")
        assert not COUNTERS & set(chunk)
    assert final["done"] is True
    assert final["response"] == ""
    assert final["done_reason"] == "stop"
    assert COUNTERS <= set(final)
    assert all(isinstance(final[k], int) for k in COUNTERS)
    assert final["eval_count"] == len(expected)
    assert final["prompt_eval_count"] == 5
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]
    assert final["context"] and all(isinstance(t, int) for t in final["context"])


def test_generate_rate_matches_configuration(client: httpx.Client) -> None:
    # The simulator paces tokens against a fixed schedule and reports eval_duration as measured
    # wall time (the simulator's generation.py), so a generation can never come out faster than
    # configured: the upper bound holds on any machine. Load can only make it slower (a stall of
    # the simulator's event loop lands in eval_duration), so the lower bound is taken on the best
    # of a few tries (a stall is transient, a pacing bug slows every try) and, on a machine slow
    # throughout, stretched by TEST_TIME_SCALE like every other time budget.
    slowest_accepted = RATE * 0.5 / TIME_SCALE
    rates: list[float] = []
    for _ in range(5):
        started = time.monotonic()
        final = client.post("/api/generate", json={"model": "llama3.2", "prompt": "count"}).text
        waited_ns = (time.monotonic() - started) * 1e9
        counters = json.loads(final.splitlines()[-1])
        # Measured, not made up: the whole generation fits in the time the client waited.
        assert counters["total_duration"] <= waited_ns, (counters, waited_ns)
        rate = counters["eval_count"] / counters["eval_duration"] * 1e9
        assert rate <= RATE * 1.01, counters
        rates.append(rate)
        if rate > slowest_accepted:
            break
    assert max(rates) > slowest_accepted, rates


def test_first_token_delay_holds_back_headers(sim: SimulatorProcess) -> None:
    sim.configure(first_token_delay=0.4)
    with httpx.Client(base_url=sim.url, timeout=scaled(10)) as c:
        started = time.monotonic()
        with c.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "x"}) as r:
            headers_after = time.monotonic() - started
            first = json.loads(next(r.iter_lines()))
    assert headers_after >= 0.35
    assert first["done"] is False


def test_num_predict_stops_with_length(client: httpx.Client) -> None:
    body = {"model": "llama3.2", "prompt": "long story", "options": {"num_predict": 5}}
    *chunks, final = ndjson(client.post("/api/generate", json=body))
    assert len(chunks) == 5
    assert [c["response"] for c in chunks] == completion_tokens("long story")[:5]
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 5


def test_seed_and_stop_options(client: httpx.Client) -> None:
    def text(options: dict[str, Any]) -> str:
        body = {"model": "llama3.2", "prompt": "p", "stream": False, "options": options}
        reply: str = client.post("/api/generate", json=body).json()["response"]
        return reply

    assert text({"seed": 1}) == text({"seed": 1}) == "".join(completion_tokens("p", 1))
    assert text({"seed": 1}) != text({"seed": 2})
    full = text({})
    stop_word = full.split()[3]
    stopped = text({"stop": [stop_word]})
    assert stop_word not in stopped
    assert full.startswith(stopped)


def test_generate_without_stream_returns_one_json_object(client: httpx.Client) -> None:
    reply = client.post("/api/generate", json={"model": "mistral", "prompt": "hi", "stream": False})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["response"] == "".join(completion_tokens("hi"))
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert COUNTERS <= set(body)
    assert "context" in body


def test_empty_prompt_only_loads_the_model(client: httpx.Client) -> None:
    reply = client.post("/api/generate", json={"model": "llama3.2"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["done"] is True
    assert body["done_reason"] == "load"
    assert body["response"] == ""


# -- chat ---------------------------------------------------------------------------------


def test_chat_streams_assistant_messages(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
    ]
    lines = ndjson(client.post("/api/chat", json={"model": "llama3.2", "messages": messages}))
    *chunks, final = lines
    assert "".join(c["message"]["content"] for c in chunks) == "".join(
        completion_tokens("second question")
    )
    for chunk in chunks:
        assert chunk["message"]["role"] == "assistant"
        assert "response" not in chunk
        assert not COUNTERS & set(chunk)
    assert final["done"] is True
    assert final["message"] == {"role": "assistant", "content": ""}
    assert "context" not in final
    assert final["prompt_eval_count"] == 8  # words across the whole history
    assert COUNTERS <= set(final)


def test_chat_without_stream_and_with_empty_messages(client: httpx.Client) -> None:
    body = {"model": "mistral", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    reply = client.post("/api/chat", json=body).json()
    assert reply["message"] == {"role": "assistant", "content": "".join(completion_tokens("hi"))}
    assert reply["done"] is True
    load = client.post("/api/chat", json={"model": "mistral", "messages": []}).json()
    assert load["done_reason"] == "load"
    assert load["message"] == {"role": "assistant", "content": ""}


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "error"),
    [
        ("POST", "/api/generate", b"", 400, "missing request body"),
        ("POST", "/api/chat", b"  ", 400, "missing request body"),
        ("POST", "/api/generate", b'{"model": "llama3.2"', 400, "unexpected EOF"),
        (
            "POST",
            "/api/generate",
            b"{oops}",
            400,
            "invalid character 'o' looking for beginning of object key string",
        ),
        (
            "POST",
            "/api/generate",
            b"nope",
            400,
            "invalid character 'n' looking for beginning of value",
        ),
        (
            "POST",
            "/api/generate",
            b"[1]",
            400,
            "json: cannot unmarshal array into Go value of type api.GenerateRequest",
        ),
        (
            "POST",
            "/api/generate",
            b'{"model": "llama3.2", "prompt": 5}',
            400,
            "json: cannot unmarshal number into Go struct field GenerateRequest.prompt"
            " of type string",
        ),
        (
            "POST",
            "/api/generate",
            b'{"model": "ghost", "prompt": "x"}',
            404,
            "model 'ghost' not found",
        ),
        ("POST", "/api/generate", b'{"prompt": "x"}', 404, "model '' not found"),
        (
            "POST",
            "/api/chat",
            b'{"model": "ghost:1b", "messages": []}',
            404,
            "model 'ghost:1b' not found",
        ),
        (
            "POST",
            "/api/chat",
            b'{"messages": [{"role": "user", "content": "x"}]}',
            400,
            "model is required",
        ),
        (
            "POST",
            "/api/chat",
            b'{"model": "codellama:7b", "messages": [], "tools": [{"type": "function"}]}',
            400,
            "registry.ollama.ai/library/codellama:7b does not support tools",
        ),
        (
            "POST",
            "/api/generate",
            b'{"model": "llama3.2", "prompt": "x", "keep_alive": "5x"}',
            400,
            'time: invalid duration "5x"',
        ),
        ("POST", "/api/show", b'{"model": "ghost"}', 404, "model 'ghost' not found"),
        ("DELETE", "/api/delete", b'{"model": "ghost"}', 404, "model 'ghost' not found"),
        ("POST", "/api/pull", b"", 400, "missing request body"),
    ],
)
def test_error_bodies(
    client: httpx.Client, method: str, path: str, content: bytes, status: int, error: str
) -> None:
    reply = client.request(method, path, content=content)
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"error": error}


# -- pull and delete ---------------------------------------------------------------------------


def test_pull_streams_progress_then_adds_the_model(client: httpx.Client) -> None:
    lines = ndjson(client.post("/api/pull", json={"model": "llama3.2:1b"}))
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = lines[1:-3]
    assert layers
    by_digest: dict[str, list[dict[str, Any]]] = {}
    for line in layers:
        short = line["status"].removeprefix("pulling ")
        assert len(short) == 12
        assert line["digest"] == f"sha256:{short}" + line["digest"][19:]
        by_digest.setdefault(line["digest"], []).append(line)
    for progress in by_digest.values():
        assert "completed" not in progress[0]  # omitted while 0
        completed = [p["completed"] for p in progress[1:]]
        assert completed == sorted(completed)
        assert completed[-1] == progress[0]["total"]
    names = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert "llama3.2:1b" in names


def test_pull_layers_add_up_to_the_model_size(client: httpx.Client) -> None:
    lines = ndjson(client.post("/api/pull", json={"model": "llama3.2"}))
    totals = {line["digest"]: line["total"] for line in lines if "digest" in line}
    assert sum(totals.values()) == 2019393189
    assert lines[1]["status"] == "pulling dde5aa3fc5ff"


def test_pull_unknown_model(client: httpx.Client) -> None:
    streamed = client.post("/api/pull", json={"model": "no-such-model"})
    assert streamed.status_code == 200
    assert ndjson(streamed) == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    single = client.post("/api/pull", json={"model": "no-such-model", "stream": False})
    assert single.status_code == 500
    assert single.json() == {"error": "pull model manifest: file does not exist"}


def test_pull_without_stream(client: httpx.Client) -> None:
    reply = client.post("/api/pull", json={"model": "gemma3:270m", "stream": False})
    assert reply.status_code == 200
    assert reply.json() == {"status": "success"}
    assert client.post("/api/show", json={"model": "gemma3:270m"}).status_code == 200


def test_delete(client: httpx.Client) -> None:
    reply = client.request("DELETE", "/api/delete", json={"model": "mistral"})
    assert reply.status_code == 200
    assert reply.content == b""
    names = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert "mistral:latest" not in names
    again = client.request("DELETE", "/api/delete", json={"model": "mistral"})
    assert again.status_code == 404
    assert again.json() == {"error": "model 'mistral' not found"}


# -- faults ---------------------------------------------------------------------------------

GENERATE = {"model": "llama3.2", "prompt": "hello", "options": {"num_predict": 4}}


def test_fault_error500_applies_count_times(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.set_fault("error500", count=2, message="boom")
    for _ in range(2):
        reply = client.post("/api/generate", json=GENERATE)
        assert reply.status_code == 500
        assert reply.json() == {"error": "boom"}
    assert client.post("/api/generate", json=GENERATE).status_code == 200
    assert (sim.stats()["errored"], sim.stats()["completed"]) == (2, 1)


def test_fault_without_count_lasts_until_reset(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.set_fault("busy503")
    for path, body in (
        ("/api/generate", GENERATE),
        ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
    ) * 2:
        reply = client.post(path, json=body)
        assert reply.status_code == 503
        assert reply.json() == {"error": QUEUE_FULL}
    assert sim.stats()["faults"]["mode"] == "busy503"
    sim.reset()
    assert client.post("/api/generate", json=GENERATE).status_code == 200


def test_fault_hang_sends_no_headers(sim: SimulatorProcess) -> None:
    sim.set_fault("hang", count=1)
    # The 0.5 s read timeout is the one under test: it must fire, so it is not scaled.
    with httpx.Client(base_url=sim.url, timeout=httpx.Timeout(scaled(10), read=0.5)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/api/generate", json=GENERATE)
        # The fault is spent: this one answers, however long a busy machine takes to.
        assert c.post("/api/generate", json=GENERATE, timeout=scaled(10)).status_code == 200
    # The client giving up on the hung request is what a proxy's timeout test looks for.
    assert wait_for(sim, lambda s: s["cancelled"] == 1)["cancelled"] == 1


def test_fault_disconnect_drops_the_connection(sim: SimulatorProcess) -> None:
    sim.set_fault("disconnect", count=1)
    with httpx.Client(base_url=sim.url, timeout=scaled(5)) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.post(
                "/api/chat",
                json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]},
            )
        assert c.post("/api/generate", json=GENERATE).status_code == 200


def test_fault_midstream_error(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.set_fault("midstream_error", count=2)
    streamed = client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert streamed.status_code == 200
    *chunks, last = ndjson(streamed)
    assert len(chunks) == 3
    assert all(c["done"] is False for c in chunks)
    assert last == {"error": "an error was encountered while running the model: unexpected EOF"}
    single = client.post(
        "/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
    )
    assert single.status_code == 500
    assert "error" in single.json()
    assert sim.stats()["errored"] == 2


def test_fault_refuse_closes_the_port_for_a_while(sim: SimulatorProcess) -> None:
    # The outage must outlast the two attempts below, which a busy machine may make late.
    outage = scaled(1.0)
    with httpx.Client(base_url=sim.url, timeout=scaled(5)) as pooled:
        assert pooled.get("/").status_code == 200  # leaves a keep-alive connection open
        sim.set_fault("refuse", seconds=outage)
        with pytest.raises(httpx.ConnectError):
            httpx.get(sim.url + "/", timeout=scaled(2))
        with pytest.raises(httpx.TransportError):
            pooled.get("/")

        def answers() -> bool:
            try:
                return pooled.get("/").status_code == 200
            except httpx.TransportError:
                return False

        # The port comes back by itself once the outage is over.
        wait_until(answers, timeout=1.0 + 5)


def test_unknown_fault_mode_is_rejected(client: httpx.Client) -> None:
    reply = client.post("/__sim__/faults", json={"mode": "explode"})
    assert reply.status_code == 400
    assert "unknown fault mode" in reply.json()["error"]


# -- concurrency, cancellation, stats -------------------------------------------------------


def test_client_disconnect_mid_stream_is_counted(sim: SimulatorProcess) -> None:
    # ~30 tokens at 20/s: the stream must still be running when the stats are read and the
    # client leaves, so on a slower machine it runs longer (only the 2 tokens read cost time).
    sim.configure(tokens_per_second=20 / TIME_SCALE)
    with httpx.Client(base_url=sim.url, timeout=scaled(5)) as c:
        body = {"model": "llama3.2", "prompt": "a long answer please"}
        with c.stream("POST", "/api/generate", json=body) as reply:
            lines = reply.iter_lines()
            next(lines)
            next(lines)
            assert sim.stats()["active_streams"] == 1
    stats = wait_for(sim, lambda s: s["cancelled"] == 1 and s["active_streams"] == 0)
    assert stats["cancelled"] == 1
    assert stats["active_streams"] == 0
    assert stats["completed"] == 0


async def test_queue_full_gives_503(sim: SimulatorProcess) -> None:
    # The running request's 8 tokens are the window in which the other two must line up behind
    # it; on a slower machine the window stretches with the scale factor.
    sim.configure(num_parallel=1, max_queue=1, tokens_per_second=20 / TIME_SCALE)
    body = {"model": "llama3.2", "prompt": "slow", "options": {"num_predict": 8}}

    async def one(c: httpx.AsyncClient) -> tuple[int, list[dict[str, Any]]]:
        reply = await c.post("/api/generate", json=body)
        return reply.status_code, [json.loads(line) for line in reply.text.splitlines()]

    async def until(c: httpx.AsyncClient, check: Any, timeout: float = 10.0) -> None:
        # wait_until for this event loop: polling must not block the requests it waits for.
        deadline = time.monotonic() + scaled(timeout)
        while True:
            stats = (await c.get("/__sim__/stats")).json()
            if check(stats):
                return
            assert time.monotonic() < deadline, f"not reached within {scaled(timeout):g} s: {stats}"
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(base_url=sim.url, timeout=scaled(10)) as c:
        # Arrive in order, each once the simulator holds the one before: running, queued,
        # rejected.
        running = asyncio.create_task(one(c))
        await until(c, lambda s: s["active_streams"] == 1)
        waiting = asyncio.create_task(one(c))
        await until(c, lambda s: s["queued"] == 1)
        s3, rejected = await one(c)
        (s1, first), (s2, queued) = await running, await waiting

    assert (s1, s2, s3) == (200, 200, 503)
    assert rejected == [{"error": QUEUE_FULL}]
    assert first[-1]["done"] is True and queued[-1]["done"] is True
    # The queued request waited for the running one, which took ~8 tokens at 20/s (or slower).
    assert queued[-1]["load_duration"] > 0.2e9
    stats = sim.stats()
    assert (stats["completed"], stats["rejected"], stats["active_streams"]) == (2, 1, 0)


def test_stats_record_requests_bodies_and_headers(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    messages = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    body = {"model": "llama3.2", "messages": messages, "stream": False}
    client.post("/api/chat", json=body, headers={"X-Trace": "abc"})
    client.get("/api/tags")
    stats = sim.stats()
    assert stats["requests"] == {"/api/chat": 1, "/api/tags": 1}
    assert stats["last_body"]["/api/chat"] == body
    assert stats["last_headers"]["/api/chat"]["x-trace"] == "abc"
    assert "authorization" not in stats["last_headers"]["/api/chat"]
    assert stats["completed"] == 1


def test_runtime_config(sim: SimulatorProcess, client: httpx.Client) -> None:
    config = sim.configure(models=["tinyllama", "llama3.2"], version="0.1.2")
    assert config["models"] == ["tinyllama:latest", "llama3.2:latest"]
    assert client.get("/api/version").json() == {"version": "0.1.2"}
    names = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert names == ["tinyllama:latest", "llama3.2:latest"]
    bad = client.post("/__sim__/config", json={"tokens_per_second": 0})
    assert bad.status_code == 400
    unknown = client.post("/__sim__/config", json={"speed": 1})
    assert unknown.status_code == 400
    assert "speed" in unknown.json()["error"]


# -- the process helper and the command line ---------------------------------------------------


def test_run_simulator_rejects_unknown_settings() -> None:
    with pytest.raises(TypeError, match="known settings"):
        with run_simulator(speed=3):
            pass


def test_run_simulator_reports_a_failed_start_with_its_output() -> None:
    with pytest.raises(RuntimeError, match="invalid choice"):
        with run_simulator(log_level="loud"):
            pass


def test_cli_reads_sim_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_TOKENS_PER_SECOND", "7.5")
    monkeypatch.setenv("SIM_MODELS", "a,b:1b")
    monkeypatch.setenv("SIM_GPU", "0")
    config = config_from_args(build_parser().parse_args([]))
    assert config.tokens_per_second == 7.5
    assert config.models == ["a:latest", "b:1b"]
    assert config.gpu is False
    flagged = config_from_args(build_parser().parse_args(["--tokens-per-second", "9"]))
    assert flagged.tokens_per_second == 9.0
