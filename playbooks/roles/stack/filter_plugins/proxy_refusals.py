"""What the proxy refuses to start with, checked before the stack role deploys anything.

With PROXY_ENV=production (as the stack runs it) the proxy refuses weak secrets and trusted
proxies that are not addresses; a value that passed the role would otherwise stop the container
after the deployment, with the reason only in its log. These are copies of the rules in
proxy/core/settings.py (`secret_weakness`, the PROXY_TRUSTED_PROXIES validator), so that the role
needs nothing of the proxy's code on the controller; tests/playbooks/test_stack_secrets.py and
test_stack_env.py hold each copy against the proxy's own.
"""

from __future__ import annotations

import ipaddress
import math
import zlib
from collections import Counter
from typing import Any

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me"})


def estimated_secret_bits(value: str) -> float:
    """The smaller of the entropy of the value's character frequencies and eight times its
    zlib-compressed size: low for few distinct characters and for repeats alike."""
    data = value.encode()
    counts = Counter(data)
    by_frequency = -sum(n * math.log2(n / len(data)) for n in counts.values())
    by_compression = 8 * (len(zlib.compress(data, 9)) - len(zlib.compress(b"", 9)))
    return max(0.0, min(by_frequency, by_compression))


def secret_weakness(variable: str, value: str) -> str | None:
    """Why the proxy would refuse `value` as the production secret `variable`, or None."""
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


def trusted_proxies_problem(value: str) -> str | None:
    """Why the proxy would refuse `value` as PROXY_TRUSTED_PROXIES, or None."""
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == "*":
            return ("'*' would let every client choose its address; list your reverse proxies' "
                    "addresses or networks")
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                return (f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or "
                        "172.18.0.0/16)")
            return f"{entry!r} has host bits set; did you mean {network}?"
    return None


def stack_secret_weakness(value: Any, variable: str) -> str:
    """The proxy's reason to refuse the secret, "" when it has none."""
    return secret_weakness(variable, str(value)) or ""


def stack_trusted_proxies_problem(value: Any) -> str:
    return trusted_proxies_problem(str(value)) or ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "stack_secret_weakness": stack_secret_weakness,
            "stack_trusted_proxies_problem": stack_trusted_proxies_problem,
        }
