"""Ollama's admission rule for generations: N slots, a bounded FIFO queue, 503 beyond it.

A plain asyncio.Semaphore cannot be resized at runtime (`POST /__sim__/config` may change
`num_parallel`) and cannot tell how many are waiting, which the 503 decision needs; hence this
small gate.
"""

from __future__ import annotations

import asyncio
from collections import deque

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class QueueFull(Exception):
    """More than `max_queue` generations are already waiting for a slot."""

    def __init__(self) -> None:
        super().__init__(QUEUE_FULL_MESSAGE)


class SlotGate:
    """At most `num_parallel` holders at once; up to `max_queue` waiters, served in order."""

    def __init__(self, num_parallel: int, max_queue: int) -> None:
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def resize(self, num_parallel: int, max_queue: int) -> None:
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self._hand_over()

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed. Raises `QueueFull` without waiting."""
        if self.active < self.num_parallel and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over in the same tick the waiter was cancelled:
                # pass it on, or it would be lost for good.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.active < self.num_parallel:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)
