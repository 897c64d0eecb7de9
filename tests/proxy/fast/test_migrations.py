"""Schema migrations keep the data they find, in process, on SQLite and on the real Postgres.

A database is brought to an older revision with Alembic, filled the way the proxy of that
revision filled it, and then handed to a current app, which migrates it in its lifespan.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from proxy.core.db import alembic_config
from tests.support.database import count_rows_async, postgres_database
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'older.db'}"
    else:
        yield from postgres_database()


def execute(database_url: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            for sql, args in statements:
                conn.execute(sql.replace("$1", "?").replace("$2", "?").replace("$3", "?"), args)
        return

    async def run() -> None:
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            for sql, args in statements:
                await conn.execute(sql, *args)
        finally:
            await conn.close()

    asyncio.run(run())


async def chat(proxy: InProcessProxy, user: str, text: str, context_id: str):
    return await proxy.client.post("/api/llm/chat", headers=auth(user), json={
        "model": "llama3.2", "stream": False, "options": {"num_predict": 3},
        "context_id": context_id, "messages": [{"role": "user", "content": text}]})


async def test_conversations_stored_before_per_user_ids_keep_working(
        make_proxy: MakeProxy, sim, fresh_database: str) -> None:
    # Alembic's command line and the SQL below run their own event loops: off this one.
    await asyncio.to_thread(command.upgrade, alembic_config(fresh_database), "0002")
    message = ("INSERT INTO messages (conversation_id, role, content, created_at) "
               "VALUES ($1, $2, $3, CURRENT_TIMESTAMP)")
    await asyncio.to_thread(
        execute,
        fresh_database,
        ("INSERT INTO conversations (id, owner, model, title, created_at, updated_at) VALUES "
         "($1, $2, 'llama3.2', 'the old one', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
         ("legacy-chat", "alice")),
        (message, ("legacy-chat", "user", "My name is Ada.")),
        (message, ("legacy-chat", "assistant", "Hello Ada.")),
    )
    proxy = await make_proxy(database_url=fresh_database)

    client = proxy.client
    listed = (await client.get("/api/llm/conversations", headers=auth())).json()["conversations"]
    assert [(c["id"], c["title"], c["message_count"]) for c in listed] == [
        ("legacy-chat", "the old one", 2)]
    continued = await chat(proxy, "alice", "What is my name?", "legacy-chat")
    assert continued.status_code == 200, continued.text
    assert [m["content"] for m in sim_stats(sim)["last_body"]["/api/chat"]["messages"]] == [
        "My name is Ada.", "Hello Ada.", "What is my name?"]

    # The old global id is now alice's name for it: another user's same id is their own.
    theirs = await chat(proxy, "mallory", "hello", "legacy-chat")
    assert theirs.status_code == 200, theirs.text
    assert sim_stats(sim)["last_body"]["/api/chat"]["messages"] == [
        {"role": "user", "content": "hello"}]

    detail = (await client.get("/api/llm/conversations/legacy-chat", headers=auth())).json()
    assert [m["content"] for m in detail["messages"]][:3] == [
        "My name is Ada.", "Hello Ada.", "What is my name?"]
    assert len(detail["messages"]) == 4
    assert (await client.delete("/api/llm/conversations/legacy-chat",
                                headers=auth())).status_code == 204
    assert (await client.get("/api/llm/conversations/legacy-chat",
                             headers=auth("mallory"))).status_code == 200
    assert await count_rows_async(fresh_database, "SELECT count(*) FROM messages m JOIN "
                                  "conversations c ON c.id = m.conversation_id WHERE c.owner = $1",
                                  "alice") == 0
    assert await count_rows_async(fresh_database, "SELECT count(*) FROM conversations") == 1
