"""Admitting a generation through Redis in one round trip: its rate windows counted and its
concurrency slots taken by one Lua script.

Each call to Redis costs the proxy a round trip and redis-py's own work (measured here, about
0.15 ms), and admitting a generation took three: the rate window's hit and its figures for the
`X-RateLimit-*` headers (`limits` asks for them separately), then the slot. One script does all
of it, atomically across replicas:

1. **Rate windows**, in the layout of `limits`' moving window (a list of hit times under
   `LIMITS:<limits' key>`, newest first, trimmed to the limit), so that replicas still running
   `limits` itself share the same windows. If any window is full the request is refused and
   counted in none. Otherwise it is counted in each, and each window's count and oldest hit
   come back for the headers.
2. **Concurrency slots**, exactly as `core/slots.py`'s own script takes one (a sorted set of
   leases scored by when they run out), for each set the request needs (the user's, and the
   API key's when it has a cap). If one is full, those already taken in this call are given
   back, and the wait until its earliest lease runs out comes back; the rate hits stay counted,
   as a request refused for concurrency always was.

Times are Redis's own clock (`TIME`), for the windows as for the leases: replicas need not agree
on the time.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS: the rate windows, then the slot sets. ARGV: how many rate windows, the lease, the slot
# name, then each window's limit and length in seconds, then each slot set's cap.
# -> {1, count, oldest, count, oldest, ...} admitted: each window's hits and its oldest hit;
#    {2, i, count, oldest} refused by window i; {3, j, ms} refused by slot set j, ms until its
#    earliest lease runs out.
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local windows = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local slot = ARGV[3]

local function hits(key, limit, length)
  -- Newest first: the last entry still inside the window, by binary search over what the
  -- list holds (at most the limit).
  local horizon = now - length
  local low, high, last = 0, math.min(limit, redis.call('LLEN', key)) - 1, nil
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local at = tonumber(redis.call('LINDEX', key, mid))
    if at and at >= horizon then
      last = mid
      low = mid + 1
    else
      high = mid - 1
    end
  end
  if last == nil then
    return 0, now
  end
  return last + 1, tonumber(redis.call('LINDEX', key, last))
end

local counts, oldest = {}, {}
for i = 1, windows do
  local limit, length = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  counts[i], oldest[i] = hits(KEYS[i], limit, length)
  if counts[i] >= limit then
    return {2, i, counts[i], tostring(oldest[i])}
  end
end
local admitted = {1}
for i = 1, windows do
  local limit, length = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  redis.call('LPUSH', KEYS[i], tostring(now))
  redis.call('LTRIM', KEYS[i], 0, limit - 1)
  redis.call('EXPIRE', KEYS[i], length)
  -- One more hit; the oldest one in the window is still there (the list keeps `limit`).
  admitted[#admitted + 1] = counts[i] + 1
  admitted[#admitted + 1] = tostring(oldest[i])
end
for j = 1, #KEYS - windows do
  local key, cap = KEYS[windows + j], tonumber(ARGV[3 + 2 * windows + j])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= cap then
    for k = 1, j - 1 do
      redis.call('ZREM', KEYS[windows + k], slot)
    end
    local earliest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #earliest == 0 then
      return {3, j, math.ceil(lease * 1000)}
    end
    return {3, j, math.ceil((tonumber(earliest[2]) - now) * 1000)}
  end
  redis.call('ZADD', key, now + lease, slot)
  redis.call('PEXPIRE', key, math.ceil(lease * 1000) + 60000)
end
return admitted
"""

# `limits`' prefix for its Redis keys (its RedisStorage.PREFIX).
LIMITS_PREFIX = "LIMITS"


def window_key(limits_key: str) -> str:
    """The Redis key under which `limits` keeps the moving window it names `limits_key`."""
    return f"{LIMITS_PREFIX}:{limits_key}"


@dataclass(frozen=True)
class Window:
    key: str  # limits' key (RateLimitItem.key_for), unprefixed
    limit: int
    seconds: int


@dataclass(frozen=True)
class WindowFigures:
    hits: int  # in the window, this request's included when admitted
    oldest: float  # epoch seconds (Redis's clock) of the oldest hit in it


@dataclass(frozen=True)
class Outcome:
    """Admitted (`windows`: each window's figures, in order), or refused by window
    `refused_window` (`windows` holds its figures alone), or by slot set `refused_slots` with
    `wait` seconds until its earliest lease runs out."""

    windows: list[WindowFigures]
    refused_window: int | None = None
    refused_slots: int | None = None
    wait: float = 0.0


class SharedAdmission:
    def __init__(self, redis: Redis, lease_seconds: float) -> None:
        self._script = redis.register_script(ADMIT_SCRIPT)
        self._lease = lease_seconds

    async def admit(self, windows: list[Window], slot_sets: list[tuple[str, int]], slot: str
                    ) -> Outcome:
        """Count a request in `windows` and take `slot` in each of `slot_sets` (key, cap)."""
        args: list[str | int | float] = [len(windows), self._lease, slot]
        for window in windows:
            args += [window.limit, window.seconds]
        args += [cap for _, cap in slot_sets]
        keys = [window_key(w.key) for w in windows] + [key for key, _ in slot_sets]
        reply = await self._script(keys=keys, args=args)
        kind = int(reply[0])
        if kind == 1:
            pairs = reply[1:]
            return Outcome([WindowFigures(int(pairs[i]), float(pairs[i + 1]))
                            for i in range(0, len(pairs), 2)])
        if kind == 2:
            return Outcome([WindowFigures(int(reply[2]), float(reply[3]))],
                           refused_window=int(reply[1]) - 1)
        return Outcome([], refused_slots=int(reply[1]) - 1, wait=max(0.0, int(reply[2]) / 1000))
