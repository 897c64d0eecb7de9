"""The proxy's configuration: one pydantic-settings class, read from the environment and `.env`.

Naming scheme: the names other parts of the stack rely on are bare (`OLLAMA_URL`, `DATABASE_URL`,
`REDIS_URL`, `JWT_*`); everything else about the proxy itself is `PROXY_*`, and Ollama client
tuning is `OLLAMA_*`. Every variable is listed in `.env.example` and the README.

There are no default secrets. In `dev` mode a missing `JWT_SECRET` is replaced by a random one
that lives as long as the process (so nothing guessable is ever accepted); in `production` mode
the proxy refuses to start without a real verification key, with a weak secret, with tokens not
bound to an audience and issuer, with keys fetched over plain HTTP, or with the embedded
development stores (SQLite, in-process limits), and names every variable to fix at once.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from proxy.core.logs import LogFormat, LogLevel
from proxy.core.redact import redact_secrets

MIN_SECRET_BYTES = 32
# What a production secret must be worth by both estimates in `estimated_secret_bits`. Every
# `openssl rand -hex 32` scores over 200 by both, so none is ever refused; repeated characters,
# a word repeated, or 32 characters from a small alphabet score far below.
MIN_SECRET_BITS = 128
# Values people paste from examples; accepting them in production would be a default secret.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me"})
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)


class TokenLimits(BaseModel):
    """A role's or a user's token limits (PROXY_TOKEN_LIMIT_ROLES/_USERS): a field left out
    falls back; 0 means no limit."""

    model_config = ConfigDict(extra="forbid")

    per_minute: int | None = Field(None, ge=0)
    per_day: int | None = Field(None, ge=0)


class SettingsError(ValueError):
    """The configuration cannot be used; the message says which variable and why."""


def estimated_secret_bits(value: str) -> float:
    """A pessimistic guess at how many bits of randomness `value` holds: the smaller of its
    length times the entropy of its character frequencies (low for few distinct characters)
    and eight times its zlib-compressed size (low for repeats). It cannot tell a counting
    sequence from randomness: it catches typed secrets, not every bad one."""
    data = value.encode()
    counts = Counter(data)
    by_frequency = -sum(n * math.log2(n / len(data)) for n in counts.values())
    by_compression = 8 * (len(zlib.compress(data, 9)) - len(zlib.compress(b"", 9)))
    return max(0.0, min(by_frequency, by_compression))


def secret_weakness(variable: str, value: str) -> str | None:
    """Why `value` is not fit to be the production secret `variable`, or None if it is."""
    hint = "generate one with `openssl rand -hex 32`"
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        return f"{variable} is a placeholder value; {hint}"
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        return (f"{variable} is too short for production: {size} bytes, need at least "
                f"{MIN_SECRET_BYTES}; {hint}")
    bits = estimated_secret_bits(value)
    if bits < MIN_SECRET_BITS:
        return (f"{variable} is too predictable for production: about {bits:.0f} bits of "
                f"randomness estimated, need {MIN_SECRET_BITS} (repeated or too few distinct "
                f"characters); {hint}")
    return None


def comma_list(value: str) -> list[str]:
    """A comma-separated setting as its entries, blanks dropped ("a, b," is ["a", "b"])."""
    return [part.strip() for part in value.split(",") if part.strip()]


def trusted_proxy_entries(value: list[str]) -> list[str]:
    """PROXY_TRUSTED_PROXIES' entries, once each is an address or network the proxy can believe.

    Raises ValueError naming the entry and the fix. The deployment paths call it too, so that a
    value the proxy would refuse stops `pulumi up` before anything is created.
    """
    for entry in value:
        if entry == "*":
            raise ValueError("PROXY_TRUSTED_PROXIES: '*' would let every client choose its "
                             "address; list your reverse proxies' addresses or networks")
        try:
            ipaddress.ip_network(entry)
        except ValueError as exc:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"PROXY_TRUSTED_PROXIES: {entry!r} is not an IP address or "
                                 "network (e.g. 10.0.0.5 or 172.18.0.0/16)") from exc
            raise ValueError(f"PROXY_TRUSTED_PROXIES: {entry!r} has host bits set; did you "
                             f"mean {network}?") from exc
    return value


def async_database_url(url: str) -> str:
    """Turn a plain database URL into one for SQLAlchemy's async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    proxy_env: Literal["dev", "production"] = Field(
        "dev", description="dev allows an ephemeral JWT secret; production demands real keys."
    )
    proxy_host: str = "127.0.0.1"
    # Worker processes serving the port (one core each). Unset: one per CPU up to 4 when the
    # state is shared (REDIS_URL and PostgreSQL), else 1; more than 1 needs that shared state.
    proxy_workers: int | None = Field(None, ge=1, le=64)
    proxy_port: int = Field(8000, ge=1, le=65535)
    proxy_log_level: LogLevel = Field(
        "info", description="Level of the proxy's loggers (proxy.*) and uvicorn's.")
    proxy_log_format: LogFormat = Field(
        "text", description="text: lines for a terminal; json: one JSON object per line.")
    # Spans to an OTLP collector, configured by the standard OTEL_* variables (core/tracing.py).
    proxy_otel_enabled: bool = Field(False, description="Trace requests with OpenTelemetry.")
    proxy_max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies get 413.")
    proxy_body_read_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="A whole request body must arrive within this; else 408.")
    proxy_max_prompt_chars: int = Field(100_000, ge=1)
    proxy_max_messages: int = Field(100, ge=1, description="Messages in one chat request.")
    proxy_max_history_messages: int = Field(
        200, ge=0, description="Stored turns sent upstream before new messages (latest kept)."
    )
    # Also the default when a caller asks for no limit: a shared GPU is never given away unbounded.
    proxy_max_num_predict: int = Field(4096, ge=1)
    proxy_max_keep_alive_seconds: int = Field(
        1800, ge=0, description="The longest `keep_alive` a caller may ask Ollama for (how long "
        "a model stays loaded after the request); callers may not pin a model forever.")
    proxy_max_embed_inputs: int = Field(256, ge=1, le=10_000,
                                        description="Texts in one embedding request.")
    # Unset: the model's own context length as Ollama reports it (/api/show), or 8192 when it
    # reports none. Every new num_ctx makes Ollama reload the model with a KV cache that size.
    proxy_max_num_ctx: int | None = Field(None, ge=256, le=131072)
    # Templates render in worker processes, killed when the budget is spent (422).
    proxy_template_render_seconds: float = Field(1.0, gt=0, le=60)
    proxy_template_max_output_chars: int = Field(100_000, ge=1, le=10_000_000)
    proxy_template_workers: int = Field(2, ge=1, le=64)
    proxy_auto_migrate: bool = Field(True, description="Apply Alembic migrations at startup.")
    # Empty = every model upstream has; otherwise only these (name or name:tag) may be used.
    proxy_model_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Rate limits apply to generation (generate, chat, WebSocket requests): they cost GPU time.
    proxy_rate_limit: str = Field("10/minute", description="Per user, moving window.")
    proxy_rate_limit_roles: dict[str, str] = Field(default_factory=dict)
    proxy_rate_limit_users: dict[str, str] = Field(default_factory=dict)
    proxy_concurrency_limit: int = Field(2, ge=1, description="Generations at once, per user.")
    proxy_concurrency_limit_roles: dict[str, int] = Field(default_factory=dict)
    proxy_concurrency_limit_users: dict[str, int] = Field(default_factory=dict)
    # A concurrency slot in Redis is a lease this long, renewed every third of it while its
    # generation runs: a process that dies frees its slots within one lease.
    proxy_concurrency_lease_seconds: int = Field(15, ge=2, le=3600)
    # What to do when Redis (limits, cache) cannot be reached: refuse (503) or admit and count.
    proxy_limiter_failure_mode: Literal["closed", "open"] = "closed"

    # Tokens (prompt and generated) per user, in fixed UTC windows (a minute, a day); 0: none.
    # Streams are counted as they flow, every PROXY_TOKEN_COUNT_EVERY chunks: the most a stream
    # can run past a limit (core/token_limits.py).
    proxy_token_limit_per_minute: int = Field(0, ge=0, le=1_000_000_000)
    proxy_token_limit_per_day: int = Field(0, ge=0, le=1_000_000_000_000)
    # JSON overrides by role and by user, e.g. {"admin": {"per_minute": 0, "per_day": 0}}; a
    # field left out falls back to the role's, then to the global value.
    proxy_token_limit_roles: dict[str, TokenLimits] = Field(default_factory=dict)
    proxy_token_limit_users: dict[str, TokenLimits] = Field(default_factory=dict)
    proxy_token_count_every: int = Field(8, ge=1, le=1000)
    # How stale a replica's view of budgets and team members may be (they change on the
    # replica that changes them at once); the budget gauges are refreshed on the same period.
    proxy_budget_refresh_seconds: float = Field(5.0, gt=0, le=300)

    proxy_metrics_token: str | None = None

    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto are believed.
    # Empty = none: otherwise any client could choose the address that is audited.
    proxy_trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # What one client may make the HTTP server hold before it is authenticated.
    proxy_max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576,
        description="An unfinished request head larger than this is refused (400, closed).")
    proxy_max_connections: int = Field(
        512, ge=2, description="Open connections (idle ones too) beyond which the server "
                               "answers 503; keeps file descriptors and memory bounded.")
    proxy_keepalive_timeout_seconds: int = Field(
        5, ge=1, le=300, description="An idle keep-alive connection is closed after this long.")
    proxy_header_timeout_seconds: float = Field(
        15.0, gt=0, le=300, description="A request head must arrive whole within this long of "
                                        "the connection opening or the previous response.")

    proxy_audit_store_prompts: bool = Field(False, description="Store prompt text in the audit.")
    proxy_audit_spool_path: str = "./audit-spool.jsonl"
    proxy_audit_batch_size: int = Field(200, ge=1, le=5000)
    proxy_audit_flush_seconds: float = Field(0.25, gt=0, le=300)
    proxy_audit_retry_seconds: float = Field(
        2.0, gt=0, le=300, description="How often spooled rows are replayed, and, after a start "
        "without the database, the migrations retried.")
    proxy_audit_spool_after_seconds: float = Field(
        5.0, gt=0, le=300, description="A row is in the database or fsynced in the spool at "
        "most this long after its request finished, whatever the database does: the most a "
        "hard kill can lose.")
    proxy_audit_retention_days: int = Field(
        90, ge=0, description="Audit rows older than this are deleted; 0 keeps them forever.")
    proxy_audit_prune_interval_seconds: float = Field(
        3600.0, gt=0, le=86_400, description="How often the running proxy deletes old rows.")

    proxy_cache_ttl_seconds: int = Field(300, ge=0, description="0 disables the response cache.")
    proxy_cache_max_entries: int = Field(10_000, ge=1, description="In-memory cache only.")
    # Off: an entry answers only the user whose request stored it.
    proxy_cache_shared: bool = Field(False, description="Share cached answers across users.")

    # Cost model: "gpu_time" prices generation seconds, "tokens" prices tokens per model.
    proxy_cost_mode: Literal["gpu_time", "tokens"] = "gpu_time"
    proxy_cost_gpu_hour: float = Field(0.0, ge=0, description="Energy/rental per GPU hour.")
    proxy_cost_hardware_month: float = Field(0.0, ge=0, description="Amortised hardware/month.")
    # {"llama3.2": {"prompt": 0.0001, "completion": 0.0002}, "*": {...}} per 1K tokens.
    proxy_cost_per_1k_tokens: dict[str, dict[str, float]] = Field(default_factory=dict)
    proxy_cost_currency: str = "USD"

    ollama_url: str = "http://127.0.0.1:11434"
    # Several engines: a YAML file of upstreams, aliases and fallbacks (proxy/upstream/router.py);
    # unset, the one Ollama at OLLAMA_URL. PROXY_UPSTREAMS holds the same document itself (JSON
    # on one line in an env file): what Ansible and Pulumi pass to the compose stack.
    proxy_upstreams_file: Path | None = None
    proxy_upstreams: str | None = None
    proxy_upstream_probe_seconds: float = Field(15.0, gt=0, le=3600)
    proxy_upstream_eject_after: int = Field(3, ge=1, le=1000,
                                            description="Failures in a row that eject one.")
    proxy_upstream_cooldown_seconds: float = Field(10.0, gt=0, le=3600)
    ollama_connect_timeout: float = Field(5.0, gt=0)
    # Time allowed from a generation's request to its first token: a cold model load on a
    # small GPU takes a while. Past it: 504, or another engine if one serves the model.
    ollama_first_token_timeout: float = Field(120.0, gt=0)
    # Time allowed between two chunks once a generation has started (and for a non-streamed
    # call's answer, with the first-token time if that is longer).
    ollama_read_timeout: float = Field(300.0, gt=0)
    # Time allowed for a whole generation that is not streamed (the client asked for one JSON
    # answer, and so does the proxy): the engine sends nothing until it is done.
    ollama_answer_timeout: float = Field(600.0, gt=0)
    ollama_write_timeout: float = Field(30.0, gt=0)
    ollama_pool_timeout: float = Field(10.0, gt=0)
    ollama_max_connections: int = Field(100, ge=1)

    database_url: str = "sqlite+aiosqlite:///./proxy.db"
    proxy_database_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="A database connection attempt or statement (PostgreSQL; "
        "migrations excepted) that takes longer fails: 503 where a route needs the database.")
    redis_url: str | None = None
    # Connections to Redis per client (the limiter's, the cache's); a command that finds them
    # all busy waits this long for one, then fails as if Redis were unreachable.
    proxy_redis_max_connections: int = Field(50, ge=1, le=10_000)
    proxy_redis_pool_timeout_seconds: float = Field(5.0, gt=0, le=300)

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    # Tokens are untrusted input until verified: longer ones are refused unread (401).
    jwt_max_token_bytes: int = Field(8192, ge=1024, le=1_048_576)
    # A token may live at most this long (`exp - iat`); one without `iat` is then refused too,
    # since its lifetime cannot be known. A day bounds what a leaked token is worth without
    # making people sign in more than once a working day. 0 turns the check off.
    jwt_max_lifetime: int = Field(86_400, ge=0, le=31_536_000)
    # The claim that carries the role: a string (`user` or JWT_ADMIN_ROLE) or a list of role or
    # group names (admin when JWT_ADMIN_ROLE is among them); a dotted path reaches into an
    # object (`realm_access.roles`). Absent: the role is `user`.
    jwt_role_claim: str = Field("role", min_length=1, max_length=200)
    jwt_admin_role: str = Field("admin", min_length=1, max_length=200)

    # Proxy-managed API keys (`sk-llm-…`): users may create and revoke their own at
    # /api/llm/keys when true; admins always can at /api/admin/keys.
    proxy_user_keys: bool = False
    # How stale a replica's view of API keys and the JWT deny-list may be: a revocation on one
    # replica is in force on every other within this long. At most 1 s, as promised.
    proxy_revocation_refresh_seconds: float = Field(0.5, gt=0, le=1.0)

    @field_validator("jwt_algorithms", "proxy_model_allowlist", "proxy_trusted_proxies",
                     mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        return comma_list(value) if isinstance(value, str) else value

    @field_validator("jwt_secret", "jwt_public_key", "jwt_jwks_url", "jwt_audience", "jwt_issuer",
                     "redis_url", "proxy_metrics_token", "proxy_max_num_ctx", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("proxy_log_level", "proxy_log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("proxy_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '10/minute': {value!r}") from exc
        return value

    @field_validator("proxy_rate_limit_roles", "proxy_rate_limit_users")
    @classmethod
    def _rate_limits_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for limit in value.values():
            cls._rate_limit_parses(limit)
        return value

    @field_validator("proxy_trusted_proxies")
    @classmethod
    def _trusted_proxies_are_addresses(cls, value: list[str]) -> list[str]:
        return trusted_proxy_entries(value)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        unknown = set(self.jwt_algorithms) - SYMMETRIC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if not self.jwt_algorithms or unknown:
            raise SettingsError(
                f"JWT_ALGORITHMS must list algorithms from "
                f"{sorted(SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS)}; got {self.jwt_algorithms}"
                " ('none' is never accepted)"
            )
        if self.wants_asymmetric and not (self.jwt_public_key or self.jwt_jwks_url):
            raise SettingsError(
                "JWT_ALGORITHMS allows an asymmetric algorithm but neither JWT_PUBLIC_KEY nor "
                "JWT_JWKS_URL is set"
            )
        if self.proxy_env == "production":
            self._check_production()
        if self.proxy_workers is not None and self.proxy_workers > 1 and not self.shares_state:
            raise SettingsError(
                f"PROXY_WORKERS={self.proxy_workers} needs REDIS_URL and a PostgreSQL "
                "DATABASE_URL: each worker is a process of its own, so limits kept in process "
                "memory would be granted once per worker, and several processes writing one "
                "SQLite file lock each other out; set both, or PROXY_WORKERS=1")
        return self

    def _check_production(self) -> None:
        problems = [*self._production_key_problems(), *self._production_store_problems()]
        if problems:
            raise SettingsError("PROXY_ENV=production refuses this configuration:\n"
                                + "\n".join(f"    - {problem}" for problem in problems))

    def _production_key_problems(self) -> list[str]:
        problems: list[str] = []
        if self.wants_symmetric:
            if self.jwt_secret is None:
                problems.append("PROXY_ENV=production and JWT_ALGORITHMS allows HS*, but "
                                "JWT_SECRET is not set; generate one with `openssl rand -hex 32`")
            elif weakness := secret_weakness("JWT_SECRET", self.jwt_secret):
                problems.append(weakness)
        if self.proxy_metrics_token is not None:
            if weakness := secret_weakness("PROXY_METRICS_TOKEN", self.proxy_metrics_token):
                problems.append(weakness)
        if self.wants_asymmetric:
            # An identity provider signs tokens for many services; without both checks a token
            # it issued to any of them would open this one.
            unbound = [variable for variable, value in (("JWT_AUDIENCE", self.jwt_audience),
                                                        ("JWT_ISSUER", self.jwt_issuer))
                       if value is None]
            if unbound:
                problems.append(f"{' and '.join(unbound)} {'is' if len(unbound) == 1 else 'are'} "
                                "not set: with RS*/ES* tokens in production set both, so that "
                                "only tokens your identity provider issued for this proxy are "
                                "accepted")
            if self.jwt_jwks_url and not self.jwt_jwks_url.lower().startswith("https://"):
                problems.append("JWT_JWKS_URL must be an https:// URL in production: keys "
                                "fetched over anything else can be replaced on the way; got "
                                f"{redact_secrets(self.jwt_jwks_url)}")
        return problems

    def _production_store_problems(self) -> list[str]:
        problems: list[str] = []
        if "database_url" not in self.model_fields_set:
            problems.append("DATABASE_URL is not set (the default is a SQLite file): production "
                            "needs PostgreSQL, e.g. postgresql://llm:<password>@postgres:5432/llm")
        elif not self.database_url.startswith("postgresql"):
            problems.append("DATABASE_URL must point at PostgreSQL in production "
                            "(postgresql://…); SQLite is for development and tests")
        if self.redis_url is None:
            problems.append("REDIS_URL is not set: production needs Redis, so that rate limits, "
                            "concurrency slots and the cache hold across restarts and replicas "
                            "(e.g. redis://redis:6379/0)")
        return problems

    @property
    def wants_symmetric(self) -> bool:
        return bool(SYMMETRIC_ALGORITHMS.intersection(self.jwt_algorithms))

    @property
    def wants_asymmetric(self) -> bool:
        return bool(ASYMMETRIC_ALGORITHMS.intersection(self.jwt_algorithms))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def shares_state(self) -> bool:
        """Whether limits, cache and audit live outside the process (Redis and PostgreSQL), so
        that several worker processes can share them."""
        return self.redis_url is not None and not self.is_sqlite

    @property
    def worker_count(self) -> int:
        """PROXY_WORKERS, or the default that fits the host: one process per CPU (a process
        uses one core), at most 4, when the state is shared; otherwise 1."""
        if self.proxy_workers is not None:
            return self.proxy_workers
        return min(os.cpu_count() or 1, 4) if self.shares_state else 1


_ephemeral_secret = secrets.token_urlsafe(48)


def effective_jwt_secret(settings: Settings) -> str | None:
    """The HMAC secret in force: the configured one, or in dev mode a per-process random one."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret
    if settings.proxy_env == "dev" and settings.wants_symmetric:
        return _ephemeral_secret
    return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
