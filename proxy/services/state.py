"""What lives for the whole life of the app: created in the lifespan, closed at shutdown.

It holds objects of every layer below the routes (the upstream client, the audit writer, the
template runner), so it lives here, in the layer that may import all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from proxy.audit.writer import AuditWriter
from proxy.core.cache import ResponseCache
from proxy.core.credentials import CredentialVerifier
from proxy.core.db import create_engine, session_factory
from proxy.core.metrics import ProxyMetrics
from proxy.core.model_names import KnownModels
from proxy.core.ratelimit import Limiter
from proxy.core.settings import Settings
from proxy.services.budgets import Budgets, day_token_totals
from proxy.services.context_lengths import ContextLengths
from proxy.services.template_runner import TemplateRunner
from proxy.upstream.router import Router


@dataclass
class AppState:
    settings: Settings
    upstream: Router
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    verifier: CredentialVerifier
    metrics: ProxyMetrics
    limiter: Limiter
    audit: AuditWriter
    cache: ResponseCache
    templates: TemplateRunner
    budgets: Budgets
    # True after a start without the database, until its schema is migrated.
    migrations_pending: bool = False
    known_models: KnownModels = field(default_factory=KnownModels)
    context_lengths: ContextLengths = field(default_factory=ContextLengths)

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = create_engine(settings)
        metrics = ProxyMetrics()
        sessions = session_factory(engine)
        limiter = Limiter(settings, metrics)
        # The day token windows are rebuilt from the audit log after a Redis loss.
        limiter.tokens.day_totals = partial(day_token_totals, sessions)
        return cls(
            settings=settings,
            upstream=Router(settings, metrics),
            engine=engine,
            sessions=sessions,
            verifier=CredentialVerifier(settings, sessions),
            metrics=metrics,
            limiter=limiter,
            audit=AuditWriter(engine, settings, metrics),
            cache=ResponseCache(settings, metrics),
            templates=TemplateRunner(settings),
            budgets=Budgets(settings, sessions, limiter, metrics),
        )

    async def aclose(self) -> None:
        await self.verifier.aclose()
        await self.audit.close()
        await self.upstream.aclose()
        await self.limiter.aclose()
        await self.cache.aclose()
        await self.templates.aclose()
        await self.engine.dispose()
