"""Tokens an attacker can send, as tables of (case, factory, the 401 reason): shared by the HTTP
tests (the fast tier) and the WebSocket tests (a real server). Every token is minted by the
test that sends it (a factory per case), never at import time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.tokens import SECRET, make_token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(header: object, payload: object = None, key: str | bytes = SECRET) -> str:
    """A token whose header (and payload) are exactly what the test says, HMAC-signed with `key`
    by hand, so that PyJWT's encoder cannot tidy up what an attacker would send. Bytes are sent
    as they are; anything else is JSON-encoded. The default payload is a valid user's."""
    def segment(value: object) -> str:
        return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())

    if payload is None:
        payload = {"sub": "mallory", "role": "user", "exp": int(time.time()) + 600}
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(key if isinstance(key, bytes) else key.encode(), signing_input.encode(),
                   hashlib.sha256)
    return f"{signing_input}.{b64url(mac.digest())}"


def unsigned_none_token() -> str:
    claims = {"sub": "x", "role": "admin", "exp": int(time.time()) + 600}
    return hs256_token({"alg": "none", "typ": "JWT"}, claims).rsplit(".", 1)[0] + "."


def hs256_header(header: object) -> Callable[[], str]:
    return lambda: hs256_token(header)


# What an attacker can put in a token's header without knowing any key (the signature is good
# here, so that the header alone is at fault).
MALFORMED_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("kid is a number", hs256_header({"alg": "HS256", "kid": 123}), "header"),
    ("kid is an object", hs256_header({"alg": "HS256", "kid": {"a": 1}}), "header"),
    ("kid is a list", hs256_header({"alg": "HS256", "kid": [1]}), "header"),
    ("kid is null", hs256_header({"alg": "HS256", "kid": None}), "header"),
    ("typ is a number", hs256_header({"alg": "HS256", "typ": 1}), "header"),
    ("typ is an object", hs256_header({"alg": "HS256", "typ": {"JWT": True}}), "header"),
    ("cty is a list", hs256_header({"alg": "HS256", "cty": ["JWT"]}), "header"),
    ("alg is a number", hs256_header({"alg": 256}), "algorithm"),
    ("alg is an object", hs256_header({"alg": {"HS256": True}}), "algorithm"),
    ("alg is a list", hs256_header({"alg": ["HS256"]}), "algorithm"),
    ("alg is missing", hs256_header({"typ": "JWT"}), "algorithm"),
    ("alg is long", hs256_header({"alg": "HS256" * 1000}), "algorithm"),
    ("crit is a string", hs256_header({"alg": "HS256", "crit": "b64"}), "header"),
    ("crit is empty", hs256_header({"alg": "HS256", "crit": []}), "header"),
    ("crit lists a number", hs256_header({"alg": "HS256", "crit": [1]}), "header"),
    ("crit names an unknown extension",
     hs256_header({"alg": "HS256", "crit": ["urn:x"], "urn:x": 1}), "header"),
    ("crit names an absent extension", hs256_header({"alg": "HS256", "crit": ["exp2"]}),
     "header"),
    ("crit names b64", hs256_header({"alg": "HS256", "crit": ["b64"], "b64": True}), "header"),
    ("crit holds a newline",
     hs256_header({"alg": "HS256", "crit": ["x\nERROR:    forged line"]}), "header"),
    ("b64 without crit", hs256_header({"alg": "HS256", "b64": False}), "header"),
    ("header is not JSON", hs256_header(b"{alg: HS256}"), "malformed"),
    ("header is a JSON list", hs256_header(b'["HS256"]'), "malformed"),
    ("header is a JSON string", hs256_header(b'"HS256"'), "malformed"),
    ("header is not UTF-8", hs256_header(b"\xff\xfe\xfd"), "malformed"),
    ("header is nested deeply",
     hs256_header(b'{"alg": "HS256", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"), "malformed"),
    ("header is huge", hs256_header({"alg": "HS256", "x": "A" * 9_000}), "malformed"),
    ("header is not base64", lambda: "@@@." + hs256_token({"alg": "HS256"}).split(".", 1)[1],
     "malformed"),
    ("two segments", lambda: hs256_token({"alg": "HS256"}).rsplit(".", 1)[0], "malformed"),
    ("payload is nested deeply",
     lambda: hs256_token({"alg": "HS256"}, b"[" * 3000 + b"]" * 3000), "malformed"),
    ("payload is not an object", lambda: hs256_token({"alg": "HS256"}, b"[1]"), "malformed"),
    ("exp is infinite", lambda: hs256_token({"alg": "HS256"}, b'{"sub": "m", "exp": 1e999}'),
     "malformed"),
]


# -- the attack set's tokens (test_attack_set.py and fast/test_attack_set.py) --------------------

def attack_claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "mallory", "role": "user", "iat": now, "exp": now + 600, **extra}


def forged(header: object, claims: dict[str, Any] | None = None,
           signature: bytes = b"sig") -> str:
    """A token with any header at all, signed with nothing the proxy trusts."""
    head = json.dumps(header).encode() if not isinstance(header, bytes) else header
    body = json.dumps(claims or attack_claims()).encode()
    return f"{b64url(head)}.{b64url(body)}.{b64url(signature)}"


def hs256_attack(headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """Signed with the proxy's real secret: only the header or a claim is hostile. Signed by
    hand, because PyJWT refuses to write some of these headers (a non-string `kid`)."""
    return hs256_token({"alg": "HS256", "typ": "JWT", **(headers or {})}, attack_claims(**claims))


def rsa_public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def hs256_with_public_key_as_secret() -> str:
    """The HS/RS confusion: an HMAC token keyed with a public key."""
    return hs256_token({"alg": "HS256", "typ": "JWT"}, attack_claims(role="admin"),
                       key=rsa_public_pem())


BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("alg none", lambda: forged({"alg": "none", "typ": "JWT"}, attack_claims(role="admin"), b""),
     "algorithm"),
    ("alg as a list", lambda: forged({"alg": ["HS256"]}), "algorithm"),
    ("HS256 keyed with a public key", hs256_with_public_key_as_secret, "signature"),
    ("RS256 when only HS256 is allowed", lambda: forged({"alg": "RS256"}), "algorithm"),
    ("expired", lambda: make_token("mallory", ttl=-600), "expired"),
    ("signed with another secret", lambda: make_token(secret="x" * 64), "signature"),
    ("kid is a number", lambda: hs256_attack({"kid": 123}), "header"),
    ("kid is an object", lambda: hs256_attack({"kid": {"path": "/etc/passwd"}}), "header"),
    ("crit extension", lambda: hs256_attack({"crit": ["exp"]}), "header"),
    ("crit forging a log line", lambda: hs256_attack({"crit": ["x\nFORGED-LOG-LINE"]}), "header"),
    ("header is not JSON", lambda: f"{b64url(b'{nope')}.{b64url(b'{}')}.{b64url(b'x')}",
     "malformed"),
    ("header is a list", lambda: forged([1, 2]), "malformed"),
    ("payload is not an object", lambda: jwt.api_jws.encode(b"[1]", SECRET, algorithm="HS256"),
     "malformed"),
    ("role escalation", lambda: hs256_attack(role="superadmin"), "claims"),
    ("sub with a newline", lambda: hs256_attack(sub="alice\nadmin"), "claims"),
    ("no sub", lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
     "claims"),
    ("far too long", lambda: hs256_attack(pad="p" * 9000), "malformed"),
    ("not ASCII", lambda: "\u00e9" * 40, "malformed"),
]
