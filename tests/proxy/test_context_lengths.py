"""The cap on a caller's `num_ctx` where the simulator cannot take us: answers of `/api/show`
that name no context length, through httpx's MockTransport as Ollama. The capped requests
themselves are tested over real HTTP in test_generate.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from proxy.core.errors import ModelNotFound, RequestInvalid
from proxy.core.settings import Settings
from proxy.schemas import GenerationOptions
from proxy.services.calls import check_num_ctx
from proxy.services.context_lengths import (
    DEFAULT_NUM_CTX_CAP,
    ContextLengths,
    reported_context_length,
)
from proxy.services.state import AppState
from proxy.upstream.ollama import OllamaClient


@pytest.mark.parametrize(("show", "expected"), [
    ({"model_info": {"general.architecture": "llama", "llama.context_length": 131072}}, 131072),
    ({"model_info": {"gemma3.context_length": 32768}}, 32768),
    ({"model_info": {"general.architecture": "llama"}}, None),
    ({"model_info": {"llama.context_length": "131072"}}, None),
    ({"model_info": {"llama.context_length": 0}}, None),
    ({"model_info": None}, None),
    ({}, None),
    ([], None),
    (None, None),
])
def test_the_context_length_is_read_from_model_info(show: Any, expected: int | None) -> None:
    assert reported_context_length(show) == expected


class FakeOllama:
    """/api/show answering with `info` as model_info; a 404 for `ghost`."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        self.asked.append(model)
        if model == "ghost":
            return httpx.Response(404, json={"error": f"model '{model}' not found"})
        return httpx.Response(200, json={"model_info": self.info})


def state_for(ollama: FakeOllama, **settings: Any) -> AppState:
    upstream = OllamaClient(Settings(**settings), transport=httpx.MockTransport(ollama))
    return cast(AppState, SimpleNamespace(settings=Settings(**settings), upstream=upstream,
                                          context_lengths=ContextLengths()))


def options(num_ctx: int | None) -> GenerationOptions:
    return GenerationOptions(num_ctx=num_ctx)


async def test_a_model_that_reports_no_length_gets_the_documented_default() -> None:
    ollama = FakeOllama({"general.architecture": "mystery"})
    state = state_for(ollama)
    await check_num_ctx(state, "mystery", options(DEFAULT_NUM_CTX_CAP))
    with pytest.raises(RequestInvalid) as refused:
        await check_num_ctx(state, "mystery", options(DEFAULT_NUM_CTX_CAP + 1))
    assert refused.value.message == (
        f"options.num_ctx must be at most {DEFAULT_NUM_CTX_CAP} (mystery reports no context "
        "length; set PROXY_MAX_NUM_CTX for another cap)")
    assert ollama.asked == ["mystery"], "the model's answer is remembered"


async def test_the_setting_wins_and_nothing_is_looked_up() -> None:
    ollama = FakeOllama({"llama.context_length": 131072})
    state = state_for(ollama, proxy_max_num_ctx=2048)
    await check_num_ctx(state, "llama3.2", options(2048))
    with pytest.raises(RequestInvalid, match=r"at most 2048 \(PROXY_MAX_NUM_CTX\)"):
        await check_num_ctx(state, "llama3.2", options(4096))
    await check_num_ctx(state_for(ollama), "llama3.2", options(None))
    assert ollama.asked == []


async def test_an_unknown_model_is_404_not_a_default() -> None:
    state = state_for(FakeOllama({}))
    with pytest.raises(ModelNotFound):
        await check_num_ctx(state, "ghost", options(4096))
