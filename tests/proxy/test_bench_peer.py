"""`scripts/bench --peer litellm`, without installing LiteLLM: the version it refuses, the
environment it makes and reuses, the config it writes, the requests it sends, how the driver
reads an event stream, and the page's 8-client target of 3× LiteLLM."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.bench import peer
from tests.support.bench.driver import Target, new_session, send
from tests.support.bench.page import merge_simulated, render
from tests.support.bench.simulated import TOKENS, planned

BODY = {"model": "llama3.2", "prompt": "benchmark", "options": {"num_predict": TOKENS},
        "stream": True}


@pytest.mark.parametrize("version", ["1.82.7", "1.82.8", " 1.82.8 "])
def test_the_compromised_releases_are_refused_by_name(version: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    with pytest.raises(ValueError, match="never 1.82.7 or 1.82.8"):
        peer.install(version)
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_the_pin_is_exact() -> None:
    assert peer.LITELLM_VERSION not in peer.EXCLUDED_VERSIONS
    assert peer.requirement() == "litellm[proxy]==1.81.0"


def test_an_installed_environment_is_reused(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    venv = tmp_path / "llm-bench" / f"litellm-{peer.LITELLM_VERSION}"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").touch()
    (venv / "installed").write_text(peer.requirement() + "\n")

    def no_command(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(subprocess, "run", no_command)
    assert peer.install() == venv / "bin" / "litellm"


def test_a_failed_install_names_the_command(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ran: list[list[str]] = []

    def fail_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 1 if "pip" in command else 0)

    monkeypatch.setattr(subprocess, "run", fail_pip)
    with pytest.raises(RuntimeError, match=r"`.*-m pip install .*litellm\[proxy\]==1\.81\.0` "
                                           r"exited with 1"):
        peer.install()
    assert ran[0][1:3] == ["-m", "venv"]  # its own environment, never the project's
    # Not marked installed: the next run makes it again.
    assert not (tmp_path / "llm-bench" / f"litellm-{peer.LITELLM_VERSION}" / "installed").exists()


def test_the_config_maps_the_model_to_the_simulator_with_a_master_key() -> None:
    written = peer.config("http://127.0.0.1:4321", "sk-bench-key")

    # What LiteLLM reads: the bench writes it as JSON, which its YAML loader takes.
    assert yaml.safe_load(json.dumps(written)) == written
    assert written["model_list"] == [{
        "model_name": "llama3.2",
        "litellm_params": {"model": "ollama_chat/llama3.2", "api_base": "http://127.0.0.1:4321"}}]
    assert written["general_settings"] == {"master_key": "sk-bench-key"}  # no database_url


def test_the_peer_runs_without_a_database_or_keys_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://somewhere/db")
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-other")

    env = peer.environment()

    assert "DATABASE_URL" not in env and "LITELLM_MASTER_KEY" not in env
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_requests_are_openai_chat_completions_of_the_same_length() -> None:
    assert peer.openai_chat(BODY) == {
        "model": "llama3.2", "messages": [{"role": "user", "content": "benchmark"}],
        "max_tokens": TOKENS, "stream": True}
    assert peer.openai_chat({**BODY, "stream": False})["stream"] is False


def event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


@pytest.fixture
async def events() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A server of event streams: `/whole` ends with `data: [DONE]`, `/cut` does not; the
    bodies it received."""
    received: list[dict[str, Any]] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        received.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": a comment, not an event\n\n")
        for token in ("one", "two"):
            await response.write(event(f'{{"choices":[{{"delta":{{"content":"{token}"}}}}]}}'))
        if request.path == "/whole":
            await response.write(event("[DONE]"))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/whole", stream)
    app.router.add_post("/cut", stream)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")), received
    finally:
        await server.close()


async def test_an_event_stream_is_timed_from_its_first_data_line_and_read_to_its_end(
        events: tuple[str, list[dict[str, Any]]]) -> None:
    base, received = events
    target = Target("litellm", f"{base}/whole", shape=peer.openai_chat, sse=True)

    async with new_session() as session:
        whole = await send(session, target, BODY)
        cut = await send(session, Target("litellm", f"{base}/cut", shape=peer.openai_chat,
                                         sse=True), BODY)

    assert whole.ok and whole.first is not None
    assert whole.lines == 3 and whole.last.strip() == b"data: [DONE]"  # the comment is no line
    assert received[0] == peer.openai_chat(BODY)
    assert cut.status == 0 and "without data: [DONE]" in cut.detail


def figures(rate: float) -> dict[str, Any]:
    return {"clients8": {"req_per_s": rate, "errors": 0, "failures": {}}}


def simulated_run(targets: dict[str, Any], with_peer: bool = True) -> dict[str, Any]:
    extra = {"peer": peer.described("litellm")} if with_peer else {}
    return {"written": "2026-12-01 00:00 UTC", "host": "x86_64", "commit": "abc1234",
            "command": "scripts/bench --peer litellm", "note": "", "counts": {},
            "tokens": TOKENS, **extra, "targets": targets}


def test_the_8_client_target_is_3x_litellm_of_the_same_run() -> None:
    run = simulated_run({"direct": figures(900), "litellm": figures(100),
                         "sqlite": figures(320), "pg-redis": figures(280)})

    page = render({"simulated": {"current": run}})

    assert "| workload | direct | floor | litellm | sqlite | pg-redis | target |" in page
    assert "≥ 300 (3× LiteLLM's 100 of this run)" in page
    assert "ollama_chat/llama3.2" in page and "master key" in page
    assert "no per-user limits" in page and "not `memory`, `audit`" in page
    missed = page.split("### Targets missed", 1)[1]
    # 320 meets 3× 100, 280 does not; the peer itself is held to no target.
    assert "- pg-redis, 8 clients, non-stream: req/s: 280" in missed
    assert "sqlite" not in missed and "- litellm" not in missed
    assert "`scripts/bench --rows clients8 --configs pg-redis --peer litellm`" in missed


def test_without_litellm_the_8_client_target_is_the_tables() -> None:
    run = simulated_run({"direct": figures(900), "sqlite": figures(320)}, with_peer=False)

    page = render({"simulated": {"current": run}})

    assert "| workload | direct | floor | sqlite | target |" in page
    assert "| ≥ 350 (3× LiteLLM) |" in page
    assert "- sqlite, 8 clients, non-stream: req/s: 320" in page
    assert "measured only with `--peer litellm`: not in this run" in page


def test_the_peer_is_planned_on_the_rows_direct_has() -> None:
    plan = planned(["sqlite"], ("clients8", "bursts", "memory", "audit"), False, "litellm")

    assert set(plan["litellm"]) == set(plan["direct"]) == {"clients8", "bursts"}


def test_a_row_kept_for_litellm_asks_for_peer_when_measured_again_without_it() -> None:
    kept = simulated_run({"direct": figures(900), "litellm": figures(100),
                          "sqlite": figures(320)})
    again = simulated_run({"direct": figures(800), "sqlite": figures(300)}, with_peer=False)

    with pytest.raises(ValueError, match=r"kept for litellm too.*\(--peer\)"):
        merge_simulated(kept, again)
