"""Response cache for deterministic, non-streamed generations.

Only requests whose answer is fixed by their input are cached: temperature 0, or a fixed seed.
The key is a SHA-256 of the model, the prompt or messages, and the options, and of the user the
answer was made for: an entry answers only that user, so nobody learns from `X-Cache: HIT` (or
from an answer's speed) what someone else asked. `PROXY_CACHE_SHARED=true` drops the user from
the key, for deployments whose users may see each other's prompts. Redis when
`REDIS_URL` is set (shared by replicas), else a bounded in-process LRU. A cache that fails is a
miss, never a failed request. Streams are never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from proxy.core.metrics import ProxyMetrics
from proxy.core.redis_client import redis_client
from proxy.core.settings import Settings

log = logging.getLogger("proxy.cache")


def is_deterministic(payload: dict[str, Any]) -> bool:
    options = payload.get("options") or {}
    seed = options.get("seed")
    return options.get("temperature") == 0 or (isinstance(seed, int) and seed >= 0)


def cache_key(payload: dict[str, Any], user: str | None) -> str:
    """The key of a request's answer; `user` None for an entry every user may be answered from.

    Everything sent upstream but `stream` is in it (tools, `format`, `think`, images too): two
    requests share an answer only if Ollama was asked exactly the same. Entries are
    dialect-neutral (the generation, not a response body), so a question asked through `/v1`
    may be answered from what `/ollama` stored, each in its own shape.
    """
    material = {k: v for k, v in payload.items() if k != "stream"}
    material["user"] = user
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"llm-proxy:cache:v2:{digest}"


class ResponseCache:
    def __init__(self, settings: Settings, metrics: ProxyMetrics) -> None:
        self.ttl = settings.proxy_cache_ttl_seconds
        self._metrics = metrics
        self._max = settings.proxy_cache_max_entries
        self._memory: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._redis = redis_client(settings) if settings.redis_url else None

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def get(self, key: str) -> dict[str, Any] | None:
        raw: str | bytes | None = None
        if self._redis is not None:
            try:
                raw = await self._redis.get(key)
            except Exception as exc:
                log.warning("cache read failed (%s); treating as a miss", exc)
        else:
            entry = self._memory.get(key)
            if entry is not None and entry[0] > time.monotonic():
                self._memory.move_to_end(key)
                raw = entry[1]
            elif entry is not None:
                del self._memory[key]
        self._metrics.cache.labels(result="hit" if raw is not None else "miss").inc()
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    async def put(self, key: str, value: dict[str, Any]) -> None:
        raw = json.dumps(value)
        if self._redis is not None:
            try:
                await self._redis.set(key, raw, ex=self.ttl)
            except Exception as exc:
                log.warning("cache write failed (%s)", exc)
            return
        self._memory[key] = (time.monotonic() + self.ttl, raw)
        self._memory.move_to_end(key)
        while len(self._memory) > self._max:
            self._memory.popitem(last=False)
