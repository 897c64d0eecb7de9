"""JWT verification and dev-token minting.

Rules enforced here (each one a known way JWT gateways have been broken):
- the algorithm comes from an allowlist (`JWT_ALGORITHMS`); `none` is never in it;
- the key is chosen by the algorithm's family, never by the token: an HS* token is checked only
  against `JWT_SECRET`, an RS*/ES* token only against the public key or JWKS, so a public key can
  never be used as an HMAC secret (the HS/RS confusion);
- `exp` is required, `iss`/`aud` are checked when configured, with a small leeway for clock skew;
- the claims the proxy relies on (`sub`, `role`) must be present and well-formed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from jwt import PyJWKClient

from proxy.core.settings import (
    ASYMMETRIC_ALGORITHMS,
    SYMMETRIC_ALGORITHMS,
    Settings,
    effective_jwt_secret,
)

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")


class AuthError(Exception):
    """A request could not be authenticated. `reason` is a short stable code for audit/metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Principal:
    """The caller, as the verified token describes them."""

    sub: str
    role: Role
    claims: dict[str, Any]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenVerifier:
    """Verifies bearer tokens against the configured keys. One instance per app."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._secret = effective_jwt_secret(settings)
        self._public_key = settings.jwt_public_key
        self._jwks = (
            PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300)
            if settings.jwt_jwks_url
            else None
        )
        self._algorithms = list(settings.jwt_algorithms)

    async def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("missing_token", "missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError("malformed", "malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("algorithm", f"token algorithm {alg!r} is not allowed")
        key = await self._key_for(alg, token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._settings.jwt_audience is not None,
                    "verify_iss": self._settings.jwt_issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired", "token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("signature", "token signature is invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("audience", "token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("issuer", "token issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("claims", f"token lacks the required claim {exc.claim!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid", f"invalid token: {exc}") from exc
        return _principal_from(claims)

    async def _key_for(self, alg: str, token: str) -> Any:
        if alg in SYMMETRIC_ALGORITHMS:
            if self._secret is None:
                raise AuthError("algorithm", f"token algorithm {alg!r} is not configured")
            return self._secret
        if alg in ASYMMETRIC_ALGORITHMS:
            if self._public_key:
                return self._public_key
            if self._jwks is not None:
                jwks = self._jwks
                try:
                    # PyJWKClient fetches with urllib (blocking); keep it off the event loop.
                    signing_key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
                except jwt.PyJWKClientError as exc:
                    raise AuthError("jwks", f"no usable key in the JWKS: {exc}") from exc
                return signing_key.key
        raise AuthError("algorithm", f"token algorithm {alg!r} is not configured")


def _principal_from(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 255 or not sub.isprintable():
        raise AuthError("claims", "token 'sub' must be a printable, non-empty string of at most "
                                  "255 characters")
    role = claims.get("role", "user")
    if role not in ROLES:
        raise AuthError("claims", f"token 'role' must be one of {list(ROLES)}")
    return Principal(sub=sub, role=role, claims=claims)


def mint_token(
    settings: Settings,
    sub: str,
    role: Role = "user",
    ttl_seconds: int = 3600,
    secret: str | None = None,
) -> str:
    """Mint an HS256 token for development and tests; production tokens come from your IdP."""
    key = secret or effective_jwt_secret(settings)
    if key is None:
        raise ValueError("no JWT_SECRET configured to sign with")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, key, algorithm="HS256")
