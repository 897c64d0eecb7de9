"""Proxy-managed API keys: their secrets, and finding the key a request presents.

A key is `sk-llm-` followed by 32 random bytes (`secrets`, base64url). Only the secret's SHA-256
is stored. A fast hash is enough here, unlike for passwords: a slow KDF protects secrets people
choose, which can be guessed; 256 random bits cannot be guessed at any hash speed, and a KDF
would cost CPU on every request. Finding a key by its digest also means no comparison runs on
the secret itself, so timing tells nothing about it.

Postgres (or SQLite) is the source of truth. Each process keeps what it looked up for at most
PROXY_REVOCATION_REFRESH_SECONDS (at most 1 s), so a key revoked or rotated on any replica is
refused on every replica within that long, and at once on the replica that changed it.
`last_used_at` is written at most once a minute per key and process, in the background, never
in the request's path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.errors import DatabaseUnavailable
from proxy.core.models import ApiKey
from proxy.core.security import ROLES, AuthError, KeyGrant, Principal, Role

log = logging.getLogger("proxy.keys")

KEY_PREFIX = "sk-llm-"
SECRET_BYTES = 32
# How much of the secret is kept in the clear to tell keys apart (36 of its 256 bits).
SHOWN_CHARS = len(KEY_PREFIX) + 6
LAST_USED_EVERY_SECONDS = 60.0
# Lookups kept per process: enough for every key in use, bounded whatever callers send.
CACHED_KEYS = 10_000


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shown_prefix(secret: str) -> str:
    return secret[:SHOWN_CHARS]


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True)
class KeyFound:
    """A key row as the verifier needs it."""

    id: str
    owner: str
    role: str
    expires_at: float | None
    revoked: bool
    grant: KeyGrant

    @classmethod
    def of(cls, row: ApiKey) -> KeyFound:
        expires = row.expires_at.timestamp() if row.expires_at is not None else None
        models = tuple(row.allowed_models) if row.allowed_models is not None else None
        return cls(id=row.id, owner=row.owner, role=row.role, expires_at=expires,
                   revoked=row.revoked_at is not None,
                   grant=KeyGrant(id=row.id, allowed_models=models,
                                  rate_limit_per_minute=row.rate_limit_per_minute,
                                  concurrency_limit=row.concurrency_limit,
                                  token_limit_per_minute=row.token_limit_per_minute,
                                  token_limit_per_day=row.token_limit_per_day,
                                  expires_at=expires))


class ApiKeyVerifier:
    """Finds the key behind a secret, through a per-process cache that is never older than
    `max_age` seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], max_age: float) -> None:
        self._sessions = sessions
        self._max_age = max_age
        # digest -> (found, when looked up: monotonic); only keys that exist are kept, so
        # made-up secrets cannot fill it.
        self._found: OrderedDict[str, tuple[KeyFound, float]] = OrderedDict()
        self._last_used_written: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def verify(self, secret: str) -> Principal:
        found = await self._find(secret_digest(secret))
        if found is None:
            raise AuthError("unknown_key", "API key is not valid")
        if found.revoked:
            raise AuthError("revoked", "API key has been revoked")
        if found.expires_at is not None and found.expires_at <= time.time():
            expired = datetime.fromtimestamp(found.expires_at, UTC).isoformat()
            raise AuthError("expired", f"API key expired at {expired}")
        if found.role not in ROLES:
            raise AuthError("claims", "API key has an unknown role")
        self._note_use(found.id)
        role: Role = "admin" if found.role == "admin" else "user"
        return Principal(sub=found.owner, role=role,
                         claims={"sub": found.owner, "role": found.role}, key=found.grant)

    def forget(self, key_id: str) -> None:
        """Drop what this process knows of a key (it was just revoked or rotated here)."""
        for digest in [d for d, (found, _) in self._found.items() if found.id == key_id]:
            del self._found[digest]

    async def _find(self, digest: str) -> KeyFound | None:
        cached = self._found.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._max_age:
            return cached[0]
        try:
            async with self._sessions() as session:
                row = (await session.execute(
                    select(ApiKey).where(ApiKey.secret_sha256 == digest))).scalar_one_or_none()
        except DatabaseUnavailable:
            raise
        except SQLAlchemyError as exc:  # e.g. the table is not there yet (migrations pending)
            log.warning("API keys cannot be read: %s", type(exc).__name__)
            raise DatabaseUnavailable("API keys cannot be read from the database; try again "
                                      "shortly") from exc
        if row is None:
            self._found.pop(digest, None)
            return None
        found = KeyFound.of(row)
        self._found[digest] = (found, now)
        self._found.move_to_end(digest)
        while len(self._found) > CACHED_KEYS:
            self._found.popitem(last=False)
        return found

    def _note_use(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._last_used_written.get(key_id, -LAST_USED_EVERY_SECONDS) \
                < LAST_USED_EVERY_SECONDS:
            return
        self._last_used_written[key_id] = now
        task = asyncio.create_task(self._write_last_used(key_id), name="api-key-last-used")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_last_used(self, key_id: str) -> None:
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(update(ApiKey).where(ApiKey.id == key_id)
                                      .values(last_used_at=datetime.now(UTC)))
        except Exception as exc:  # a usage timestamp is not worth failing anything for
            log.info("could not record the use of API key %s: %s", key_id, type(exc).__name__)

    async def aclose(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
