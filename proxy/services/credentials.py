"""Managing credentials: API keys (create, list, rotate, revoke) and the JWT deny-list.

Every change is written to the database first, then dropped from (or added to) this process's
view at once; the other replicas see it within PROXY_REVOCATION_REFRESH_SECONDS
(`core/api_keys.py`, `core/token_denials.py`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.core.api_keys import new_secret, secret_digest, shown_prefix
from proxy.core.errors import NotFound, ProxyError
from proxy.core.models import ApiKey, TokenDenial
from proxy.services.state import AppState


class KeyRevoked(ProxyError):
    status_code = 409


@dataclass(frozen=True)
class KeySpec:
    """A new key's settings, already checked (`api/routes/keys.py`)."""

    owner: str
    name: str
    role: str
    expires_at: datetime | None
    allowed_models: list[str] | None
    rate_limit_per_minute: int | None
    concurrency_limit: int | None
    token_limit_per_minute: int | None
    token_limit_per_day: int | None


async def create_key(state: AppState, spec: KeySpec, created_by: str) -> tuple[ApiKey, str]:
    """The new key's row and its secret: the only time the secret exists outside the caller."""
    secret = new_secret()
    row = ApiKey(id=secrets.token_hex(8), owner=spec.owner, name=spec.name, role=spec.role,
                 prefix=shown_prefix(secret), secret_sha256=secret_digest(secret),
                 created_by=created_by, created_at=datetime.now(UTC),
                 expires_at=spec.expires_at, allowed_models=spec.allowed_models,
                 rate_limit_per_minute=spec.rate_limit_per_minute,
                 concurrency_limit=spec.concurrency_limit,
                 token_limit_per_minute=spec.token_limit_per_minute,
                 token_limit_per_day=spec.token_limit_per_day)
    async with state.sessions() as session, session.begin():
        session.add(row)
    return row, secret


async def list_keys(state: AppState, owner: str | None, include_revoked: bool) -> list[ApiKey]:
    """Keys newest first: one owner's, or everyone's (owner None)."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    async with state.sessions() as session:
        return list((await session.execute(query)).scalars())


async def _one_key(session: AsyncSession, key_id: str, owner: str | None) -> ApiKey:
    query = select(ApiKey).where(ApiKey.id == key_id)
    if owner is not None:
        # Another user's key is as unknown to the caller as a key that does not exist.
        query = query.where(ApiKey.owner == owner)
    row = (await session.execute(query.with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    return row


async def rotate_key(state: AppState, key_id: str, owner: str | None,
                     expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new secret for the key (same id and settings, and a new expiry if one is given); the
    old secret stops working."""
    secret = new_secret()
    async with state.sessions() as session, session.begin():
        row = await _one_key(session, key_id, owner)
        if row.revoked_at is not None:
            raise KeyRevoked(f"API key '{key_id}' is revoked; a revoked key cannot be rotated")
        row.prefix, row.secret_sha256 = shown_prefix(secret), secret_digest(secret)
        if expires_at is not None:
            row.expires_at = expires_at
    state.verifier.keys.forget(key_id)
    return row, secret


async def revoke_key(state: AppState, key_id: str, owner: str | None) -> ApiKey:
    """Revoke the key for good (the row stays, for the audit log that names it). Revoking a
    revoked key changes nothing."""
    async with state.sessions() as session, session.begin():
        row = await _one_key(session, key_id, owner)
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
    state.verifier.keys.forget(key_id)
    return row


async def deny_tokens(state: AppState, *, jti: str | None, subject: str | None,
                      issued_before: datetime | None, reason: str,
                      created_by: str) -> TokenDenial:
    """Add a deny-list entry and put it in force in this process at once. It is kept while a
    token it matches could still be valid: with JWT_MAX_LIFETIME set, that lifetime (plus the
    leeway) after the later of now and `issued_before`; without it, for ever."""
    longest = state.settings.jwt_max_lifetime
    now = datetime.now(UTC)
    expires_at = None
    if longest:
        latest = max(now, issued_before) if issued_before is not None else now
        expires_at = latest + timedelta(seconds=longest + state.settings.jwt_leeway_seconds)
    row = TokenDenial(jti=jti, subject=subject, issued_before=issued_before,
                      expires_at=expires_at, reason=reason, created_by=created_by,
                      created_at=now)
    async with state.sessions() as session, session.begin():
        session.add(row)
    await state.verifier.denials.refresh()
    return row


async def list_denials(state: AppState) -> list[TokenDenial]:
    """Deny-list entries still in force, newest first."""
    now = datetime.now(UTC)
    query = (select(TokenDenial)
             .where((TokenDenial.expires_at.is_(None)) | (TokenDenial.expires_at > now))
             .order_by(TokenDenial.created_at.desc(), TokenDenial.id.desc()))
    async with state.sessions() as session:
        return list((await session.execute(query)).scalars())
