"""JWT verification and dev-token minting.

Rules enforced here (each one a known way JWT gateways have been broken):
- the algorithm comes from an allowlist (`JWT_ALGORITHMS`); `none` is never in it;
- the key is chosen by the algorithm's family, never by the token: an HS* token is checked only
  against `JWT_SECRET`, an RS*/ES* token only against the public key or JWKS, so a public key can
  never be used as an HMAC secret (the HS/RS confusion);
- `exp` is required, `iss`/`aud` are checked when configured, with a small leeway for clock skew;
- the claims the proxy relies on (`sub`, and the role claim `JWT_ROLE_CLAIM`) must be
  present and well-formed;
- a token may live at most `JWT_MAX_LIFETIME` (`exp - iat`), so a token minted for a year is
  refused even with a valid signature; while that is set a token without `iat` is refused too;
- the token is untrusted input until its signature is checked, and the header is read before
  that: a token longer than `JWT_MAX_TOKEN_BYTES`, a header that is not a JSON object, a
  non-string `kid`/`typ`/`cty`, any `crit` (this proxy implements no critical extension) or
  `b64` are refused before PyJWT sees them, so every malformed token is an AuthError (a 401
  with a stable reason), never an exception from the library;
- nothing taken from a token reaches a message (and so a response, an audit row or a log line)
  unescaped or unbounded: see `printable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from jwt import PyJWKClient
from jwt.utils import base64url_decode

from proxy.core.settings import (
    ASYMMETRIC_ALGORITHMS,
    SYMMETRIC_ALGORITHMS,
    Settings,
    effective_jwt_secret,
)

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")

# Header parameters that RFC 7515 defines as strings; PyJWT raises a bare InvalidTokenError on
# a non-string `kid` and lets a non-string `typ`/`cty` through.
STRING_HEADER_PARAMETERS = ("kid", "typ", "cty")
# How much of a value taken from a token a message may quote.
QUOTED_CHARS = 40
MESSAGE_CHARS = 160


def printable(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` made safe to put in a message, an audit row or a log line: every non-printable
    character (newline, carriage return, U+2028, escape sequences...) is written as its Python
    escape, so that text from a token can never start a line of its own, and the result is cut
    to `limit` characters (plus "..." when cut)."""
    safe = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text[:limit])
    return safe if len(text) <= limit and len(safe) <= limit else f"{safe[:limit]}..."


def _json_kind(value: object) -> str:
    """What a JSON value is, for a message that must not quote it (it may be huge or nested)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string"


class AuthError(Exception):
    """A request could not be authenticated. `reason` is a short stable code for audit/metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class KeyGrant:
    """What a proxy-managed API key narrows its owner's rights to (`core/api_keys.py`)."""

    id: str
    # None: the models the proxy allows anyone; otherwise only these (names or name:tag).
    allowed_models: tuple[str, ...] | None = None
    # None: the owner's limits alone; otherwise a bucket of the key's own, besides the owner's.
    rate_limit_per_minute: int | None = None
    concurrency_limit: int | None = None
    # None: the owner's token limits alone; otherwise windows of the key's own, besides them.
    token_limit_per_minute: int | None = None
    token_limit_per_day: int | None = None
    # Epoch seconds; None: the key does not expire.
    expires_at: float | None = None


@dataclass(frozen=True)
class Principal:
    """The caller, as the verified token or API key describes them. A key acts as its owner
    (`sub`) with the role it was given, narrowed by its `key` grant."""

    sub: str
    role: Role
    claims: dict[str, Any]
    key: KeyGrant | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def expires_at(self) -> float | None:
        """When the credential stops being valid, in epoch seconds: a token's `exp` (required
        and checked), a key's expiry, or None for a key that does not expire."""
        if self.key is not None:
            return self.key.expires_at
        return float(int(self.claims["exp"]))


# Verified tokens are remembered for at most this long (and never past their `exp`, leeway
# included), and at most this many of them (the oldest forgotten first).
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX_ENTRIES = 4096


class VerifiedTokens:
    """Tokens verified lately, by a digest of the token: verifying a JWT (a signature, a JSON
    payload, the claims) was a measurable share of each request's cost, and a client sends the
    same token with every request.

    Only a token that passed every check is kept, with the Principal it gave; a refused one is
    verified again each time it is presented. An entry is used only until the token's `exp` (as
    PyJWT applies it: with the configured leeway) and for at most VERIFIED_TTL_SECONDS, so that
    a key taken out of a JWKS stops being honoured within a minute, as without the cache within
    the JWKS client's own key cache. Revocation is not cached: the deny-list is checked on every
    request, after this (`core/credentials.py`)."""

    def __init__(self, leeway: float) -> None:
        self._leeway = leeway
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.blake2b(token.encode(), digest_size=20).digest()

    def get(self, digest: bytes, now: float) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        until, principal = entry
        if now >= until:
            del self._entries[digest]
            return None
        return principal

    def put(self, digest: bytes, principal: Principal, now: float) -> None:
        expires = float(int(principal.claims["exp"])) + self._leeway  # as PyJWT checks it
        until = min(expires, now + VERIFIED_TTL_SECONDS)
        if until <= now:
            return
        if len(self._entries) >= VERIFIED_MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = (until, principal)


class TokenVerifier:
    """Verifies bearer tokens against the configured keys. One instance per app."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._verified = VerifiedTokens(settings.jwt_leeway_seconds)
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
        limit = self._settings.jwt_max_token_bytes
        if not token.isascii():
            raise AuthError("malformed", "malformed token: a JWT is ASCII (base64url and dots)")
        if len(token) > limit:
            raise AuthError("malformed", f"token is longer than {limit} bytes "
                                         f"(JWT_MAX_TOKEN_BYTES)")
        digest, now = self._verified.digest(token), time.time()
        principal = self._verified.get(digest, now)
        if principal is None:
            principal = await self._verify(token)
            self._verified.put(digest, principal, now)
        return principal

    async def _verify(self, token: str) -> Principal:
        header = _unverified_header(token)
        alg = header["alg"]
        if alg not in self._algorithms:
            raise AuthError("algorithm", f"token algorithm {_quoted(alg)} is not allowed")
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
            raise AuthError("claims", f"token lacks the required claim "
                                      f"{_quoted(exc.claim)}") from exc
        except jwt.DecodeError as exc:
            # A payload that is not a JSON object, or a registered claim of the wrong type.
            raise AuthError("malformed", f"malformed token: {printable(str(exc))}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid", f"invalid token: {printable(str(exc))}") from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Whatever else the library trips over in a token is still the token's fault.
            raise AuthError("malformed", "malformed token: it cannot be decoded") from exc
        self._check_lifetime(claims)
        return _principal_from(claims, self._settings)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        longest = self._settings.jwt_max_lifetime
        if not longest:
            return
        if "iat" not in claims:
            raise AuthError("lifetime", "token has no 'iat' claim: it is required while "
                                        "JWT_MAX_LIFETIME is set, to know the token's lifetime")
        # PyJWT has checked that `exp` and `iat` are numbers.
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > longest:
            raise AuthError("lifetime", f"token lifetime ({lifetime:.0f} s from 'iat' to 'exp') "
                                        f"exceeds JWT_MAX_LIFETIME ({longest} s)")

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
                except jwt.PyJWTError as exc:
                    # The message can quote the token's `kid`.
                    raise AuthError("jwks", f"no usable key in the JWKS: "
                                            f"{printable(str(exc))}") from exc
                return signing_key.key
        raise AuthError("algorithm", f"token algorithm {alg!r} is not configured")


def _quoted(value: str) -> str:
    return repr(printable(value, QUOTED_CHARS))


def _unverified_header(token: str) -> dict[str, Any]:
    """The token's header, checked before PyJWT reads it (see the module docstring): a JSON
    object whose `alg` is a string and that asks for nothing this proxy does not implement."""
    segments = token.split(".")
    if len(segments) != 3:
        raise AuthError("malformed", f"malformed token: a JWT has 3 dot-separated segments, "
                                     f"not {len(segments)}")
    try:
        header = json.loads(base64url_decode(segments[0]))
    except (ValueError, RecursionError) as exc:
        # binascii.Error and UnicodeDecodeError are ValueErrors; a deeply nested header is a
        # RecursionError.
        raise AuthError("malformed", "malformed token: the header is not base64url-encoded "
                                     "JSON") from exc
    if not isinstance(header, dict):
        raise AuthError("malformed", f"malformed token: the header must be a JSON object, not "
                                     f"{_json_kind(header)}")
    if "alg" not in header:
        raise AuthError("algorithm", "token header has no 'alg'")
    if not isinstance(header["alg"], str):
        raise AuthError("algorithm", f"token header 'alg' must be a string, not "
                                     f"{_json_kind(header['alg'])}")
    for name in STRING_HEADER_PARAMETERS:
        if name in header and not isinstance(header[name], str):
            raise AuthError("header", f"token header '{name}' must be a string, not "
                                      f"{_json_kind(header[name])}")
    if "crit" in header:
        raise AuthError("header", "token header lists critical extensions ('crit'); this proxy "
                                  "implements none")
    if "b64" in header:
        raise AuthError("header", "token header 'b64' (an unencoded payload) is not supported")
    return header


def _principal_from(claims: dict[str, Any], settings: Settings) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 255 or not sub.isprintable():
        raise AuthError("claims", "token 'sub' must be a printable, non-empty string of at most "
                                  "255 characters")
    return Principal(sub=sub, role=role_from(claims, settings), claims=claims)


def _claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted path (`realm_access.roles`), or None where the path ends early."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def role_from(claims: dict[str, Any], settings: Settings) -> Role:
    """The role a token's claims give (`JWT_ROLE_CLAIM`, `JWT_ADMIN_ROLE`): absent, `user`; a
    string, `user` or the admin role's name and nothing else; a list of role or group names
    (what identity providers put in `roles` or `groups`), admin when the admin role's name is
    among them, else `user`."""
    name, admin = settings.jwt_role_claim, settings.jwt_admin_role
    value = _claim_at(claims, name)
    if value is None:
        return "user"
    if isinstance(value, str):
        if value == admin:
            return "admin"
        if value == "user":
            return "user"
        allowed = ["user", admin]
        raise AuthError("claims", f"token {_quoted(name)} must be one of {allowed} "
                                  f"(JWT_ROLE_CLAIM, JWT_ADMIN_ROLE)")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "admin" if admin in value else "user"
    raise AuthError("claims", f"token {_quoted(name)} must be a string or a list of strings, "
                              f"not {_json_kind(value)} (JWT_ROLE_CLAIM)")


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
