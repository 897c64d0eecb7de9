"""The proxy's client for Redis (limits, concurrency slots, the response cache).

redis-py's default pool raises MaxConnectionsError the moment all its connections are in use:
under load that turned rate checks into false 503s ("rate limiter unavailable") and left slot
releases undone. Here every client has a bounded *blocking* pool instead: at most
PROXY_REDIS_MAX_CONNECTIONS connections, and a command that finds them all busy waits up to
PROXY_REDIS_POOL_TIMEOUT_SECONDS for one before it fails.

A connection that broke while it sat in the pool (Redis restarted, a network cut) is only found
out when it is next used: a command that fails to connect or finds its connection reset is
retried twice on a new connection, quickly, instead of failing a request or a slot release
for a connection that is merely stale. A command that times out is not retried: Redis is slow
or unreachable, and asking again would only double the wait.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.core.settings import Settings

# A Redis that does not answer within this long is treated as unreachable.
SOCKET_TIMEOUT_SECONDS = 2


def redis_client(settings: Settings) -> Redis:
    """A client on a pool of its own, which it closes with itself (`aclose`)."""
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.proxy_redis_max_connections,
        timeout=settings.proxy_redis_pool_timeout_seconds,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2,
                    supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)
