"""Several engines behind one gateway: which upstream serves a request, and which may not.

Upstreams come from PROXY_UPSTREAMS_FILE (YAML, see `RoutingConfig`) or PROXY_UPSTREAMS (the
same document in the variable itself, as the deployments pass it), or else one Ollama at
OLLAMA_URL. The router has the Ollama client's interface, so the rest of the proxy does not know
how many engines there are:

- **Choice.** Among the healthy upstreams that serve the model, a weighted random pick, each
  weight divided by 1 + the upstream's requests in flight: traffic follows the weights, and a
  busy upstream gets less until it catches up.
- **Aliases and fallbacks.** `aliases: {chat: llama3.2}` names a model by its use; `fallbacks:
  {mistral: [llama3.2]}` answers with the next model when no healthy upstream serves the first.
- **Health.** A probe (`/api/tags` or `/v1/models`) every PROXY_UPSTREAM_PROBE_SECONDS marks an
  upstream healthy or not and refreshes the models it serves when they are not listed.
  PROXY_UPSTREAM_EJECT_AFTER consecutive failures eject it for PROXY_UPSTREAM_COOLDOWN_SECONDS;
  after that only a successful probe lets it back. The last upstream in rotation is never
  ejected: with nowhere else to go, that would only refuse what it might still answer.
- **Retry.** A generation that fails before its first chunk (connection refused, reset, 5xx,
  busy) is retried once on another upstream; one that fails after it has started ends with the
  dialect's error chunk, never a silent truncation (the relay sees the failure).
- A model no healthy upstream serves: 503 with Retry-After, naming the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxy.core.errors import (
    ModelNotFound,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from proxy.core.metrics import ProxyMetrics
from proxy.core.model_names import full_model_name
from proxy.core.redact import redact_secrets
from proxy.core.settings import Settings, SettingsError
from proxy.upstream.ollama import OllamaClient
from proxy.upstream.openai import OpenAIEngine

log = logging.getLogger("proxy.upstream")


class Engine(Protocol):
    @property
    def base_url(self) -> str: ...

    async def aclose(self) -> None: ...
    async def tags(self) -> list[dict[str, Any]]: ...
    async def version(self) -> str: ...
    async def request_json(self, method: str, path: str, payload: dict[str, Any] | None = None,
                           model: str | None = None) -> Any: ...
    def stream_lines(self, path: str, payload: dict[str, Any],
                     model: str | None) -> AsyncGenerator[dict[str, Any]]: ...
    async def complete(self, path: str, payload: dict[str, Any],
                       model: str | None) -> dict[str, Any]: ...


class UpstreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    kind: Literal["ollama", "openai"] = "ollama"
    url: str = Field(..., pattern=r"^https?://")
    weight: float = Field(1.0, gt=0, le=1000)
    models: list[str] | None = Field(None, description="Served models; unset: discovered.")
    api_key_env: str | None = Field(None, description="Variable holding the engine's API key.")
    api_key_file: Path | None = Field(None, description="File holding the engine's API key.")

    def api_key(self) -> str | None:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise SettingsError(f"upstream {self.name}: {self.api_key_env} is not set")
            return value
        if self.api_key_file:
            return self.api_key_file.read_text().strip()
        return None


class RoutingConfig(BaseModel):
    """PROXY_UPSTREAMS_FILE or PROXY_UPSTREAMS. Credentials are never in it: `api_key_env` /
    `api_key_file` name where they are."""

    model_config = ConfigDict(extra="forbid")

    upstreams: list[UpstreamConfig] = Field(..., min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> RoutingConfig:
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        return self

    @classmethod
    def load(cls, settings: Settings) -> RoutingConfig:
        path, inline = settings.proxy_upstreams_file, settings.proxy_upstreams
        if path is not None and inline:
            raise SettingsError(
                "PROXY_UPSTREAMS and PROXY_UPSTREAMS_FILE are both set: set one of them")
        if inline:
            return cls.parse("PROXY_UPSTREAMS", inline)
        if path is None:
            return cls(upstreams=[UpstreamConfig(name="ollama", url=settings.ollama_url)])
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SettingsError(f"PROXY_UPSTREAMS_FILE: cannot read {path}: {exc}") from exc
        return cls.parse(f"PROXY_UPSTREAMS_FILE ({path})", text)

    @classmethod
    def parse(cls, where: str, text: str) -> RoutingConfig:
        """The document in `text` (YAML, so JSON too); SettingsError naming `where` if invalid."""
        try:
            return cls.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise SettingsError(f"{where}: {exc}") from exc


@dataclass
class Upstream:
    config: UpstreamConfig
    engine: Engine
    models: set[str] = field(default_factory=set)  # listed, or as discovered by the last probe
    healthy: bool = True
    in_flight: int = 0
    failures: int = 0
    ejected_until: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def serves(self, model: str) -> bool:
        return full_model_name(model) in self.models

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now


# Failures that say the upstream is unwell (not that the request was wrong).
def _upstream_fault(exc: UpstreamError) -> bool:
    return not isinstance(exc, ModelNotFound | UpstreamRejected)


class Router:
    def __init__(self, settings: Settings, metrics: ProxyMetrics,
                 config: RoutingConfig | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.config = config or RoutingConfig.load(settings)
        self.aliases = {full_model_name(k): v for k, v in self.config.aliases.items()}
        self.fallbacks = {full_model_name(k): v for k, v in self.config.fallbacks.items()}
        self.upstreams = [Upstream(c, self._engine(c),
                                   {full_model_name(m) for m in c.models or []})
                          for c in self.config.upstreams]

    def _engine(self, config: UpstreamConfig) -> Engine:
        if config.kind == "openai":
            return OpenAIEngine(self.settings, config.url, config.api_key())
        return OllamaClient(self.settings, base_url=config.url)

    @property
    def base_url(self) -> str:
        return ", ".join(redact_secrets(u.engine.base_url) for u in self.upstreams)

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.engine.aclose()

    # -- health -------------------------------------------------------------------------------

    async def probe(self, upstream: Upstream) -> None:
        gauge = self.metrics.upstream_healthy.labels(upstream=upstream.name)
        if upstream.ejected_until > time.monotonic():
            return  # cooling down: not even a good probe lets it back yet
        try:
            tags = await upstream.engine.tags()
        except UpstreamError as exc:
            upstream.healthy = False
            gauge.set(0)
            log.warning("upstream %s failed its probe: %s", upstream.name, exc.message)
            return
        if upstream.config.models is None:
            upstream.models = {full_model_name(str(t.get("name", ""))) for t in tags}
        if not upstream.healthy or upstream.ejected_until:
            log.info("upstream %s is healthy again", upstream.name)
        upstream.healthy, upstream.failures, upstream.ejected_until = True, 0, 0.0
        gauge.set(1)

    async def probe_all(self) -> bool:
        await asyncio.gather(*(self.probe(u) for u in self.upstreams))
        return any(u.healthy for u in self.upstreams)

    def in_rotation(self) -> bool:
        """Whether any engine is healthy and not ejected, as the last probes and calls left it."""
        now = time.monotonic()
        return any(u.available(now) for u in self.upstreams)

    def _failed(self, upstream: Upstream, exc: UpstreamError) -> None:
        self.metrics.upstream_failures.labels(upstream=upstream.name).inc()
        upstream.failures += 1
        now = time.monotonic()
        # Never the last one in rotation: with nowhere else to go, ejecting it only refuses
        # requests it might still have answered.
        others = [u for u in self.upstreams if u is not upstream and u.available(now)]
        if upstream.failures >= self.settings.proxy_upstream_eject_after and others and \
                upstream.ejected_until <= now:
            upstream.ejected_until = time.monotonic() + \
                self.settings.proxy_upstream_cooldown_seconds
            upstream.healthy = False  # back only through a successful probe
            self.metrics.upstream_ejections.labels(upstream=upstream.name).inc()
            self.metrics.upstream_healthy.labels(upstream=upstream.name).set(0)
            log.warning("upstream %s ejected after %d failures in a row (%s)", upstream.name,
                        upstream.failures, exc.message)

    # -- choice -------------------------------------------------------------------------------

    def resolve(self, model: str) -> str:
        """The model an alias names (the name itself if it is none)."""
        return self.aliases.get(full_model_name(model), model)

    def pick(self, model: str, exclude: frozenset[str] = frozenset()) -> tuple[Upstream, str]:
        """An upstream for `model` (or its fallbacks), and the model it will be asked for."""
        now = time.monotonic()
        wanted = self.resolve(model)
        # With every upstream out of rotation, each is tried as if it were in: a probe may be
        # stale, and the engine's own failure says more than "none is healthy".
        pool = [u for u in self.upstreams if u.name not in exclude]
        in_rotation = any(u.available(now) for u in self.upstreams)
        usable = {u.name for u in pool if u.available(now) or not in_rotation}
        for candidate in [wanted, *self.fallbacks.get(full_model_name(wanted), [])]:
            choices = [u for u in pool if u.name in usable and u.serves(candidate)]
            if choices:
                return self._weighted(choices), candidate
        if any(u.serves(wanted) for u in self.upstreams):
            raise UpstreamUnavailable(f"no healthy upstream serves model '{model}'")
        # No upstream is known to serve it: one that discovers its models answers for itself
        # (the engine's own 404, or a model pulled since its last probe).
        discovering = [u for u in pool if u.name in usable and u.config.models is None]
        if discovering:
            return self._weighted(discovering), wanted
        if exclude:
            raise UpstreamUnavailable(f"no healthy upstream serves model '{model}'")
        raise ModelNotFound(model)

    @staticmethod
    def _weighted(choices: list[Upstream]) -> Upstream:
        if len(choices) == 1:
            return choices[0]
        weights = [u.config.weight / (1 + u.in_flight) for u in choices]
        return random.choices(choices, weights)[0]

    def _any(self) -> Upstream:
        now = time.monotonic()
        healthy = [u for u in self.upstreams if u.available(now)] or self.upstreams
        return healthy[0]

    # -- the Ollama client's interface --------------------------------------------------------

    async def tags(self) -> list[dict[str, Any]]:
        """What every healthy upstream serves, once per model, and the aliases."""
        seen: dict[str, dict[str, Any]] = {}
        now = time.monotonic()
        for upstream in self.upstreams:
            if not upstream.available(now):
                continue
            try:
                for entry in await upstream.engine.tags():
                    name = full_model_name(str(entry.get("name", "")))
                    if upstream.config.models is None or name in upstream.models:
                        seen.setdefault(name, entry)
            except UpstreamError as exc:
                self._failed(upstream, exc)
        if not seen and not any(u.available(now) for u in self.upstreams):
            raise UpstreamUnavailable("no upstream is healthy")
        for alias, target in self.aliases.items():
            if full_model_name(target) in seen:
                seen.setdefault(alias, {**seen[full_model_name(target)], "name": alias,
                                        "model": alias})
        return list(seen.values())

    async def version(self) -> str:
        return await self._any().engine.version()

    async def request_json(self, method: str, path: str, payload: dict[str, Any] | None = None,
                           model: str | None = None) -> Any:
        if path == "/api/ps":
            now = time.monotonic()
            answers = await asyncio.gather(*(u.engine.request_json(method, path)
                                             for u in self.upstreams if u.available(now)),
                                           return_exceptions=True)
            return {"models": [m for a in answers if isinstance(a, dict)
                               for m in a.get("models", [])]}
        if model is None or payload is None:
            return await self._any().engine.request_json(method, path, payload, model)
        upstream, target = self.pick(model)
        return await self._call(upstream, upstream.engine.request_json(
            method, path, {**payload, "model": target}, model))

    async def _call(self, upstream: Upstream, awaitable: Any) -> Any:
        upstream.in_flight += 1
        try:
            result = await awaitable
        except UpstreamError as exc:
            if _upstream_fault(exc):
                self._failed(upstream, exc)
            raise
        finally:
            upstream.in_flight -= 1
        upstream.failures = 0
        return result

    @contextmanager
    def _sending(self, upstream: Upstream) -> Iterator[None]:
        """Count one generation sent to `upstream`, in flight while the block runs."""
        in_flight = self.metrics.child(self.metrics.upstream_in_flight, upstream.name)
        self.metrics.child(self.metrics.upstream_requests, upstream.name).inc()
        upstream.in_flight += 1
        in_flight.inc()
        try:
            yield
        finally:
            upstream.in_flight -= 1
            in_flight.dec()

    def _retry_elsewhere(self, upstream: Upstream, exc: UpstreamError, started: bool,
                         tried: frozenset[str], model: str) -> frozenset[str]:
        """After `upstream` failed a generation: the upstreams tried so far, when the generation
        may go to another one (it had not started, the failure was the upstream's, it is the
        first retry, and another one serves the model); otherwise the failure is raised."""
        fault = _upstream_fault(exc)
        if fault:
            self._failed(upstream, exc)
        if started or not fault or tried:
            raise exc
        tried = tried | {upstream.name}
        try:
            self.pick(model, tried)
        except UpstreamError:
            raise exc from None
        log.warning("upstream %s failed before its first chunk (%s); retrying on another",
                    upstream.name, exc.message)
        return tried

    async def stream_lines(self, path: str, payload: dict[str, Any], model: str | None
                           ) -> AsyncGenerator[dict[str, Any]]:
        """The stream of one upstream; retried once elsewhere if it fails before its first
        object."""
        assert model is not None
        tried: frozenset[str] = frozenset()
        while True:
            upstream, target = self.pick(model, tried)
            started = False
            with self._sending(upstream):
                try:
                    # Closed here, when this generator is, not whenever it is collected.
                    async with aclosing(upstream.engine.stream_lines(
                            path, {**payload, "model": target}, model)) as objects:
                        async for obj in objects:
                            started = True
                            yield obj
                    upstream.failures = 0
                    return
                except UpstreamError as exc:
                    tried = self._retry_elsewhere(upstream, exc, started, tried, model)

    async def complete(self, path: str, payload: dict[str, Any], model: str | None
                       ) -> dict[str, Any]:
        """The whole answer of one upstream (not streamed); retried once elsewhere if it
        fails."""
        assert model is not None
        tried: frozenset[str] = frozenset()
        while True:
            upstream, target = self.pick(model, tried)
            with self._sending(upstream):
                try:
                    answer = await upstream.engine.complete(
                        path, {**payload, "model": target}, model)
                    upstream.failures = 0
                    return answer
                except UpstreamError as exc:
                    tried = self._retry_elsewhere(upstream, exc, False, tried, model)

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"name": u.name, "kind": u.config.kind, "url": redact_secrets(u.engine.base_url),
                 "healthy": u.available(now), "in_flight": u.in_flight,
                 "models": sorted(u.models), "ejected_for_seconds":
                     round(max(0.0, u.ejected_until - now), 1)}
                for u in self.upstreams]
