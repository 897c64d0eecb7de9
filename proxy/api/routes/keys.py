"""API keys and the JWT deny-list: admins manage every key (`/api/admin/keys`) and the
deny-list (`/api/admin/token-denials`); users manage their own keys (`/api/llm/keys`) where
PROXY_USER_KEYS allows it.

Keys are managed with a signed-in token (JWT), never with an API key: a leaked key must not be
able to make itself a successor that outlives its revocation. A user's key is a `user` key in
the user's name, held to the user's limits besides its own, so it never has more rights than
the user; only an admin makes an `admin` key, and only when asking for one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from proxy.api.deps import AdminUser, CurrentUser, StateDep
from proxy.api.routes.admin import ADMIN_ERRORS
from proxy.core.errors import Forbidden, RequestInvalid
from proxy.core.models import ApiKey
from proxy.core.security import Principal
from proxy.schemas import (
    KEY_ID_PATTERN,
    KeyCreated,
    KeyIn,
    KeyList,
    KeyOut,
    KeyRotation,
    OwnKeyIn,
    TokenDenialIn,
    TokenDenialList,
    TokenDenialOut,
)
from proxy.services import credentials
from proxy.services.credentials import KeySpec

admin_router = APIRouter(prefix="/api/admin/keys", tags=["admin"])
denials_router = APIRouter(prefix="/api/admin/token-denials", tags=["admin"])
user_router = APIRouter(prefix="/api/llm/keys", tags=["keys"])

KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]
IncludeRevoked = Annotated[bool, Query(description="List revoked keys too.")]
KEY_ERRORS = {**ADMIN_ERRORS, 409: ADMIN_ERRORS[401]}


def _signed_in(caller: Principal) -> Principal:
    if caller.key is not None:
        raise Forbidden("API keys are managed with a signed-in token (JWT), not with an API "
                        "key")
    return caller


async def key_admin(admin: AdminUser) -> Principal:
    return _signed_in(admin)


async def key_owner(user: CurrentUser, state: StateDep) -> Principal:
    if not state.settings.proxy_user_keys:
        raise Forbidden("users may not manage API keys on this proxy (PROXY_USER_KEYS); "
                        "ask an admin")
    return _signed_in(user)


KeyAdmin = Annotated[Principal, Depends(key_admin)]
KeyOwner = Annotated[Principal, Depends(key_owner)]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _expiry(value: datetime | None) -> datetime | None:
    expires_at = _as_utc(value) if value is not None else None
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise RequestInvalid("expires_at must be in the future")
    return expires_at


def _spec(body: OwnKeyIn, owner: str, role: str) -> KeySpec:
    return KeySpec(owner=owner, name=body.name, role=role, expires_at=_expiry(body.expires_at),
                   allowed_models=body.allowed_models,
                   rate_limit_per_minute=body.rate_limit_per_minute,
                   concurrency_limit=body.concurrency_limit,
                   token_limit_per_minute=body.token_limit_per_minute,
                   token_limit_per_day=body.token_limit_per_day)


def _created(row: ApiKey, secret: str) -> KeyCreated:
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), secret=secret)


# -- admins: every key --------------------------------------------------------------------------

@admin_router.get("", response_model=KeyList, responses=ADMIN_ERRORS,
                  summary="List API keys (never their secrets)")
async def list_all_keys(
    state: StateDep, admin: KeyAdmin,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    include_revoked: IncludeRevoked = False,
) -> KeyList:
    rows = await credentials.list_keys(state, owner, include_revoked)
    return KeyList(keys=[KeyOut.model_validate(row) for row in rows])


@admin_router.post("", response_model=KeyCreated, status_code=201, responses=ADMIN_ERRORS,
                   summary="Create an API key; its secret is shown this once")
async def create_any_key(body: KeyIn, state: StateDep, admin: KeyAdmin) -> KeyCreated:
    spec = _spec(body, body.owner or admin.sub, body.role)
    return _created(*await credentials.create_key(state, spec, admin.sub))


@admin_router.post("/{key_id}/rotate", response_model=KeyCreated, responses=KEY_ERRORS,
                   summary="Give a key a new secret; the old one stops working")
async def rotate_any_key(key_id: KeyId, state: StateDep, admin: KeyAdmin,
                         body: KeyRotation | None = None) -> KeyCreated:
    expires_at = _expiry(body.expires_at) if body is not None else None
    return _created(*await credentials.rotate_key(state, key_id, None, expires_at))


@admin_router.delete("/{key_id}", response_model=KeyOut, responses=ADMIN_ERRORS,
                     summary="Revoke a key")
async def revoke_any_key(key_id: KeyId, state: StateDep, admin: KeyAdmin) -> KeyOut:
    return KeyOut.model_validate(await credentials.revoke_key(state, key_id, None))


# -- admins: the JWT deny-list ------------------------------------------------------------------

@denials_router.get("", response_model=TokenDenialList, responses=ADMIN_ERRORS,
                    summary="The JWT deny-list entries still in force")
async def list_token_denials(state: StateDep, admin: KeyAdmin) -> TokenDenialList:
    rows = await credentials.list_denials(state)
    return TokenDenialList(denials=[TokenDenialOut.model_validate(row) for row in rows])


@denials_router.post("", response_model=TokenDenialOut, status_code=201, responses=ADMIN_ERRORS,
                     summary="Refuse a token by its jti, or a user's tokens issued before a time")
async def deny_tokens(body: TokenDenialIn, state: StateDep, admin: KeyAdmin) -> TokenDenialOut:
    now = datetime.now(UTC)
    issued_before = None
    if body.subject is not None:
        issued_before = _as_utc(body.issued_before) if body.issued_before is not None else now
        if issued_before > now:
            raise RequestInvalid("issued_before must not be in the future")
    row = await credentials.deny_tokens(state, jti=body.jti, subject=body.subject,
                                        issued_before=issued_before, reason=body.reason,
                                        created_by=admin.sub)
    return TokenDenialOut.model_validate(row)


# -- users: their own keys ----------------------------------------------------------------------

@user_router.get("", response_model=KeyList, responses=ADMIN_ERRORS,
                 summary="List your API keys (never their secrets)")
async def list_own_keys(state: StateDep, user: KeyOwner,
                        include_revoked: IncludeRevoked = False) -> KeyList:
    rows = await credentials.list_keys(state, user.sub, include_revoked)
    return KeyList(keys=[KeyOut.model_validate(row) for row in rows])


@user_router.post("", response_model=KeyCreated, status_code=201, responses=ADMIN_ERRORS,
                  summary="Create an API key of your own; its secret is shown this once")
async def create_own_key(body: OwnKeyIn, state: StateDep, user: KeyOwner) -> KeyCreated:
    return _created(*await credentials.create_key(state, _spec(body, user.sub, "user"),
                                                  user.sub))


@user_router.post("/{key_id}/rotate", response_model=KeyCreated, responses=KEY_ERRORS,
                  summary="Give one of your keys a new secret; the old one stops working")
async def rotate_own_key(key_id: KeyId, state: StateDep, user: KeyOwner,
                         body: KeyRotation | None = None) -> KeyCreated:
    expires_at = _expiry(body.expires_at) if body is not None else None
    return _created(*await credentials.rotate_key(state, key_id, user.sub, expires_at))


@user_router.delete("/{key_id}", response_model=KeyOut, responses=ADMIN_ERRORS,
                    summary="Revoke one of your keys")
async def revoke_own_key(key_id: KeyId, state: StateDep, user: KeyOwner) -> KeyOut:
    return KeyOut.model_validate(await credentials.revoke_key(state, key_id, user.sub))
