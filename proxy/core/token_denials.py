"""The JWT deny-list: tokens refused although their signature and `exp` are good.

An entry names one token by its `jti`, or every token of a subject issued (`iat`) before a
time. Entries live in the database (`token_denials`), the source of truth every replica shares.
Each process holds them all in memory, reloaded every PROXY_REVOCATION_REFRESH_SECONDS (at most
1 s) by a background task, so checking a token costs no database round trip and a denial made
on any replica is in force on every replica within that long (on the one that made it, at once).

While the database cannot be reached, the last list loaded stays in force: tokens keep working
through an outage, as they did before the list existed, and a denial made meanwhile takes
effect once this process reads the database again. Entries past their `expires_at` (when no
token they match can still be valid) are not loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.models import TokenDenial
from proxy.core.security import AuthError

log = logging.getLogger("proxy.denials")


class DenyList:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], refresh_seconds: float
                 ) -> None:
        self._sessions = sessions
        self._refresh_seconds = refresh_seconds
        self._jtis: set[str] = set()
        # subject -> the latest "issued before" among its entries, epoch seconds.
        self._issued_before: dict[str, float] = {}
        self._failing = False
        # When the last successful load began (time.monotonic()): entries made before it are in
        # force here.
        self.loaded_at = float("-inf")

    def check(self, claims: dict[str, Any]) -> None:
        """Raise AuthError if the deny-list refuses a token with these (verified) claims."""
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self._jtis:
            raise AuthError("denied", "token has been revoked")
        before = self._issued_before.get(str(claims.get("sub")))
        if before is not None:
            issued = claims.get("iat")
            # Without `iat` a token cannot show it was issued after the cut-off.
            if not isinstance(issued, int | float) or issued < before:
                raise AuthError("denied", "token was revoked: tokens of this user issued "
                                          "before " + datetime.fromtimestamp(before, UTC)
                                          .isoformat() + " are refused")

    async def refresh(self) -> None:
        """Reload every entry still in force from the database."""
        started = time.monotonic()
        now = datetime.now(UTC)
        async with self._sessions() as session:
            rows = (await session.execute(
                select(TokenDenial.jti, TokenDenial.subject, TokenDenial.issued_before)
                .where(or_(TokenDenial.expires_at.is_(None), TokenDenial.expires_at > now))
            )).all()
        jtis: set[str] = set()
        issued_before: dict[str, float] = {}
        for jti, subject, before in rows:
            if jti is not None:
                jtis.add(jti)
            if subject is not None and before is not None:
                issued_before[subject] = max(before.timestamp(),
                                             issued_before.get(subject, 0.0))
        self._jtis, self._issued_before = jtis, issued_before
        self.loaded_at = max(self.loaded_at, started)

    async def keep_fresh(self) -> None:
        """Reload forever, every refresh interval (the app's lifespan runs it as a task)."""
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
                if self._failing:
                    log.info("the JWT deny-list is read from the database again")
                self._failing = False
            except Exception as exc:  # the database is down or not migrated yet: keep the last
                if not self._failing:
                    log.warning("the JWT deny-list cannot be read (%s); the last one loaded "
                                "stays in force until it can", type(exc).__name__)
                self._failing = True
            await asyncio.sleep(max(0.0, self._refresh_seconds
                                    - (time.monotonic() - started)))
