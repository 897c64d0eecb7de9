"""Command line: `python -m proxy [serve|token|migrate|prune-audit|check-config]`.

`serve` is the default. The proxy never starts an upstream itself: `scripts/run` starts the
repository's Ollama simulator for development when no `OLLAMA_URL` is configured.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from proxy import __version__
from proxy.core.redact import redact_secrets
from proxy.core.settings import Settings, get_settings

EPILOG = """\
configuration comes from environment variables (also read from ./.env); see .env.example.
examples:
  python -m proxy                              serve on 127.0.0.1:8000
  OLLAMA_URL=http://gpu-host:11434 python -m proxy serve --host 0.0.0.0
  python -m proxy token --sub alice --role admin --ttl 3600
  python -m proxy migrate                      apply database migrations and exit
  python -m proxy prune-audit                  delete audit rows older than the retention
"""


def _load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        lines = [f"  {variable_name(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        sys.exit("configuration error:\n" + "\n".join(lines))


def variable_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable a settings error is about (`PROXY_PORT`, not `proxy_port`), and
    the key inside it for a mapping (`PROXY_RATE_LIMIT_ROLES[admin]`). Never the value given:
    it may be a secret."""
    if not loc:
        return "settings"
    name, *inner = (str(part) for part in loc)
    return name.upper() + "".join(f"[{part}]" for part in inner)



def _worker_app(settings: Settings) -> Any:
    """The app of one worker process, imported there: after the fork and after the metrics mode
    (prometheus-client's multiprocess mode) is chosen."""
    from proxy.main import create_app

    return create_app(settings)

def _serve(args: argparse.Namespace) -> int:
    from proxy.core.security import mint_token

    settings = _load_settings()
    host = args.host or settings.proxy_host
    port = args.port or settings.proxy_port
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"LLM proxy {__version__} ({settings.proxy_env} mode), "
          f"upstream {redact_secrets(settings.ollama_url)}")
    if settings.proxy_env == "dev" and settings.wants_symmetric:
        if settings.jwt_secret is not None:
            # A token signed with a real secret works on every proxy that shares it, and
            # startup output ends up in logs: only a per-process secret's token is printed.
            print("JWT_SECRET is set: mint a token with "
                  "`python -m proxy token --sub <you> --role admin`.")
        else:
            print("JWT_SECRET is not set: using a random secret for this process only.")
            token = mint_token(settings, sub="dev", role="admin", ttl_seconds=12 * 3600)
            print(f"dev token (sub=dev, role=admin, 12 h):\n  {token}")
            print(f"try:\n  TOKEN={token}\n  curl -N -H \"Authorization: Bearer $TOKEN\" "
                  f"-d '{{\"model\":\"llama3.2\",\"prompt\":\"Hello\"}}' "
                  f"{base}/api/llm/generate")
    print(f"open {base}/docs  (status: {base}/api/llm/status)", flush=True)
    if settings.worker_count > 1:
        # Before anything imports prometheus-client: its multiprocess mode is chosen then.
        from proxy.core.workers import run_workers

        return run_workers(settings, host, port, _worker_app)
    import uvicorn

    from proxy.core.server import server_options
    from proxy.main import create_app

    app = create_app(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; a SystemExit instead makes a
    # requested stop exit 0, which is what service managers and `scripts/run` expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, **server_options(settings))
    return 0


def _token(args: argparse.Namespace) -> int:
    from proxy.core.security import mint_token

    settings = _load_settings()
    if settings.jwt_secret is None:
        print("JWT_SECRET is not set; a token signed with a random secret would be useless.",
              file=sys.stderr)
        return 2
    longest = settings.jwt_max_lifetime
    if longest and args.ttl > longest:
        print(f"--ttl {args.ttl} is longer than JWT_MAX_LIFETIME ({longest} s): the proxy would "
              "refuse the token. For a long-lived credential create an API key "
              "(POST /api/admin/keys).", file=sys.stderr)
        return 2
    print(mint_token(settings, sub=args.sub, role=args.role, ttl_seconds=args.ttl))
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from proxy.core.db import migrate_database
    from proxy.core.errors import DatabaseUnavailable

    settings = _load_settings()
    try:
        asyncio.run(migrate_database(settings))
    except DatabaseUnavailable as exc:
        print(f"cannot reach the database at {redact_secrets(settings.database_url)} "
              f"({type(exc.__cause__).__name__}); is it running, is DATABASE_URL right?",
              file=sys.stderr)
        return 1
    print(f"database at {redact_secrets(settings.database_url)} is at the latest revision")
    return 0


def _prune_audit(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from proxy.audit.retention import prune_audit, retention_cutoff
    from proxy.core.db import create_engine

    settings = _load_settings()
    days = settings.proxy_audit_retention_days if args.days is None else args.days
    if days == 0:
        print("PROXY_AUDIT_RETENTION_DAYS=0: every audit row is kept; nothing deleted")
        return 0

    async def run() -> int:
        engine = create_engine(settings)
        try:
            return await prune_audit(engine, days)
        finally:
            await engine.dispose()

    cutoff = retention_cutoff(days)
    try:
        deleted = asyncio.run(run())
    except SQLAlchemyError as exc:
        where = settings.database_url.split("@")[-1]
        print(f"cannot prune the audit log at {where}: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:300]}\n(is the schema there? run "
              f"`python -m proxy migrate`; is DATABASE_URL right?)", file=sys.stderr)
        return 1
    print(f"deleted {deleted} audit rows older than {days} days "
          f"(before {cutoff.isoformat(timespec='seconds')})")
    return 0


def _check_config(_: argparse.Namespace) -> int:
    settings = _load_settings()
    print(f"mode: {settings.proxy_env}")
    print(f"upstream: {redact_secrets(settings.ollama_url)}")
    print(f"database: {redact_secrets(settings.database_url)}")
    print(f"redis: {redact_secrets(settings.redis_url) if settings.redis_url else 'unset'}")
    print(f"jwt algorithms: {', '.join(settings.jwt_algorithms)}")
    print("configuration is valid")
    return 0


def _retention_days(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"a whole number of days, 0 or more: {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy",
        description="The authenticated LLM gateway in front of Ollama.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the proxy (default)")
    serve.add_argument("--host", help="bind address (default PROXY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default PROXY_PORT or 8000)")
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="mint an HS256 dev token signed with JWT_SECRET")
    token.add_argument("--sub", required=True, help="user id (the `sub` claim)")
    token.add_argument("--role", choices=["user", "admin"], default="user")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(func=_token)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=_migrate)

    prune = sub.add_parser(
        "prune-audit", help="delete audit rows older than PROXY_AUDIT_RETENTION_DAYS, once")
    prune.add_argument("--days", type=_retention_days,
                       help="keep this many days instead (0 keeps every row)")
    prune.set_defaults(func=_prune_audit)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve", "token", "migrate", "prune-audit", "check-config"}
    if not words or (words[0] not in commands and words[0] not in ("-h", "--help", "--version")):
        words = ["serve", *words]
    args = parser.parse_args(words)
    result: int = args.func(args)
    return result
