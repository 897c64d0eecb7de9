"""Every credential a caller can present, verified in one place: a JWT (`core/security.py`),
refused if the deny-list names it (`core/token_denials.py`), or a proxy-managed API key
(`core/api_keys.py`, recognised by its `sk-llm-` prefix). Every route, the early token check,
the WebSocket and the status page call `verify`, so a key works wherever a token does."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.api_keys import ApiKeyVerifier, is_api_key
from proxy.core.security import Principal, TokenVerifier
from proxy.core.settings import Settings
from proxy.core.token_denials import DenyList


class CredentialVerifier:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        refresh = settings.proxy_revocation_refresh_seconds
        self.tokens = TokenVerifier(settings)
        self.keys = ApiKeyVerifier(sessions, refresh)
        self.denials = DenyList(sessions, refresh)
        self._refresher: asyncio.Task[None] | None = None

    async def verify(self, credential: str | None) -> Principal:
        if credential and is_api_key(credential):
            return await self.keys.verify(credential)
        principal = await self.tokens.verify(credential)
        self.denials.check(principal.claims)
        return principal

    def start(self) -> None:
        """Keep the deny-list current for as long as the app runs."""
        self._refresher = asyncio.create_task(self.denials.keep_fresh(), name="deny-list")

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.keys.aclose()
