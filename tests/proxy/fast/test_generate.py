"""POST /api/llm/generate and /api/llm/models, in process. (That a stream is relayed as it
arrives, not buffered, needs a real server: tests/proxy/test_generate.py.)"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")


def ndjson(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def test_streaming_generate_relays_chunks_then_a_final_object(
        proxy: InProcessProxy) -> None:
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=auth(),
                                 json={"model": "llama3.2", "prompt": "Why is the sky blue?",
                                       "options": {"num_predict": 12, "seed": 7}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(response)
    chunks, final = lines[:-1], lines[-1]
    assert len(chunks) == 12
    assert all(c["done"] is False and isinstance(c["response"], str) for c in chunks)
    assert final["done"] is True
    assert final["done_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 12
    assert final["usage"]["prompt_tokens"] > 0
    assert final["usage"]["total_tokens"] == 12 + final["usage"]["prompt_tokens"]
    timings = final["timings"]
    assert 0 < timings["first_token_ms"] <= timings["total_ms"]
    assert timings["tokens_per_second"] > 0
    assert final["request_id"] == response.headers["x-request-id"]


async def test_non_streaming_generate_returns_one_object(proxy: InProcessProxy) -> None:
    client = proxy.client
    streamed = ndjson(await client.post(
        "/api/llm/generate", headers=auth(),
        json={"model": "llama3.2", "prompt": "same", "options": {"num_predict": 8, "seed": 3}},
    ))
    response = await client.post(
        "/api/llm/generate", headers=auth(),
        json={"model": "llama3.2", "prompt": "same", "stream": False,
              "options": {"num_predict": 8, "seed": 3}},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["done"] is True
    assert body["response"] == "".join(str(c["response"]) for c in streamed[:-1])
    assert body["usage"]["completion_tokens"] == 8
    assert body["timings"]["first_token_ms"] is not None


async def test_request_sent_upstream_is_the_proxys_own(proxy: InProcessProxy, sim) -> None:
    headers = {**auth(), "Cookie": "session=secret-cookie", "X-Forwarded-For": "10.0.0.9"}
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=headers, json={
        "model": "llama3.2", "prompt": "hi", "system": "be brief", "stream": False,
        "options": {"temperature": 0.2, "top_p": 0.5, "seed": 1, "num_predict": 4}})
    assert response.status_code == 200
    stats = sim_stats(sim)
    sent = stats["last_body"]["/api/generate"]
    assert sent["model"] == "llama3.2"
    assert sent["prompt"] == "hi"
    assert sent["system"] == "be brief"
    assert sent["stream"] is False  # as the client asked: one answer, not a chunk per token
    assert sent["options"] == {"temperature": 0.2, "top_p": 0.5, "seed": 1, "num_predict": 4}
    upstream_headers = {k.lower() for k in stats["last_headers"]["/api/generate"]}
    assert "authorization" not in upstream_headers
    assert "cookie" not in upstream_headers


async def test_num_predict_defaults_to_the_cap(proxy: InProcessProxy, sim) -> None:
    client = proxy.client
    (await client.post("/api/llm/generate", headers=auth(),
                       json={"model": "llama3.2", "prompt": "x", "stream": False,
                             "options": {"num_predict": -1}})).raise_for_status()
    sent = sim_stats(sim)["last_body"]["/api/generate"]
    assert sent["options"]["num_predict"] == 4096


async def test_models_lists_what_upstream_has(proxy: InProcessProxy) -> None:
    client = proxy.client
    response = await client.get("/api/llm/models", headers=auth())
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert {"llama3.2:latest", "mistral:latest", "codellama:7b"} <= set(models)
    llama = models["llama3.2:latest"]
    assert llama["size"] == 2019393189
    assert llama["family"] == "llama"
    assert llama["parameter_size"] == "3.2B"
    assert llama["quantization_level"] == "Q4_K_M"


async def test_unknown_model_is_404_naming_it(proxy: InProcessProxy) -> None:
    client = proxy.client
    for stream in (True, False):
        response = await client.post("/api/llm/generate", headers=auth(),
                                     json={"model": "nosuch:1b", "prompt": "x", "stream": stream})
        assert response.status_code == 404
        assert response.json() == {"error": "model 'nosuch:1b' not found"}


BAD_BODIES = [
    ({"prompt": "x"}, 422, "model"),
    ({"model": "llama3.2"}, 422, "prompt"),
    ({"model": "llama3.2", "prompt": ""}, 422, "prompt"),
    ({"model": "llama3.2", "prompt": "   "}, 422, "blank"),
    ({"model": "bad model!", "prompt": "x"}, 422, "model"),
    ({"model": "llama3.2", "prompt": "x", "options": {"temperature": 5}}, 422, "temperature"),
    ({"model": "llama3.2", "prompt": "x", "options": {"top_p": -0.1}}, 422, "top_p"),
    ({"model": "llama3.2", "prompt": "x", "options": {"num_predict": 100000}}, 422,
     "num_predict"),
    ({"model": "llama3.2", "prompt": "x", "options": {"num_gpu": 99}}, 422, "num_gpu"),
    ({"model": "llama3.2", "prompt": "x", "unknown": 1}, 422, "unknown"),
    ({"model": "llama3.2", "prompt": "x", "stream": "yes please"}, 422, "stream"),
]


@pytest.mark.parametrize(("body", "status", "mentions"), BAD_BODIES)
async def test_bad_input_is_refused_clearly(proxy: InProcessProxy, sim, body: dict[str, object],
                                            status: int, mentions: str) -> None:
    before = sim_stats(sim)["requests"].get("/api/generate", 0)
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=auth(), json=body)
    assert response.status_code == status
    assert mentions in response.json()["error"]
    assert sim_stats(sim)["requests"].get("/api/generate", 0) == before


async def test_malformed_json_and_missing_body_are_400(proxy: InProcessProxy) -> None:
    client = proxy.client
    malformed = await client.post("/api/llm/generate", headers={**auth(),
                                  "Content-Type": "application/json"}, content=b'{"model": ')
    empty = await client.post("/api/llm/generate", headers={**auth(),
                              "Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["error"]
    assert empty.status_code == 400
    assert empty.json()["error"] == "missing request body"


async def test_oversized_body_is_413(proxy: InProcessProxy, sim) -> None:
    prompt = "a" * 1_100_000
    client = proxy.client
    declared = await client.post("/api/llm/generate", headers=auth(),
                                 json={"model": "llama3.2", "prompt": prompt})

    async def chunks():  # no Content-Length: the cap must hold for chunked bodies too
        body = json.dumps({"model": "llama3.2", "prompt": prompt}).encode()
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    chunked = await client.post("/api/llm/generate", headers=auth(), content=chunks())
    for response in (declared, chunked):
        assert response.status_code == 413
        assert "PROXY_MAX_BODY_BYTES" in response.json()["error"]


async def test_prompt_over_the_configured_limit_is_422(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy_max_prompt_chars=10)
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=auth(),
                                 json={"model": "llama3.2", "prompt": "x" * 11})
    assert response.status_code == 422
    assert "limit is 10" in response.json()["error"]


async def test_openapi_documents_every_route_with_models(proxy: InProcessProxy) -> None:
    client = proxy.client
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for name in ("GenerateRequest", "GenerateResponse", "ChatRequest", "ChatResponse",
                 "StreamChunk", "StreamDone", "StreamError", "ModelList", "StatusResponse",
                 "ConversationList", "ConversationDetail", "ErrorResponse", "GenerationOptions"):
        assert name in schemas, name
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            responses = operation["responses"]
            success = [code for code in responses if code.startswith("2")]
            assert success, f"{method} {path} documents no success response"
            for code in success:
                if code != "204":
                    assert responses[code].get("content"), f"{method} {path} {code} has no model"
            if method in ("post", "put"):
                assert "requestBody" in operation, f"{method} {path} documents no body"


async def test_body_is_json_whatever_curl_declares(proxy: InProcessProxy) -> None:
    # `curl -d '{…}'` sends application/x-www-form-urlencoded, as Ollama's own examples do.
    client = proxy.client
    response = await client.post(
        "/api/llm/generate",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
        content=b'{"model": "llama3.2", "prompt": "hi", "stream": false}',
    )
    assert response.status_code == 200
    assert response.json()["response"]


async def test_the_system_prompt_counts_against_the_prompt_cap(make_proxy: MakeProxy,
                                                               sim) -> None:
    cap = 300
    proxy = await make_proxy(proxy_max_prompt_chars=cap)
    client = proxy.client
    created = await client.post("/api/admin/templates", headers=admin_auth(), json={
        "name": "cap-template", "template": "{{ text }} and more"})
    assert created.status_code == 201, created.text
    bodies = [
        {"prompt": "p" * 200, "system": "s" * 101},
        {"template": "cap-template", "variables": {"text": "t" * 200}, "system": "s" * 100},
    ]
    for body in bodies:
        response = await client.post("/api/llm/generate", headers=auth(), json={
            "model": "llama3.2", "stream": False, **body})
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert "PROXY_MAX_PROMPT_CHARS" in error and f"limit is {cap}" in error, error
    assert sim_stats(sim)["requests"].get("/api/generate", 0) == 0
    fits = await client.post("/api/llm/generate", headers=auth(), json={
        "model": "llama3.2", "stream": False, "prompt": "p" * 200, "system": "s" * 100,
        "options": {"num_predict": 2}})
    assert fits.status_code == 200, fits.text


async def test_num_ctx_is_capped_by_the_models_own_context_length(proxy: InProcessProxy,
                                                                  sim) -> None:
    # The simulator's codellama:7b reports a context length of 16384 in /api/show.
    client = proxy.client
    for path, body in (("/api/llm/generate", {"prompt": "x"}),
                       ("/api/llm/chat", {"messages": [{"role": "user", "content": "x"}]})):
        refused = await client.post(path, headers=auth(), json={
            "model": "codellama:7b", "stream": False, "options": {"num_ctx": 16385}, **body})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert "num_ctx must be at most 16384" in error and "PROXY_MAX_NUM_CTX" in error
    assert sim_stats(sim)["requests"].get("/api/generate", 0) == 0
    assert sim_stats(sim)["requests"].get("/api/chat", 0) == 0
    allowed = await client.post("/api/llm/generate", headers=auth(), json={
        "model": "codellama:7b", "prompt": "x", "stream": False,
        "options": {"num_ctx": 16384, "num_predict": 2}})
    assert allowed.status_code == 200, allowed.text
    assert sim_stats(sim)["last_body"]["/api/generate"]["options"]["num_ctx"] == 16384
    unknown = await client.post("/api/llm/generate", headers=auth(), json={
        "model": "nosuch:1b", "prompt": "x", "stream": False, "options": {"num_ctx": 4096}})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nosuch:1b' not found"}


async def test_num_ctx_cap_can_be_set(make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(proxy_max_num_ctx=4096)
    client = proxy.client
    for num_ctx, status in ((8192, 422), (131072, 422), (4096, 200), (2048, 200)):
        response = await client.post("/api/llm/generate", headers=auth(), json={
            "model": "llama3.2", "prompt": "x", "stream": False,
            "options": {"num_ctx": num_ctx, "num_predict": 2}})
        assert response.status_code == status, (num_ctx, response.text)
        if status == 422:
            assert response.json()["error"] == (
                "options.num_ctx must be at most 4096 (PROXY_MAX_NUM_CTX)")
    assert sim_stats(sim)["requests"]["/api/generate"] == 2
