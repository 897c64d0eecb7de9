"""llama.cpp's llama-server with Gemma 3 270M, driven with the official `openai` SDK: what an
"openai"-kind upstream of the proxy will rely on, checked on the real engine rather than on the
simulator. One server for the module (tests/support/real_model.py); the first run on a machine
compiles it (scripts/real-model), which is why the per-test timeout covers the test body only.

What is checked: the model list; chat in Gemma's turn format (llama.cpp's built-in `gemma`
template: the GGUF carries none) and text completions; a streamed answer in several chunks with
`usage` in a last chunk of its own; the same text twice from the same seed; `max_tokens` ending
an answer with finish_reason "length"; and that closing a stream mid-way stops the generation
(seen in `/slots`, `/metrics` and the log). The model is a base model, not an instruction-tuned
one: its chat answers are echoes, so facts are checked on text completions only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.support.real_model import LlamaServer, run_llama_server
from tests.support.timing import scaled, wait_until

pytestmark = [
    pytest.mark.realmodel,
    # The module's server may be compiled on first use: that is the fixture's time, bounded by
    # its own deadlines, not the test's.
    pytest.mark.timeout(120, func_only=True),
]



def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


QUESTION = user("What is the capital of France?")
# Sampling that gives the same answer every time on the same build and model.
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1234}
# llama-server's own request field: generate to the token budget even past an end-of-turn,
# so a test about the budget does not depend on where the model chooses to stop.
TO_THE_BUDGET = {"ignore_eos": True}


def delta_text(chunk: ChatCompletionChunk) -> str:
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    with run_llama_server() as server:
        yield server


@pytest.fixture
def client(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    # llama-server checks no key unless started with --api-key; the SDK insists on one.
    with openai.OpenAI(base_url=llama.openai_base, api_key="unused", max_retries=0,
                       timeout=scaled(60)) as oa:
        yield oa


def test_models_lists_the_one_gguf_it_serves(client: openai.OpenAI, llama: LlamaServer) -> None:
    models = client.models.list().data
    assert [(m.id, m.owned_by) for m in models] == [("gemma-3-270m-q4_k_m", "llamacpp")]
    assert llama.model == "gemma-3-270m-q4_k_m"


def test_chat_uses_gemmas_turn_format(llama: LlamaServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION]
    response = httpx.post(llama.url + "/apply-template", json={"messages": messages},
                          timeout=scaled(10))
    response.raise_for_status()
    assert response.json()["prompt"] == (
        "<start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_chat_completion_answers(client: openai.OpenAI, llama: LlamaServer) -> None:
    answer = client.chat.completions.create(model=llama.model, messages=QUESTION,
                                            max_tokens=32, **GREEDY)
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert answer.model == llama.model
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 32
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_text_completion_continues_the_text(client: openai.OpenAI, llama: LlamaServer) -> None:
    answer = client.completions.create(model=llama.model, prompt="Monday, Tuesday, Wednesday,",
                                       max_tokens=8, **GREEDY)
    assert answer.choices[0].text.startswith(" Thursday, Friday")
    assert answer.usage is not None and answer.usage.completion_tokens == 8


def test_a_streamed_answer_arrives_in_chunks_and_ends_with_usage(
        client: openai.OpenAI, llama: LlamaServer) -> None:
    stream = client.chat.completions.create(
        model=llama.model, messages=QUESTION, max_tokens=24, stream=True,
        stream_options={"include_usage": True}, extra_body=TO_THE_BUDGET, **GREEDY)
    chunks = list(stream)
    pieces = [text for c in chunks if (text := delta_text(c))]
    assert len(pieces) >= 5, pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["length"]
    # The usage chunk is the last one and carries no choice (OpenAI's include_usage contract).
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 24
    assert last.usage.prompt_tokens > 5
    assert all(c.usage is None for c in chunks[:-1])


def ask_twice(client: openai.OpenAI, model: str, **sampling: Any) -> tuple[str, str]:
    def ask() -> str:
        answer = client.chat.completions.create(
            model=model, messages=user("Tell me about the sea."), max_tokens=40, **sampling)
        return answer.choices[0].message.content or ""

    return ask(), ask()


def test_temperature_zero_and_a_seed_give_the_same_answer_twice(
        client: openai.OpenAI, llama: LlamaServer) -> None:
    first, second = ask_twice(client, llama.model, **GREEDY)
    assert first.strip()
    assert first == second


def test_sampling_with_the_same_seed_gives_the_same_answer_twice(
        client: openai.OpenAI, llama: LlamaServer) -> None:
    first, second = ask_twice(client, llama.model, temperature=1.0, seed=7)
    assert first.strip()
    assert first == second


def test_max_tokens_ends_the_answer_with_length(client: openai.OpenAI,
                                                llama: LlamaServer) -> None:
    answer = client.chat.completions.create(
        model=llama.model, messages=user("Write a long story."),
        max_tokens=5, extra_body=TO_THE_BUDGET, **GREEDY)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


def test_closing_a_stream_stops_the_generation(client: openai.OpenAI,
                                               llama: LlamaServer) -> None:
    budget = 1500  # tokens: half a minute or more of generation on two cores
    predicted_before = llama.metrics()["llamacpp:tokens_predicted_total"]
    stream = client.chat.completions.create(
        model=llama.model, messages=user("Count to ten thousand."),
        max_tokens=budget, stream=True, extra_body=TO_THE_BUDGET, **GREEDY)
    received = 0
    for chunk in stream:
        received += bool(delta_text(chunk))
        if received == 3:
            break
    busy = [s for s in llama.slots() if s["is_processing"]]
    assert len(busy) == 1, busy
    slot_id, task = busy[0]["id"], busy[0]["id_task"]
    assert busy[0]["next_token"][0]["n_remain"] > 0

    stream.close()

    # Within seconds, not the time the rest of the budget would take.
    wait_until(lambda: not next(s for s in llama.slots() if s["id"] == slot_id)["is_processing"],
               timeout=15)
    # A freed slot adds the tokens it generated to the total: only those sent before the close.
    predicted = llama.metrics()["llamacpp:tokens_predicted_total"] - predicted_before
    assert 3 <= predicted < budget // 2
    assert f"cancel task, id_task = {task}" in llama.logs()
