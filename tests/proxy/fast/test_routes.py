"""Every route of the app and how each one fails, as one table: for each (method, path), its
error cases, each sent in process and checked for its status and its whole body (`{"error": …}`,
with `reason` for a refused token and `detail` for invalid input). Every authenticated route
also gets the refused-token cases, and every admin route the wrong-role case, from its access
level. A meta-test lists the app's routes and fails if one has no entry here (or an entry names
a route the app no longer has), so a new route cannot ship without its failure modes.

The WebSocket route is checked here at the HTTP level (a plain GET is refused like any other
request); its handshake and protocol refusals (close code 1008, error frames) need a WebSocket
client on a real socket and are in tests/proxy/test_ws.py and tests/proxy/test_attack_set.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from starlette.routing import Mount, WebSocketRoute

from proxy.schemas import (
    CONTEXT_ID_PATTERN,
    KEY_ID_PATTERN,
    MODEL_NAME_PATTERN,
    TEAM_NAME_PATTERN,
    TEMPLATE_NAME_PATTERN,
)
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.tokens import admin_auth, auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

SCRAPE_TOKEN = "routes-scrape-" + "s" * 32
EXISTING_TEMPLATE = "routes-existing"
# HEAD is GET without a body: Starlette answers it for every GET route, through the same code.
IMPLIED_METHODS = {"HEAD"}

Headers = Callable[[], dict[str, str]]
Expected = dict[str, Any] | str


def no_headers() -> dict[str, str]:
    return {}


def bearer(token: Callable[[], str]) -> Headers:
    return lambda: {"Authorization": f"Bearer {token()}"}


@dataclass(frozen=True)
class Case:
    """One request that must fail, and the whole answer it must get."""

    name: str
    status: int
    expected: Expected  # the JSON body, or the text of a plain-text answer
    method: str | None = None  # another method than the route's (405s)
    path: str | None = None  # another concrete path than the route's example
    headers: Headers | None = None  # default: a good token for the route's access level
    json: Any = None
    content: bytes | None = None
    code: str | None = None  # OpenAI's `code` in the OpenAI dialect (a 401's is its reason)


@dataclass(frozen=True)
class Route:
    access: str  # "public", "user", "admin", "scrape" (/metrics), "static"
    example: str  # a concrete path for the route
    cases: list[Case] = field(default_factory=list)


# OpenAI's error `type` by status, as its API reference names them.
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "invalid_request_error"}


def in_dialect(path: str, case: Case) -> tuple[int, Expected]:
    """The status and body of `case` on `path`: the table writes every body in the proxy's own
    dialect; OpenAI's (`/v1`) and Ollama's (`/ollama`) write the same message their way, and
    answer invalid input with 400 rather than 422."""
    expected = case.expected
    if not path.startswith(("/v1/", "/ollama/")) or isinstance(expected, str):
        return case.status, expected
    status = 400 if case.status == 422 else case.status
    if path.startswith("/ollama/"):
        return status, {"error": expected["error"]}
    return status, {"error": {"message": expected["error"], "type": OPENAI_TYPES[status],
                              "param": None, "code": expected.get("reason", case.code)}}


def refused_token(reason: str, error: str) -> dict[str, str]:
    return {"error": error, "reason": reason}


# Refused before anything else is looked at, on every route that needs a token.
TOKEN_CASES = [
    Case("no token", 401, refused_token("missing_token", "missing bearer token"),
         headers=no_headers),
    Case("malformed token", 401,
         refused_token("malformed", "malformed token: the header is not base64url-encoded JSON"),
         headers=bearer(lambda: "not.a.jwt")),
    Case("expired token", 401, refused_token("expired", "token has expired"),
         headers=bearer(lambda: make_token(ttl=-300))),
    Case("token signed with another key", 401,
         refused_token("signature", "token signature is invalid"),
         headers=bearer(lambda: make_token(secret="another-key-" + "k" * 40))),
]
ROLE_CASES = [
    Case("a user's token", 403, {"error": "this route requires the admin role"}, headers=auth),
]
GOOD_HEADERS: dict[str, Headers] = {
    "public": no_headers, "user": auth, "admin": admin_auth, "static": no_headers,
    "scrape": lambda: {"Authorization": f"Bearer {SCRAPE_TOKEN}"},
}
NOT_ALLOWED = {"error": "Method Not Allowed"}
NOT_FOUND = {"error": "Not Found"}
MISSING_BODY = {"error": "missing request body"}


def malformed_json(error: str) -> dict[str, str]:
    return {"error": f"malformed JSON: {error}"}


def invalid(loc: tuple[str | int, ...], kind: str, message: str) -> dict[str, Any]:
    """The 422 body of a request that failed validation at `loc` (body fields are named bare,
    query and path parameters with their place)."""
    where = ".".join(str(part) for part in loc if part != "body")
    return {"error": f"invalid request: {where}: {message}",
            "detail": [{"loc": list(loc), "msg": message, "type": kind}]}


def pattern(regex: str) -> str:
    return f"String should match pattern '{regex}'"


def another_method(method: str) -> Case:
    return Case("another method", 405, NOT_ALLOWED, method=method)


def not_found(kind: str, name: str) -> dict[str, str]:
    return {"error": f"{kind} '{name}' not found"}


def limit_zero(path: str) -> Case:
    return Case("limit 0", 422, invalid(("query", "limit"), "greater_than_equal",
                                        "Input should be greater than or equal to 1"),
                path=f"{path}?limit=0")


def end_before_start(path: str) -> Case:
    return Case("an end before the start", 422, {"error": "`end` must be after `start`"},
                path=f"{path}?start=2020-01-02T00:00:00Z&end=2020-01-01T00:00:00Z")


# Cases shared by the routes that read a JSON body, and by the methods of one path.
UNREADABLE_BODIES = [
    Case("malformed JSON", 400, malformed_json("Expecting value"), content=b'{"model": '),
    Case("no body", 400, MISSING_BODY),
]
ONE_CONVERSATION = [
    Case("an id that is not one", 422, invalid(
        ("path", "conversation_id"), "string_pattern_mismatch", pattern(CONTEXT_ID_PATTERN)),
        path="/api/llm/conversations/bad%20id"),
    Case("a conversation the caller does not have", 404,
         not_found("conversation", "nothing-here")),
]
ONE_MODEL = [
    Case("a model upstream does not have", 404, not_found("model", "ghost")),
    Case("a name that is not a model name", 422, invalid(
        ("path", "model"), "string_pattern_mismatch", pattern(MODEL_NAME_PATTERN)),
        path="/api/admin/models/a%20b"),
]
ONE_TEMPLATE = [
    Case("a template that is not there", 404, not_found("template", "nope")),
    Case("a name that is not a template name", 422, invalid(
        ("path", "name"), "string_pattern_mismatch", pattern(TEMPLATE_NAME_PATTERN)),
        path="/api/admin/templates/Bad_Name"),
]
NO_KEY = "0123456789abcdef"


def one_key(path: str) -> list[Case]:
    """The cases of a route about one API key; `path` has `{id}` where the key's id goes."""
    return [
        Case("a key that is not there", 404, {"error": f"API key '{NO_KEY}' not found"},
             path=path.format(id=NO_KEY)),
        Case("an id that is not a key id", 422, invalid(
            ("path", "key_id"), "string_pattern_mismatch", pattern(KEY_ID_PATTERN)),
            path=path.format(id="Not-An-Id")),
    ]


ROTATION_CASES = [
    Case("malformed JSON", 400, malformed_json("Expecting value"), content=b'{"expires_at": '),
    Case("a new expiry in the past", 422, {"error": "expires_at must be in the future"},
         json={"expires_at": "2020-01-01T00:00:00Z"}),
]


def one_key_routes(access: str, prefix: str) -> dict[tuple[str, str], Route]:
    """The routes about one API key under `prefix`: rotate and revoke."""
    return {
        ("POST", f"{prefix}/{{key_id}}/rotate"): Route(
            access, f"{prefix}/{NO_KEY}/rotate",
            [*one_key(f"{prefix}/{{id}}/rotate"), *ROTATION_CASES]),
        ("DELETE", f"{prefix}/{{key_id}}"): Route(
            access, f"{prefix}/{NO_KEY}", one_key(f"{prefix}/{{id}}")),
    }


NEITHER_JTI_NOR_SUBJECT = ("Value error, give either `jti` (one token) or `subject` (a user's "
                           "tokens)")
NEW_KEY_CASES = [
    *UNREADABLE_BODIES,
    Case("no name", 422, invalid(("body", "name"), "missing", "Field required"), json={}),
    Case("an expiry in the past", 422, {"error": "expires_at must be in the future"},
         json={"name": "k", "expires_at": "2020-01-01T00:00:00Z"}),
]
EXISTING_TEAM = "routes-team"
SOFT_ABOVE_HARD = "Value error, soft_limit must not be above amount"


def one_team(path: str) -> list[Case]:
    return [
        Case("a team that is not there", 404, not_found("team", "no-team")),
        Case("a name that is not a team name", 422, invalid(
            ("path", "team"), "string_pattern_mismatch", pattern(TEAM_NAME_PATTERN)),
            path=path.format(team="Bad%20Team")),
    ]


def budget_path_cases(json: Any = None) -> list[Case]:
    """A budget's path with a scope or a period that is not one (`json`: a good body)."""
    return [
        Case("a scope that is not one", 422, invalid(
            ("path", "scope"), "literal_error", "Input should be 'user', 'key' or 'team'"),
            path="/api/admin/budgets/group/x/day", json=json),
        Case("a period that is not one", 422, invalid(
            ("path", "period"), "literal_error", "Input should be 'day', 'week' or 'month'"),
            path="/api/admin/budgets/user/x/year", json=json),
    ]
GENERATE_BODY = {"model": "ghost", "prompt": "x", "stream": False}
CHAT_MESSAGES = [{"role": "user", "content": "x"}]
BIG_BODY = b'{"model": "llama3.2", "prompt": "' + b"x" * 1_100_000 + b'"}'

ROUTES: dict[tuple[str, str], Route] = {
    # -- public: the status probe, the web page, the API's own documentation ------------------
    **{("GET", path): Route("public", path, [another_method("POST")])
       for path in ("/api/llm/status", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                    "/redoc", "/livez", "/readyz")},
    ("MOUNT", "/static"): Route("static", "/static/app.js", [
        Case("a file that is not there", 404, NOT_FOUND, path="/static/missing.js"),
        another_method("POST"),
    ]),
    ("MOUNT", "/docs-assets"): Route("static", "/docs-assets/swagger-ui.css", [
        Case("a file that is not there", 404, NOT_FOUND, path="/docs-assets/missing.js"),
        another_method("POST"),
    ]),
    # -- the scrape token (set on this module's app) ---------------------------------------------
    ("GET", "/metrics"): Route("scrape", "/metrics", [
        Case("no scrape token", 401, "a valid scrape token is required", headers=no_headers),
        Case("a wrong scrape token", 401, "a valid scrape token is required",
             headers=lambda: {"Authorization": f"Bearer {SCRAPE_TOKEN}x"}),
        Case("an admin's JWT instead of the scrape token", 401,
             "a valid scrape token is required", headers=bearer(lambda: make_token(
                 "root", "admin"))),
        another_method("POST"),
    ]),
    # -- users ----------------------------------------------------------------------------------
    ("POST", "/api/llm/generate"): Route("user", "/api/llm/generate", [
        *UNREADABLE_BODIES,
        Case("no model", 422, invalid(("body", "model"), "missing", "Field required"),
             json={"prompt": "x"}),
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json=GENERATE_BODY),
        Case("a body over the cap", 413, {"error": "request body larger than 1048576 bytes "
                                                   "(PROXY_MAX_BODY_BYTES)"}, content=BIG_BODY),
        another_method("GET"),
    ]),
    ("POST", "/api/llm/chat"): Route("user", "/api/llm/chat", [
        *UNREADABLE_BODIES,
        Case("no messages", 422, invalid(
            ("body", "messages"), "too_short",
            "List should have at least 1 item after validation, not 0"),
            json={"model": "llama3.2", "messages": []}),
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json={"model": "ghost", "messages": CHAT_MESSAGES, "stream": False}),
        another_method("GET"),
    ]),
    ("POST", "/api/llm/embed"): Route("user", "/api/llm/embed", [
        *UNREADABLE_BODIES,
        Case("no input", 422, invalid(("body", "input"), "missing", "Field required"),
             json={"model": "llama3.2"}),
        Case("too many inputs", 422, {"error": "too many inputs: 257; the limit is 256 "
                                               "(PROXY_MAX_EMBED_INPUTS)"},
             json={"model": "llama3.2", "input": ["x"] * 257}),
        Case("a control character", 422, {
            "error": "input[1] contains a control character (U+0007) at position 2; only tab, "
                     "newline and carriage return are allowed"},
            json={"model": "llama3.2", "input": ["ok", "no\a"]}),
        another_method("GET"),
    ]),
    ("GET", "/api/llm/models"): Route("user", "/api/llm/models", [
        another_method("POST"),
    ]),
    ("GET", "/api/llm/me"): Route("user", "/api/llm/me", [another_method("POST")]),
    ("GET", "/api/llm/budgets"): Route("user", "/api/llm/budgets", [another_method("POST")]),
    ("GET", "/api/llm/conversations"): Route("user", "/api/llm/conversations", [
        limit_zero("/api/llm/conversations"),
        another_method("POST"),
    ]),
    ("GET", "/api/llm/conversations/{conversation_id}"): Route(
        "user", "/api/llm/conversations/nothing-here", [
            *ONE_CONVERSATION,
            another_method("PUT"),
        ]),
    ("DELETE", "/api/llm/conversations/{conversation_id}"): Route(
        "user", "/api/llm/conversations/nothing-here", [
            *ONE_CONVERSATION,
        ]),
    ("GET", "/api/llm/keys"): Route("user", "/api/llm/keys", [another_method("PUT")]),
    ("POST", "/api/llm/keys"): Route("user", "/api/llm/keys", [
        *NEW_KEY_CASES,
        Case("an admin key asked for", 422, invalid(
            ("body", "role"), "extra_forbidden", "Extra inputs are not permitted"),
            json={"name": "k", "role": "admin"}),
    ]),
    **one_key_routes("user", "/api/llm/keys"),
    # -- admins ----------------------------------------------------------------------------------
    ("GET", "/api/admin/keys"): Route("admin", "/api/admin/keys", [another_method("PUT")]),
    ("POST", "/api/admin/keys"): Route("admin", "/api/admin/keys", [
        *NEW_KEY_CASES,
        Case("a role that is not one", 422, invalid(
            ("body", "role"), "literal_error", "Input should be 'user' or 'admin'"),
            json={"name": "k", "role": "root"}),
    ]),
    **one_key_routes("admin", "/api/admin/keys"),
    ("GET", "/api/admin/token-denials"): Route("admin", "/api/admin/token-denials", [
        another_method("PUT"),
    ]),
    ("POST", "/api/admin/token-denials"): Route("admin", "/api/admin/token-denials", [
        *UNREADABLE_BODIES,
        Case("neither a jti nor a subject", 422, {
            "error": f"invalid request: {NEITHER_JTI_NOR_SUBJECT}",
            "detail": [{"loc": ["body"], "msg": NEITHER_JTI_NOR_SUBJECT,
                        "type": "value_error"}]}, json={}),
    ]),
    ("GET", "/api/admin/teams"): Route("admin", "/api/admin/teams", [another_method("PUT")]),
    ("POST", "/api/admin/teams"): Route("admin", "/api/admin/teams", [
        *UNREADABLE_BODIES,
        Case("a name that is not a team name", 422, invalid(
            ("body", "name"), "string_pattern_mismatch", pattern(TEAM_NAME_PATTERN)),
            json={"name": "Not A Team"}),
        Case("a team that exists", 409, {"error": f"team '{EXISTING_TEAM}' already exists"},
             json={"name": EXISTING_TEAM}),
    ]),
    ("DELETE", "/api/admin/teams/{team}"): Route("admin", "/api/admin/teams/no-team", [
        *one_team("/api/admin/teams/{team}"),
    ]),
    ("POST", "/api/admin/teams/{team}/members"): Route(
        "admin", "/api/admin/teams/no-team/members", [
            *UNREADABLE_BODIES,
            Case("a team that is not there", 404, not_found("team", "no-team"),
                 json={"user": "kim"}),
            Case("no user", 422, invalid(("body", "user"), "missing", "Field required"),
                 json={}, path=f"/api/admin/teams/{EXISTING_TEAM}/members"),
        ]),
    ("DELETE", "/api/admin/teams/{team}/members/{user}"): Route(
        "admin", f"/api/admin/teams/{EXISTING_TEAM}/members/nobody", [
            Case("a user who is not a member", 404,
                 {"error": f"user 'nobody' is not in team '{EXISTING_TEAM}'"}),
            Case("a name that is not a team name", 422, invalid(
                ("path", "team"), "string_pattern_mismatch", pattern(TEAM_NAME_PATTERN)),
                path="/api/admin/teams/Bad%20Team/members/kim"),
        ]),
    ("GET", "/api/admin/budgets"): Route("admin", "/api/admin/budgets", [
        another_method("POST"),
    ]),
    ("PUT", "/api/admin/budgets/{scope}/{subject}/{period}"): Route(
        "admin", "/api/admin/budgets/team/no-team/month", [
            *UNREADABLE_BODIES,
            Case("a team that is not there", 404, not_found("team", "no-team"),
                 json={"amount": 10}),
            Case("a key that is not there", 404, {"error": f"API key '{NO_KEY}' not found"},
                 json={"amount": 10}, path=f"/api/admin/budgets/key/{NO_KEY}/day"),
            Case("no amount", 422, invalid(("body", "amount"), "missing", "Field required"),
                 json={}),
            Case("a soft limit above the amount", 422, {
                "error": f"invalid request: {SOFT_ABOVE_HARD}",
                "detail": [{"loc": ["body"], "msg": SOFT_ABOVE_HARD, "type": "value_error"}]},
                json={"amount": 10, "soft_limit": 11}),
            *budget_path_cases({"amount": 10}),
        ]),
    ("DELETE", "/api/admin/budgets/{scope}/{subject}/{period}"): Route(
        "admin", "/api/admin/budgets/user/nobody/week", [
            Case("a budget that is not there", 404,
                 {"error": "no week budget for user 'nobody'"}),
            *budget_path_cases(),
        ]),
    ("POST", "/api/admin/models/pull"): Route("admin", "/api/admin/models/pull", [
        *UNREADABLE_BODIES,
        Case("a name that is not a model name", 422, invalid(
            ("body", "model"), "string_pattern_mismatch", pattern(MODEL_NAME_PATTERN)),
            json={"model": "a b"}),
    ]),
    ("GET", "/api/admin/models/{model}"): Route("admin", "/api/admin/models/ghost", [
        *ONE_MODEL,
        another_method("PUT"),
    ]),
    ("DELETE", "/api/admin/models/{model}"): Route("admin", "/api/admin/models/ghost", [
        *ONE_MODEL,
    ]),
    ("GET", "/api/admin/usage"): Route("admin", "/api/admin/usage", [
        Case("grouped by something else", 422, invalid(
            ("query", "group_by", 0), "literal_error",
            "Input should be 'user', 'model', 'day' or 'endpoint'"),
            path="/api/admin/usage?group_by=prompt"),
        end_before_start("/api/admin/usage"),
        another_method("POST"),
    ]),
    ("GET", "/api/admin/costs"): Route("admin", "/api/admin/costs", [
        end_before_start("/api/admin/costs"),
        another_method("POST"),
    ]),
    ("GET", "/api/admin/audit"): Route("admin", "/api/admin/audit", [
        limit_zero("/api/admin/audit"),
        end_before_start("/api/admin/audit"),
        another_method("POST"),
    ]),
    ("GET", "/api/admin/templates"): Route("admin", "/api/admin/templates", [
        another_method("DELETE"),
    ]),
    ("POST", "/api/admin/templates"): Route("admin", "/api/admin/templates", [
        *UNREADABLE_BODIES,
        Case("a name that is not a template name", 422, invalid(
            ("body", "name"), "string_pattern_mismatch", pattern(TEMPLATE_NAME_PATTERN)),
            json={"name": "Bad Name", "template": "x"}),
        Case("a template that does not parse", 422, {
            "error": "template syntax error on line 1: Expected an expression, got 'end of "
                     "statement block'"}, json={"name": "routes-new", "template": "{% for %}"}),
        Case("a name already taken", 409, {
            "error": f"template '{EXISTING_TEMPLATE}' already exists; use PUT to change it"},
            json={"name": EXISTING_TEMPLATE, "template": "x"}),
    ]),
    ("GET", "/api/admin/templates/{name}"): Route("admin", "/api/admin/templates/nope", [
        *ONE_TEMPLATE,
        another_method("POST"),
    ]),
    ("PUT", "/api/admin/templates/{name}"): Route("admin", "/api/admin/templates/nope", [
        *UNREADABLE_BODIES,
        Case("a template that is not there", 404, not_found("template", "nope"),
             json={"name": "nope", "template": "x"}),
        Case("a body naming another template", 422,
             {"error": "the name in the body must match the name in the path"},
             path=f"/api/admin/templates/{EXISTING_TEMPLATE}",
             json={"name": "another", "template": "x"}),
    ]),
    ("DELETE", "/api/admin/templates/{name}"): Route("admin", "/api/admin/templates/nope", [
        *ONE_TEMPLATE,
    ]),
    # -- Ollama's dialect ---------------------------------------------------------------------
    ("POST", "/ollama/api/chat"): Route("user", "/ollama/api/chat", [
        *UNREADABLE_BODIES,
        Case("no model", 422, invalid(("body", "model"), "missing", "Field required"),
             json={"messages": CHAT_MESSAGES}),
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json={"model": "ghost", "messages": CHAT_MESSAGES, "stream": False}),
        Case("an option reserved for the operator", 422, invalid(
            ("body", "options"), "value_error", "Value error, num_gpu: reserved for the "
            "operator (how the engine uses the GPU is set on the server)"),
            json={"model": "llama3.2", "messages": CHAT_MESSAGES, "options": {"num_gpu": 1}}),
        Case("keep_alive forever", 422, {"error": "keep_alive must be between 0 and 1800 "
                                                  "seconds (PROXY_MAX_KEEP_ALIVE_SECONDS)"},
             json={"model": "llama3.2", "messages": CHAT_MESSAGES, "keep_alive": -1}),
        another_method("GET"),
    ]),
    ("POST", "/ollama/api/generate"): Route("user", "/ollama/api/generate", [
        *UNREADABLE_BODIES,
        Case("an empty prompt, which would only load the model", 422, invalid(
            ("body", "prompt"), "value_error", "Value error, prompt must not be blank (an "
            "empty prompt only loads the model, which is the operator's to do)"),
            json={"model": "llama3.2", "prompt": ""}),
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json=GENERATE_BODY),
        Case("a prompt template of the caller's", 422, invalid(
            ("body", "template"), "extra_forbidden", "Extra inputs are not permitted"),
            json={"model": "llama3.2", "prompt": "x", "template": "{{ .Prompt }}"}),
        another_method("GET"),
    ]),
    ("POST", "/ollama/api/embed"): Route("user", "/ollama/api/embed", [
        *UNREADABLE_BODIES,
        Case("no input", 422, {"error": "input must hold at least one text"},
             json={"model": "llama3.2", "input": []}),
        another_method("GET"),
    ]),
    ("POST", "/ollama/api/show"): Route("user", "/ollama/api/show", [
        *UNREADABLE_BODIES,
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json={"model": "ghost"}),
        another_method("GET"),
    ]),
    **{("GET", f"/ollama/api/{name}"): Route("user", f"/ollama/api/{name}", [
        another_method("POST")]) for name in ("tags", "ps", "version")},
    **{(method, f"/ollama/api{path}"): Route(
        "user", f"/ollama/api{path.replace('{digest}', 'sha256-0')}", [Case(
            "the operator's, even for an admin", 403, {"error": (
                f"/api{path.replace('{digest}', 'sha256-0')} is the operator's: models are "
                "managed through the admin API (/api/admin/models), not through the Ollama "
                "dialect")}, headers=admin_auth)])
       for path, method in (("/pull", "POST"), ("/push", "POST"), ("/create", "POST"),
                            ("/copy", "POST"), ("/delete", "DELETE"),
                            ("/blobs/{digest}", "POST"))},
    # -- OpenAI's dialect ----------------------------------------------------------------------
    ("POST", "/v1/chat/completions"): Route("user", "/v1/chat/completions", [
        *UNREADABLE_BODIES,
        Case("no messages", 422, invalid(
            ("body", "messages"), "missing", "Field required"), json={"model": "llama3.2"}),
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json={"model": "ghost", "messages": CHAT_MESSAGES}, code="model_not_found"),
        Case("several choices", 422, {"error": "n: only 1 choice per request is supported"},
             json={"model": "llama3.2", "messages": CHAT_MESSAGES, "n": 2}),
        Case("an image by URL, which the proxy never fetches", 422, {
            "error": "image_url: only base64 `data:image/…;base64,` URIs are accepted; the "
                     "proxy does not fetch URLs"},
            json={"model": "llama3.2", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]}]}),
        another_method("GET"),
    ]),
    ("POST", "/v1/completions"): Route("user", "/v1/completions", [
        *UNREADABLE_BODIES,
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             json={"model": "ghost", "prompt": "x"}, code="model_not_found"),
        Case("a prompt of token ids", 422, {"error": "prompt: only a single string is "
                                                     "supported"},
             json={"model": "llama3.2", "prompt": [1, 2, 3]}),
        another_method("GET"),
    ]),
    ("POST", "/v1/embeddings"): Route("user", "/v1/embeddings", [
        *UNREADABLE_BODIES,
        Case("an encoding OpenAI does not have", 422, invalid(
            ("body", "encoding_format"), "literal_error", "Input should be 'float' or 'base64'"),
            json={"model": "llama3.2", "input": "x", "encoding_format": "int8"}),
        another_method("GET"),
    ]),
    ("GET", "/v1/models"): Route("user", "/v1/models", [another_method("POST")]),
    ("GET", "/v1/models/{model:path}"): Route("user", "/v1/models/ghost", [
        Case("a model upstream does not have", 404, not_found("model", "ghost"),
             code="model_not_found"),
        another_method("POST"),
    ]),
    # -- the WebSocket, at the HTTP level --------------------------------------------------------
    ("WEBSOCKET", "/api/llm/ws"): Route("user", "/api/llm/ws", [
        Case("a plain GET with a good token: no HTTP route, the socket needs an upgrade", 404,
             NOT_FOUND, method="GET"),
    ]),
}


def all_cases() -> list[Any]:
    params = []
    for (method, template), route in ROUTES.items():
        extra = {"user": TOKEN_CASES, "admin": TOKEN_CASES + ROLE_CASES}.get(route.access, [])
        for case in [*extra, *route.cases]:
            params.append(pytest.param(method, route, case,
                                       id=f"{method} {template}: {case.name}"))
    return params


@pytest.fixture(scope="module")
async def routes_proxy(make_proxy: MakeProxy) -> InProcessProxy:
    proxy = await make_proxy(proxy_metrics_token=SCRAPE_TOKEN, proxy_user_keys=True)
    created = await proxy.client.post("/api/admin/templates", headers=admin_auth(),
                                      json={"name": EXISTING_TEMPLATE, "template": "{{ x }}"})
    assert created.status_code == 201, created.text
    team = await proxy.client.post("/api/admin/teams", headers=admin_auth(),
                                   json={"name": EXISTING_TEAM})
    assert team.status_code == 201, team.text
    return proxy


@pytest.mark.parametrize(("method", "route", "case"), all_cases())
async def test_each_failure_gets_its_status_and_its_whole_error_body(
        routes_proxy: InProcessProxy, method: str, route: Route, case: Case) -> None:
    # A WebSocket route and a mount are reached with a plain GET unless the case says otherwise.
    send_method = case.method or ("GET" if method in ("WEBSOCKET", "MOUNT") else method)
    headers = (case.headers or GOOD_HEADERS[route.access])()
    if case.json is not None:
        body: dict[str, Any] = {"json": case.json}
    elif case.content is not None:
        body = {"content": case.content,
                "headers": {**headers, "Content-Type": "application/json"}}
    else:
        body = {}
    response = await routes_proxy.client.request(send_method, case.path or route.example,
                                                 **{"headers": headers, **body})
    status, expected = in_dialect(case.path or route.example, case)
    assert response.status_code == status, response.text
    # Every answer, failures included, is named by the server for the audit log.
    assert response.headers["x-request-id"]
    if isinstance(expected, str):
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == expected
    else:
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected
    if case.status == 401 and isinstance(case.expected, dict):
        assert response.headers["www-authenticate"] == (
            f'Bearer error="invalid_token", reason="{case.expected["reason"]}"')


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) for each route the app serves; WEBSOCKET and MOUNT for the
    routes that are not plain HTTP."""
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if isinstance(original, Mount):
            found.add(("MOUNT", original.path))
        elif isinstance(original, APIWebSocketRoute | WebSocketRoute):
            found.add(("WEBSOCKET", original.path))
        else:
            found |= {(method, route.path) for method in route.methods or ()
                      if method not in IMPLIED_METHODS}
    return found


async def test_every_route_of_the_app_has_its_failures_in_the_table(
        routes_proxy: InProcessProxy) -> None:
    served = app_routes(routes_proxy.app)
    assert served, "no route found: the way routes are listed no longer works"
    assert sorted(served - set(ROUTES)) == [], "routes without an entry in ROUTES"
    assert sorted(set(ROUTES) - served) == [], "entries in ROUTES for routes the app lacks"
    assert all(route.cases for route in ROUTES.values())
    assert all(400 <= case.status < 500 for route in ROUTES.values() for case in route.cases)
