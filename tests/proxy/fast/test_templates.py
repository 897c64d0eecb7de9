"""Prompt templates, in process, on SQLite and on the real Postgres: admin CRUD, rendering for
generate, the Jinja sandbox, and the refusals around them.

"Nothing went upstream" is read from the simulator's own request counter.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.timing import scaled, wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")

TEMPLATES = "/api/admin/templates"


@pytest.fixture(scope="module")
async def proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url)


def name(prefix: str = "tpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create(proxy: InProcessProxy, template_name: str, source: str, description: str = ""
                 ) -> httpx.Response:
    return await proxy.client.post(TEMPLATES, headers=admin_auth(), json={
        "name": template_name, "template": source, "description": description})


async def created(proxy: InProcessProxy, source: str) -> str:
    template_name = name()
    response = await create(proxy, template_name, source)
    assert response.status_code == 201, response.text
    return template_name


async def generate(proxy: InProcessProxy, **body: Any) -> httpx.Response:
    return await proxy.client.post("/api/llm/generate", headers=auth(), json={
        "model": "llama3.2", "stream": False, "options": {"num_predict": 3}, **body})


def instant(text: str) -> datetime:
    """A timestamp from the API as an aware datetime (a naive one is read as UTC)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def same_template(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Equal, comparing timestamps as instants (their spelling has its own test)."""
    stamps = ("created_at", "updated_at")
    return ({k: v for k, v in got.items() if k not in stamps}
            == {k: v for k, v in want.items() if k not in stamps}
            and all(instant(got[k]) == instant(want[k]) for k in stamps))


def upstream_generates(sim) -> int:
    return int(sim_stats(sim)["requests"].get("/api/generate", 0))


# -- admin CRUD ---------------------------------------------------------------------------------


async def test_template_lifecycle(proxy: InProcessProxy) -> None:
    template_name = name("crud")
    first = await create(proxy, template_name, "Summarise {{ text }}.", "summaries")
    assert first.status_code == 201
    body = first.json()
    assert body["name"] == template_name
    assert body["template"] == "Summarise {{ text }}."
    assert body["description"] == "summaries"
    assert body["created_by"] == "root"
    assert body["created_at"] == body["updated_at"]

    duplicate = await create(proxy, template_name, "something else")
    assert duplicate.status_code == 409
    assert template_name in duplicate.json()["error"]

    client = proxy.client
    listed = await client.get(TEMPLATES, headers=admin_auth())
    assert listed.status_code == 200
    names = [t["name"] for t in listed.json()["templates"]]
    assert template_name in names
    assert names == sorted(names)
    one = await client.get(f"{TEMPLATES}/{template_name}", headers=admin_auth())
    assert one.status_code == 200
    assert same_template(one.json(), body)  # the duplicate changed nothing

    put = await client.put(f"{TEMPLATES}/{template_name}", headers=admin_auth(), json={
        "name": template_name, "template": "Shorten {{ text }}.", "description": "v2"})
    assert put.status_code == 200
    changed = put.json()
    assert (changed["template"], changed["description"]) == ("Shorten {{ text }}.", "v2")
    assert instant(changed["created_at"]) == instant(body["created_at"])
    assert instant(changed["updated_at"]) > instant(body["updated_at"])
    assert same_template(
        (await client.get(f"{TEMPLATES}/{template_name}", headers=admin_auth())).json(), changed)

    renamed = await client.put(f"{TEMPLATES}/{template_name}", headers=admin_auth(), json={
        "name": "another-name", "template": "x"})
    assert renamed.status_code == 422
    unknown = await client.put(f"{TEMPLATES}/{name('nope')}", headers=admin_auth(), json={
        "name": "whatever", "template": "x"})
    assert unknown.status_code == 422  # the body's name must match the path's first
    missing = name("nope")
    assert (await client.put(f"{TEMPLATES}/{missing}", headers=admin_auth(), json={
        "name": missing, "template": "x"})).status_code == 404

    deleted = await client.delete(f"{TEMPLATES}/{template_name}", headers=admin_auth())
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await client.get(f"{TEMPLATES}/{template_name}", headers=admin_auth())
    assert gone.status_code == 404
    assert gone.json() == {"error": f"template '{template_name}' not found"}
    gone_again = await client.delete(f"{TEMPLATES}/{template_name}", headers=admin_auth())
    assert gone_again.status_code == 404
    names = [t["name"] for t in
             (await client.get(TEMPLATES, headers=admin_auth())).json()["templates"]]
    assert template_name not in names


async def test_timestamps_are_utc_and_read_back_as_written(proxy: InProcessProxy) -> None:
    """Every answer spells a template's timestamps the same way, with their UTC offset."""
    template_name = name("stamps")
    written = (await create(proxy, template_name, "Stamp {{ x }}")).json()
    client = proxy.client
    read = (await client.get(f"{TEMPLATES}/{template_name}", headers=admin_auth())).json()
    listed = next(t for t in (await client.get(TEMPLATES, headers=admin_auth())).json()["templates"]
                  if t["name"] == template_name)
    for answer in (written, read, listed):
        for stamp in ("created_at", "updated_at"):
            parsed = datetime.fromisoformat(answer[stamp])
            assert parsed.utcoffset() is not None, f"{stamp} has no UTC offset: {answer[stamp]}"
    assert read == written
    assert listed == written


@pytest.mark.parametrize(("source", "line"), [
    ("Hello {{ name", 1),
    ("line one\nline two\n{% if x %}never closed", 3),
    ("a\n{{ x | }}", 2),
    ("{% for %}", 1),
])
async def test_invalid_jinja_is_refused_with_its_line(proxy: InProcessProxy, source: str,
                                                      line: int) -> None:
    template_name = name("syntax")
    response = await create(proxy, template_name, source)
    assert response.status_code == 422
    assert f"line {line}" in response.json()["error"]
    # Nothing was stored, and PUT checks the same way.
    client = proxy.client
    assert (await client.get(f"{TEMPLATES}/{template_name}", headers=admin_auth())
            ).status_code == 404
    good = await created(proxy, "fine {{ x }}")
    put = await client.put(f"{TEMPLATES}/{good}", headers=admin_auth(),
                           json={"name": good, "template": source})
    assert put.status_code == 422
    assert f"line {line}" in put.json()["error"]
    assert (await client.get(f"{TEMPLATES}/{good}", headers=admin_auth())).json()["template"] == (
        "fine {{ x }}")


@pytest.mark.parametrize("bad_name", ["Capital", "has space", "-leading-dash", "dots.in.it",
                                      "x" * 101, "", "slash/name", "ümlaut"])
async def test_bad_template_names_are_refused(proxy: InProcessProxy, bad_name: str) -> None:
    response = await create(proxy, bad_name, "hello")
    assert response.status_code == 422
    assert "name" in response.json()["error"]


async def test_bad_names_in_the_path_are_refused(proxy: InProcessProxy) -> None:
    client = proxy.client
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"{TEMPLATES}/Not_Valid", headers=admin_auth())
        assert response.status_code == 422, method


async def test_other_bad_bodies_are_refused(proxy: InProcessProxy) -> None:
    for body in ({"name": name()}, {"name": name(), "template": ""},
                 {"name": name(), "template": "x", "owner": "me"},
                 {"name": name(), "template": "x", "description": "d" * 501}):
        client = proxy.client
        response = await client.post(TEMPLATES, headers=admin_auth(), json=body)
        assert response.status_code == 422, body


async def test_users_cannot_manage_templates(proxy: InProcessProxy) -> None:
    existing = await created(proxy, "admin only {{ x }}")
    user = auth("alice")
    client = proxy.client
    requests = [
        ("GET", TEMPLATES, None),
        ("POST", TEMPLATES, {"name": name(), "template": "x"}),
        ("GET", f"{TEMPLATES}/{existing}", None),
        ("PUT", f"{TEMPLATES}/{existing}", {"name": existing, "template": "hijacked"}),
        ("DELETE", f"{TEMPLATES}/{existing}", None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, headers=user, json=body)
        assert response.status_code == 403, (method, path)
    assert (await client.request("GET", TEMPLATES)).status_code == 401
    kept = (await client.get(f"{TEMPLATES}/{existing}", headers=admin_auth())).json()
    assert kept["template"] == "admin only {{ x }}"


async def test_concurrent_creates_of_one_name_give_one_201_and_409s(
        proxy: InProcessProxy) -> None:
    racers = 10

    async def post(template_name: str) -> int:
        return (await proxy.client.post(TEMPLATES, headers=admin_auth(), json={
            "name": template_name, "template": "race {{ x }}"})).status_code

    statuses: list[list[int]] = []
    for _ in range(8):
        template_name = name("race")
        # All requests leave together, so they meet at the database's unique name.
        statuses.append(sorted(await asyncio.gather(*[post(template_name)
                                                      for _ in range(racers)])))
    wrong = [s for s in statuses if s != [201] + [409] * (racers - 1)]
    assert wrong == [], f"a lost race must be 409, not a server error: {wrong}"


# -- rendering for generate ---------------------------------------------------------------------


async def test_generate_renders_the_template(proxy: InProcessProxy, sim) -> None:
    template_name = await created(
        proxy, "Translate into {{ lang }}:\n{{ text }}{% if polite %} Please.{% endif %} "
               "({{ words * 2 }} words)")
    response = await generate(proxy, template=template_name,
                              variables={"lang": "French", "text": "good morning", "polite": True,
                                         "words": 4})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3
    sent = sim_stats(sim)["last_body"]["/api/generate"]
    assert sent["prompt"] == "Translate into French:\ngood morning Please. (8 words)"
    assert sent["model"] == "llama3.2"
    assert "template" not in sent and "variables" not in sent


async def test_a_streamed_generate_renders_too(proxy: InProcessProxy, sim) -> None:
    template_name = await created(proxy, "Say {{ what }}")
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=auth(), json={
        "model": "llama3.2", "template": template_name, "variables": {"what": "hi"},
        "options": {"num_predict": 2}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert sim_stats(sim)["last_body"]["/api/generate"]["prompt"] == "Say hi"


async def test_a_missing_variable_is_refused_and_nothing_is_sent(proxy: InProcessProxy,
                                                                  sim) -> None:
    template_name = await created(proxy, "Hello {{ name }}, meet {{ friend }}.")
    for variables, missing in (({"name": "Ada"}, "friend"), ({"friend": "Bob"}, "name"),
                               (None, "name"), ({}, "name")):
        body: dict[str, Any] = {"template": template_name}
        if variables is not None:
            body["variables"] = variables
        response = await generate(proxy, **body)
        assert response.status_code == 422, variables
        assert f"'{missing}' is undefined" in response.json()["error"]
    assert upstream_generates(sim) == 0


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{% set x = ''.__class__ %}{{ x }}",
    "{{ x.__class__ }}",
])
async def test_sandbox_refuses_attribute_tricks(proxy: InProcessProxy, sim, source: str) -> None:
    template_name = await created(proxy, source)
    response = await generate(proxy, template=template_name, variables={"x": "str"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "unsafe" in error
    assert "<class" not in error and "uid=" not in error
    assert upstream_generates(sim) == 0


async def test_rendered_text_is_checked_like_a_prompt(proxy: InProcessProxy, sim) -> None:
    template_name = await created(proxy, "Value: {{ v }}")
    control = await generate(proxy, template=template_name, variables={"v": "bell\x07"})
    assert control.status_code == 422
    assert "U+0007" in control.json()["error"]
    empty = await generate(proxy, template=await created(proxy, "{{ v }}"), variables={"v": "   "})
    assert empty.status_code == 422
    assert "empty" in empty.json()["error"]
    assert upstream_generates(sim) == 0


@pytest.mark.parametrize(("body", "status", "mentions"), [
    ({"prompt": "hi", "template": "some-template"}, 422, "exactly one"),
    ({"prompt": "hi", "variables": {"a": 1}}, 422, "needs a `template`"),
    ({"variables": {"a": 1}}, 422, "exactly one"),
    ({}, 422, "exactly one"),
    ({"template": "Bad Name"}, 422, "template"),
    ({"template": "x", "variables": {"a": {"nested": 1}}}, 422, "variables"),
    ({"template": "x", "variables": {"a": [1, 2]}}, 422, "variables"),
])
async def test_bad_template_requests_are_refused(proxy: InProcessProxy, sim, body: dict[str, Any],
                                                 status: int, mentions: str) -> None:
    response = await generate(proxy, **body)
    assert response.status_code == status, response.text
    assert mentions in response.json()["error"]
    assert upstream_generates(sim) == 0


async def test_unknown_template_is_404(proxy: InProcessProxy, sim) -> None:
    missing = name("missing")
    response = await generate(proxy, template=missing, variables={"a": 1})
    assert response.status_code == 404
    assert response.json() == {"error": f"template '{missing}' not found"}
    assert upstream_generates(sim) == 0


async def test_an_updated_template_is_used_at_once(proxy: InProcessProxy, sim) -> None:
    template_name = await created(proxy, "Version one for {{ who }}")
    assert (await generate(proxy, template=template_name, variables={"who": "Ada"})
            ).status_code == 200
    client = proxy.client
    (await client.put(f"{TEMPLATES}/{template_name}", headers=admin_auth(), json={
        "name": template_name, "template": "Version two for {{ who }}"})).raise_for_status()
    assert (await generate(proxy, template=template_name, variables={"who": "Ada"})
            ).status_code == 200
    assert sim_stats(sim)["last_body"]["/api/generate"]["prompt"] == "Version two for Ada"
    deleted = await client.delete(f"{TEMPLATES}/{template_name}", headers=admin_auth())
    assert deleted.status_code == 204
    assert (await generate(proxy, template=template_name, variables={"who": "Ada"})
            ).status_code == 404
    assert upstream_generates(sim) == 2


# -- rendering limits ---------------------------------------------------------------------------
#
# A template is a program whose loop bounds can come from the caller's variables. It renders in a
# worker process under PROXY_TEMPLATE_RENDER_SECONDS and PROXY_TEMPLATE_MAX_OUTPUT_CHARS, after
# the caller's rate limit; whatever goes wrong in it is the caller's 422, never a 500.


def store_directly(database_url: str, template_name: str, source: str) -> None:
    """A row as an older proxy could have stored it, before today's checks at creation."""
    import sqlite3

    import asyncpg

    sql = ("INSERT INTO prompt_templates (name, template, description, created_by, created_at, "
           "updated_at) VALUES ($1, $2, '', 'legacy', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            conn.execute(sql.replace("$1", "?").replace("$2", "?"), (template_name, source))
        return

    async def run() -> None:
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            await conn.execute(sql, template_name, source)
        finally:
            await conn.close()

    asyncio.run(run())


async def audited_with(database_url: str, request_id: str, status: int) -> None:
    async def once() -> bool:
        return await count_rows_async(
            database_url, "SELECT count(*) FROM audit_log WHERE id = $1 AND status = $2",
            request_id, status) == 1

    await wait_until_async(once)


RENDER_ERRORS = [
    pytest.param("{{ n / zero }}", {"n": 1, "zero": 0}, "division by zero", id="division"),
    pytest.param("{{ n // zero }}", {"n": 1, "zero": 0}, "division by zero", id="floor-division"),
    pytest.param("{% for i in range(n) %}.{% endfor %}", {"n": 10**9}, "range",
                 id="huge-range"),
    pytest.param("Hi {{ missing }}", {}, "'missing' is undefined", id="undefined"),
    pytest.param("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", {}, "recursion",
                 id="recursion"),
    pytest.param("{{ 'x' * n }}", {"n": 10**7}, "PROXY_TEMPLATE_MAX_OUTPUT_CHARS",
                 id="huge-repetition"),
    pytest.param("{% for i in range(n) %}0123456789{% endfor %}", {"n": 100000},
                 "PROXY_TEMPLATE_MAX_OUTPUT_CHARS", id="huge-output"),
    pytest.param("{{ n ** big }}", {"n": 10, "big": 10**8}, "too large", id="huge-power"),
]


@pytest.mark.parametrize(("source", "variables", "mentions"), RENDER_ERRORS)
async def test_every_kind_of_render_error_is_422(proxy: InProcessProxy, sim, database_url: str,
                                                 source: str, variables: dict[str, Any],
                                                 mentions: str) -> None:
    template_name = await created(proxy, source)
    client = proxy.client
    response = await client.post("/api/llm/generate", headers=auth(),
                                 json={"model": "llama3.2", "stream": False,
                                       "template": template_name, "variables": variables})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert template_name in error and mentions in error, error
    assert upstream_generates(sim) == 0
    await audited_with(database_url, response.headers["x-request-id"], 422)  # the server's id


STORED_ERRORS = [
    pytest.param("{% include 'secrets.txt' %}", "include", id="include"),
    pytest.param("{% import 'macros.j2' as m %}{{ m.x() }}", "import", id="import"),
    pytest.param("{% from 'macros.j2' import x %}{{ x() }}", "import", id="from-import"),
    pytest.param("{% extends 'base.j2' %}", "extend", id="extends"),
    pytest.param("Hello {{ name", "syntax error on line 1", id="syntax"),
]


@pytest.mark.parametrize(("source", "mentions"), STORED_ERRORS)
async def test_templates_that_cannot_render_are_422_when_stored_and_when_used(
        proxy: InProcessProxy, sim, database_url: str, source: str, mentions: str) -> None:
    refused = await create(proxy, name("stored"), source)
    assert refused.status_code == 422, refused.text
    assert mentions in refused.json()["error"]
    # One that an older proxy accepted is refused the same way when it is used.
    legacy = name("legacy")
    await asyncio.to_thread(store_directly, database_url, legacy, source)
    response = await generate(proxy, template=legacy, variables={"name": "Ada"})
    assert response.status_code == 422, response.text
    assert legacy in response.json()["error"] and mentions in response.json()["error"]
    assert upstream_generates(sim) == 0


async def test_a_hostile_template_is_refused_within_the_budget_while_others_are_served(
        make_proxy: MakeProxy, sim) -> None:
    budget = scaled(3)
    proxy = await make_proxy(proxy_template_render_seconds=budget, proxy_template_workers=2)
    # 10^8 empty iterations: half a minute of CPU if it ran to its end.
    hostile = await created(proxy, "{% for i in range(outer) %}{% for j in range(inner) %}"
                            "{% endfor %}{% endfor %}")
    friendly = await created(proxy, "Hello {{ who }}")
    refused_before = await proxy.metric("llm_proxy_requests_total",
                                        endpoint="/api/llm/generate", status="422")

    async def rendering() -> bool:
        return await proxy.metric("llm_proxy_requests_in_flight",
                                  endpoint="/api/llm/generate") >= 1

    slow = asyncio.create_task(generate(proxy, template=hostile,
                                        variables={"outer": 100000, "inner": 1000}))
    await wait_until_async(rendering)
    other = await proxy.client.post("/api/llm/generate", headers=auth("bob"), json={
        "model": "llama3.2", "stream": False, "options": {"num_predict": 3},
        "template": friendly, "variables": {"who": "Bob"}})
    # The ordering is the proof: bob's answer came back while alice's render still ran.
    assert other.status_code == 200, other.text
    assert not slow.done(), "bob was served only after the hostile render had ended"
    refused = await asyncio.wait_for(slow, scaled(60))
    assert refused.status_code == 422, refused.text
    assert "PROXY_TEMPLATE_RENDER_SECONDS" in refused.json()["error"]
    assert await proxy.metric("llm_proxy_requests_total", endpoint="/api/llm/generate",
                              status="422") == refused_before + 1
    # The worker that was stopped has been replaced: templates still render.
    again = await generate(proxy, template=friendly, variables={"who": "Ada"})
    assert again.status_code == 200, again.text
    assert sim_stats(sim)["last_body"]["/api/generate"]["prompt"] == "Hello Ada"
    assert upstream_generates(sim) == 2


async def test_a_limited_users_template_is_refused_by_the_limit_before_it_renders(
        make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(proxy_rate_limit="1/minute")
    # Rendering this one fails (422): a 429 instead proves it was never rendered.
    failing = await created(proxy, "Hello {{ missing }}")
    assert (await generate(proxy, prompt="the one request of this minute")).status_code == 200
    refused = await generate(proxy, template=failing, variables={"who": "Ada"})
    assert refused.status_code == 429, refused.text
    assert "rate limit exceeded" in refused.json()["error"]
    assert upstream_generates(sim) == 1
