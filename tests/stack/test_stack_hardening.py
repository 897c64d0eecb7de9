"""The running stack's containers are confined as docker-compose.yml says, proved from outside.

What Docker was told (`docker inspect`), what the kernel enforces (each container's PID 1 in
/proc: its capability sets and no_new_privs), and what the services themselves answer: the
proxy's database role is not a superuser, Redis refuses a client without the password, cAdvisor
has no Docker socket and the API proxy in front of the socket serves it reads only.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.hosts.target import StackHost
from tests.support.timing import TIME_SCALE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

NO_NEW_PRIVILEGES = "no-new-privileges:true"
# docker-compose.yml's one writable root filesystem (Compose copies its secret in).
WRITABLE_ROOT = {"prometheus"}
SOCKET_HOLDERS = {"/", "/var/run", "/run", "/var/run/docker.sock", "/run/docker.sock"}


def scaled_program(program: str) -> str:
    """A program run inside a container, told the suite's TEST_TIME_SCALE for its timeouts."""
    return f"TIME_SCALE = {TIME_SCALE!r}\n{program}"


# argv: HOST PORT [PASSWORD]. Speaks RESP by hand (no client library in the container): AUTH
# first when a password is given, then PING. Prints {"auth": reply or null, "ping": reply}.
REDIS_PING = scaled_program(r"""
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
password = sys.argv[3] if len(sys.argv) > 3 else None
def command(sock, *parts):
    payload = f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)
    sock.sendall(payload.encode())
    return sock.recv(4096).decode(errors="replace").strip()
with socket.create_connection((host, port), timeout=10 * TIME_SCALE) as sock:
    auth = command(sock, "AUTH", password) if password else None
    print(json.dumps({"auth": auth, "ping": command(sock, "PING")}))
""")

# argv: METHOD URL. Prints {"status", "body"} (body cut at 2000 characters).
HTTP_REQUEST = scaled_program(r"""
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[2], method=sys.argv[1],
                                 data=b"{}" if sys.argv[1] in ("POST", "PUT") else None)
try:
    with urllib.request.urlopen(request, timeout=20 * TIME_SCALE) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
print(json.dumps({"status": status, "body": body.decode(errors="replace")[:2000]}))
""")

# argv: HOST PORT. Prints {"result": "open" | "no-name" | "refused" | "error", "detail"}: whether
# this container can resolve and connect to HOST at all.
TCP_OR_DNS = scaled_program(r"""
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
except OSError as exc:
    print(json.dumps({"result": "no-name", "detail": str(exc)}))
    raise SystemExit(0)
try:
    socket.create_connection(address[:2], timeout=3 * TIME_SCALE).close()
    result, detail = "open", ""
except ConnectionRefusedError as exc:
    result, detail = "refused", str(exc)
except OSError as exc:
    result, detail = "error", str(exc)
print(json.dumps({"result": result, "detail": detail}))
""")

# The proxy's own view of its database: who it is connected as, and what that role may do.
# Runs with the proxy image's interpreter and its DATABASE_URL.
PROXY_DB_ROLE = r"""
import asyncio, json, os
import asyncpg
async def main():
    url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(url)
    try:
        role = await conn.fetchrow(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user")
        owners = await conn.fetch(
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'")
        print(json.dumps({**dict(role), "table_owners": sorted(r["owner"] for r in owners)}))
    finally:
        await conn.close()
asyncio.run(main())
"""


def pid1_status(stack: StackHost, service: str) -> dict[str, str]:
    pid = stack.inspect(service)["State"]["Pid"]
    text = stack.check_output("cat /proc/%s/status", pid)
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_every_container_drops_all_capabilities_and_cannot_gain_privileges(
    stack: StackHost,
) -> None:
    services = stack.services()
    assert {"proxy", "postgres", "redis", "cadvisor", "docker-api"} <= set(services)
    problems = {}
    for service in sorted(services):
        host_config = stack.inspect(service)["HostConfig"]
        status = pid1_status(stack, service)
        found = {
            "CapDrop": host_config.get("CapDrop"),
            "CapAdd": host_config.get("CapAdd"),
            # Docker adds `label=disable` for a container in the host's PID namespace.
            "no-new-privileges": NO_NEW_PRIVILEGES in (host_config.get("SecurityOpt") or []),
            "ReadonlyRootfs": host_config.get("ReadonlyRootfs"),
            # What the kernel enforces on the service's main process.
            "CapEff": status["CapEff"].strip(),
            "CapBnd": status["CapBnd"].strip(),
            "NoNewPrivs": status["NoNewPrivs"].strip(),
        }
        expected = {
            "CapDrop": ["ALL"],
            "CapAdd": None,
            "no-new-privileges": True,
            "ReadonlyRootfs": service not in WRITABLE_ROOT,
            "CapEff": "0000000000000000",
            "CapBnd": "0000000000000000",
            "NoNewPrivs": "1",
        }
        if found != expected:
            problems[service] = {k: v for k, v in found.items() if v != expected[k]}
    assert not problems, f"containers not confined as declared: {problems}"


def test_the_proxy_uses_a_database_role_that_is_not_a_superuser(stack: StackHost) -> None:
    output = stack.check_output(
        "docker exec %s /opt/venv/bin/python -c %s", stack.container("proxy"), PROXY_DB_ROLE
    )
    role = json.loads(output)

    superuser = stack.environment("postgres")["POSTGRES_USER"]
    assert role["rolname"] != superuser
    assert (role["rolsuper"], role["rolcreaterole"], role["rolcreatedb"]) == (False, False, False)
    # The proxy's migrations ran as that role at start-up, so it owns every table.
    assert role["table_owners"] == [role["rolname"]]


def test_redis_refuses_a_client_without_the_password(stack: StackHost) -> None:
    password = urlsplit(stack.environment("proxy")["REDIS_URL"]).password
    assert password, "the proxy's REDIS_URL carries no password"

    anonymous = stack.exec_python("proxy", REDIS_PING, "redis", 6379)
    wrong = stack.exec_python("proxy", REDIS_PING, "redis", 6379, "not-the-password")
    right = stack.exec_python("proxy", REDIS_PING, "redis", 6379, password)

    assert anonymous["ping"].startswith("-NOAUTH"), anonymous
    assert wrong["auth"].startswith("-WRONGPASS"), wrong
    assert (right["auth"], right["ping"]) == ("+OK", "+PONG")


def test_no_other_service_can_reach_redis(stack: StackHost) -> None:
    for service in ("prometheus", "cadvisor", "ollama"):
        result = stack.exec_python(service, TCP_OR_DNS, "redis", 6379)
        assert result["result"] != "open", f"{service} reaches Redis: {result}"


def test_cadvisor_has_no_docker_socket(stack: StackHost) -> None:
    mounts = stack.inspect("cadvisor")["Mounts"]
    sources = {m["Source"] for m in mounts}

    assert not sources & SOCKET_HOLDERS, f"cAdvisor mounts {sources & SOCKET_HOLDERS}"
    assert not [s for s in sources if s.endswith(".sock")], sources
    assert all(not m["RW"] for m in mounts if m["Type"] == "bind"), mounts
    inside = stack.exec_python(
        "cadvisor",
        "import json, os; print(json.dumps({p: os.path.exists(p) for p in "
        "('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock')}))",
    )
    assert not any(inside.values()), inside


def test_the_docker_api_proxy_serves_cadvisor_reads_and_nothing_else(stack: StackHost) -> None:
    api = "http://docker-api:2375"
    proxy_id = stack.container("proxy")

    def call(method: str, path: str) -> dict[str, object]:
        return stack.exec_python("cadvisor", HTTP_REQUEST, method, f"{api}{path}")

    # What cAdvisor's Docker client asks: version negotiation, daemon info, container inspect.
    for path in ("/_ping", "/version", "/v1.41/info", f"/v1.41/containers/{proxy_id}/json"):
        assert call("GET", path)["status"] == 200, path
    inspected = str(call("GET", f"/v1.41/containers/{proxy_id}/json")["body"])
    assert inspected.startswith(f'{{"Id":"{proxy_id}"'), inspected[:200]
    # Anything that changes the engine, reads a container's files or runs a command: refused.
    refused = [
        ("POST", "/v1.41/containers/create"),
        ("POST", f"/v1.41/containers/{proxy_id}/exec"),
        ("POST", f"/v1.41/containers/{proxy_id}/stop"),
        ("DELETE", f"/v1.41/containers/{proxy_id}"),
        ("GET", f"/v1.41/containers/{proxy_id}/export"),
        ("GET", f"/v1.41/containers/{proxy_id}/archive?path=/etc"),
        ("GET", f"/v1.41/containers/{proxy_id}/logs?stdout=1"),
        ("GET", "/v1.41/containers/json"),
        ("GET", "/v1.41/images/json"),
        ("GET", "/v1.41/volumes"),
        ("GET", "/v1.41/events"),
        ("GET", f"/v1.41/containers/{proxy_id}%2Fexport/json"),
    ]
    answers = {f"{method} {path}": call(method, path)["status"] for method, path in refused}
    assert set(answers.values()) == {403}, answers
    # The proxy itself is not reachable from a service that has no business with Docker.
    assert stack.exec_python("prometheus", TCP_OR_DNS, "docker-api", 2375)["result"] != "open"


def test_grafana_has_a_secret_key_of_its_own(stack: StackHost) -> None:
    key = stack.environment("grafana").get("GF_SECURITY_SECRET_KEY", "")

    # Grafana's built-in default, which signs and encrypts with a key every install shares.
    assert key and key != "SW2YcwTIb9zpOOhoPsMm"
