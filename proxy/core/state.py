"""What lives for the whole life of the app: created in the lifespan, closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from proxy.audit.writer import AuditWriter
from proxy.core.cache import ResponseCache
from proxy.core.db import create_engine, session_factory
from proxy.core.metrics import ProxyMetrics
from proxy.core.ratelimit import Limiter
from proxy.core.security import TokenVerifier
from proxy.core.settings import Settings
from proxy.services.context_lengths import ContextLengths
from proxy.services.template_runner import TemplateRunner
from proxy.upstream.ollama import OllamaClient

# Paths used as metric labels before routing has happened (e.g. a 413); anything else is
# "unmatched", so a scanner cannot create label values.
STATIC_ROUTES = frozenset({
    "/api/llm/generate", "/api/llm/chat", "/api/llm/models", "/api/llm/conversations",
    "/api/llm/ws", "/api/admin/models/pull", "/api/admin/usage", "/api/admin/costs",
    "/api/admin/audit", "/api/admin/templates",
})


def full_model_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class KnownModels:
    """The model names upstream had at the last look: the bound on the `model` label."""

    names: set[str] = field(default_factory=set)

    def update(self, names: list[str]) -> None:
        self.names = {full_model_name(n) for n in names}

    def contains(self, name: str) -> bool:
        return full_model_name(name) in self.names


@dataclass
class AppState:
    settings: Settings
    upstream: OllamaClient
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    verifier: TokenVerifier
    metrics: ProxyMetrics
    limiter: Limiter
    audit: AuditWriter
    cache: ResponseCache
    templates: TemplateRunner
    known_models: KnownModels = field(default_factory=KnownModels)
    context_lengths: ContextLengths = field(default_factory=ContextLengths)

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = create_engine(settings)
        metrics = ProxyMetrics()
        return cls(
            settings=settings,
            upstream=OllamaClient(settings),
            engine=engine,
            sessions=session_factory(engine),
            verifier=TokenVerifier(settings),
            metrics=metrics,
            limiter=Limiter(settings, metrics),
            audit=AuditWriter(engine, settings, metrics),
            cache=ResponseCache(settings, metrics),
            templates=TemplateRunner(settings),
        )

    @staticmethod
    def route_label(path: str) -> str:
        return path if path in STATIC_ROUTES else "unmatched"

    async def aclose(self) -> None:
        await self.audit.close()
        await self.upstream.aclose()
        await self.limiter.aclose()
        await self.cache.aclose()
        await self.templates.aclose()
        await self.engine.dispose()
