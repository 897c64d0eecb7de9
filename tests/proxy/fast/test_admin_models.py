"""Admin model management, in process: pull with relayed progress, show, delete."""

from __future__ import annotations

import json

from tests.support.proxy_app import InProcessProxy
from tests.support.tokens import admin_auth


async def test_pull_relays_progress_then_the_model_is_listed(proxy: InProcessProxy, sim) -> None:
    client = proxy.client
    response = await client.post("/api/admin/models/pull", headers=admin_auth(),
                                 json={"model": "gemma3:270m"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    progress = [line for line in lines if "completed" in line]
    assert progress, "no download progress was relayed"
    assert progress[-1]["completed"] == progress[-1]["total"]
    listed = (await client.get("/api/llm/models", headers=admin_auth())).json()["models"]
    names = [m["name"] for m in listed]
    assert "gemma3:270m" in names


async def test_pull_of_an_unknown_model_ends_with_an_error_line(proxy: InProcessProxy,
                                                                 sim) -> None:
    response = await proxy.client.post("/api/admin/models/pull", headers=admin_auth(),
                                       json={"model": "does-not-exist:9b"})
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert "file does not exist" in lines[-1]["error"]
    assert lines[-1]["done"] is True


async def test_show_and_delete(proxy: InProcessProxy, sim) -> None:
    client = proxy.client
    shown = await client.get("/api/admin/models/mistral", headers=admin_auth())
    assert shown.status_code == 200
    assert shown.json()["details"]["family"] == "llama"
    assert (await client.delete("/api/admin/models/mistral", headers=admin_auth())
            ).status_code == 204
    missing = await client.get("/api/admin/models/mistral", headers=admin_auth())
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'mistral' not found"}
    again = await client.delete("/api/admin/models/mistral", headers=admin_auth())
    assert again.status_code == 404
    pulled = await client.post("/api/admin/models/pull", headers=admin_auth(),
                               json={"model": "mistral"})
    assert json.loads(pulled.text.splitlines()[-1]) == {"status": "success"}


async def test_bad_model_names_are_refused(proxy: InProcessProxy) -> None:
    response = await proxy.client.post("/api/admin/models/pull", headers=admin_auth(),
                                       json={"model": "a b"})
    assert response.status_code == 422
