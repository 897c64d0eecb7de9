"""What lives for the whole life of the app: created in the lifespan, closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from proxy.core.db import create_engine, session_factory
from proxy.core.security import TokenVerifier
from proxy.core.settings import Settings
from proxy.upstream.ollama import OllamaClient


@dataclass
class AppState:
    settings: Settings
    upstream: OllamaClient
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    verifier: TokenVerifier

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = create_engine(settings)
        return cls(
            settings=settings,
            upstream=OllamaClient(settings),
            engine=engine,
            sessions=session_factory(engine),
            verifier=TokenVerifier(settings),
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.engine.dispose()
