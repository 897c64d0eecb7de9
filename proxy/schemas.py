"""Request and response models of the proxy's API; they are also its OpenAPI documentation.

Limits that depend on settings (prompt length, number of messages, num_predict cap) are checked
in `proxy.services.validation`, so that they can be configured without redefining these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Ollama model names: `name[:tag]`, optionally namespaced (`library/llama3.2`, `host/ns/name`).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,199}(:[A-Za-z0-9][A-Za-z0-9._\-]{0,127})?$"
CONTEXT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,99}$"

ModelName = Annotated[
    str, Field(pattern=MODEL_NAME_PATTERN, max_length=200,
               description="Ollama model name, `name[:tag]`.",
               examples=["llama3.2", "codellama:7b"])
]


# Options that decide how the engine uses the machine (GPU layers, threads, memory mapping):
# the operator's, never a caller's.
RESERVED_OPTIONS = frozenset({
    "numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all", "vocab_only",
    "use_mmap", "use_mlock", "embedding_only", "num_thread",
})


class GenerationOptions(BaseModel):
    """The sampling options a user may set. Anything else is refused: the operator, not the
    caller, decides how the GPU is used (`num_gpu`, `num_thread`, …)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, le=1000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float | None = Field(None, ge=0.0, le=1.0)
    tfs_z: float | None = Field(None, ge=0.0, le=10.0)
    num_predict: int | None = Field(None, ge=-1, description="-1 = until the model stops.")
    num_keep: int | None = Field(None, ge=-1, le=131072)
    seed: int | None = Field(None, ge=-1, le=2**31 - 1)
    stop: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=8
    )
    repeat_penalty: float | None = Field(None, ge=0.0, le=2.0)
    repeat_last_n: int | None = Field(None, ge=-1, le=131072)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    penalize_newline: bool | None = None
    mirostat: int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = Field(None, ge=0.0, le=20.0)
    mirostat_eta: float | None = Field(None, ge=0.0, le=1.0)
    num_ctx: int | None = Field(None, ge=256, le=131072)

    @model_validator(mode="before")
    @classmethod
    def _not_reserved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            reserved = sorted(RESERVED_OPTIONS.intersection(data))
            if reserved:
                raise ValueError(f"{', '.join(reserved)}: reserved for the operator (how the "
                                 "engine uses the GPU is set on the server)")
        return data


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    prompt: str | None = Field(None, min_length=1, description="The prompt; must not be blank. "
                                                              "Give either this or `template`.")
    template: str | None = Field(None, pattern=TEMPLATE_NAME_PATTERN,
                                 description="Name of a stored prompt template to render.")
    variables: dict[str, str | int | float | bool] | None = Field(
        None, description="Values for the template's variables.", max_length=100)
    system: str | None = Field(None, max_length=20_000)
    options: GenerationOptions | None = None
    stream: bool = Field(True, description="NDJSON stream (default) or one JSON object.")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @model_validator(mode="after")
    def _prompt_or_template(self) -> GenerateRequest:
        if (self.prompt is None) == (self.template is None):
            raise ValueError("give exactly one of `prompt` and `template`")
        if self.variables is not None and self.template is None:
            raise ValueError("`variables` needs a `template`")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=100_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    messages: list[ChatMessage] = Field(..., min_length=1)
    context_id: str | None = Field(
        None, pattern=CONTEXT_ID_PATTERN,
        description="Persist this conversation under this id, in the caller's own space of ids "
                    "(created on first use; another user's same id is another conversation); "
                    "earlier turns are sent upstream before the new messages.",
    )
    store: bool = Field(
        False, description="Without `context_id`: start a stored conversation under a random id "
                           "the server makes, returned as `context_id`.",
    )
    options: GenerationOptions | None = None
    stream: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    total_ms: float = Field(..., description="From request received to the last token.")
    first_token_ms: float | None = Field(None, description="From request received to the first "
                                                           "token (time to first token).")
    tokens_per_second: float | None = Field(None, description="Upstream generation speed.")


class StreamChunk(BaseModel):
    """One NDJSON line of a stream: one piece of the answer."""

    model: str
    response: str | None = Field(None, description="Text piece (generate).")
    message: ChatMessage | None = Field(None, description="Text piece (chat).")
    done: Literal[False] = False


class StreamDone(BaseModel):
    """The last NDJSON line of a successful stream; the non-streamed answers extend it."""

    model: str
    done: Literal[True] = True
    done_reason: str | None
    request_id: str
    context_id: str | None = None
    usage: Usage
    timings: Timings


class StreamError(BaseModel):
    """The last NDJSON line of a stream that failed after it had started (status stays 200)."""

    error: str
    status: int
    done: Literal[True] = True


class GenerateResponse(StreamDone):
    response: str


class ChatResponse(StreamDone):
    message: ChatMessage


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    input: Annotated[str, Field(max_length=1_000_000)] | list[
        Annotated[str, Field(max_length=1_000_000)]] = Field(
        ..., description="One text, or several (at most PROXY_MAX_EMBED_INPUTS).")
    dimensions: int | None = Field(None, ge=1, le=65536,
                                   description="Shorten each vector to this many dimensions.")
    truncate: bool = Field(True, description="Cut inputs longer than the model's context; "
                                             "false: such an input is an error.")


class EmbedUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]] = Field(..., description="One vector per input, in order.")
    request_id: str
    usage: EmbedUsage


class ModelInfo(BaseModel):
    name: str
    size: int | None = Field(None, description="Bytes on disk.")
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None
    modified_at: str | None = None
    digest: str | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


class Caller(BaseModel):
    """Who a credential is, as the proxy reads it."""

    user: str
    role: Literal["user", "admin"]
    api_key_id: str | None = Field(description="The API key used; absent for a JWT.")


class ConversationSummary(BaseModel):
    id: str
    model: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class StoredMessage(BaseModel):
    role: str
    content: str
    created_at: datetime


class ConversationDetail(BaseModel):
    id: str
    model: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[StoredMessage]


class ComponentStatus(BaseModel):
    ok: bool
    error: str | None = None


class UpstreamStatus(ComponentStatus):
    url: str
    version: str | None = None


class UpstreamState(BaseModel):
    """One engine behind the proxy, as the router sees it."""

    name: str
    kind: str
    url: str = Field(..., description="Without its credentials.")
    healthy: bool
    in_flight: int
    models: list[str]
    ejected_for_seconds: float = Field(..., description="> 0 while cooling down after failures.")


class StatusDetails(BaseModel):
    version: str
    upstream: UpstreamStatus = Field(..., description="`url` is shown without its credentials.")
    upstreams: list[UpstreamState] = Field(default_factory=list,
                                           description="Every engine and its state.")
    database: ComponentStatus
    redis: ComponentStatus | None = Field(None, description="Present when REDIS_URL is set.")


class StatusResponse(BaseModel):
    status: Literal["ok", "degraded"]
    failing: list[str] = Field(default_factory=list, description="Names of failing parts.")
    details: StatusDetails | None = Field(
        None, description="Versions, the upstream URL and error texts: only for a caller with an "
                          "admin token, absent from the public answer.")


class ErrorResponse(BaseModel):
    error: str
    detail: Any | None = None


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName


class ShowModelResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    details: dict[str, Any] | None = None
    parameters: str | None = None
    template: str | None = None
    capabilities: list[str] | None = None


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=TEMPLATE_NAME_PATTERN)
    template: str = Field(..., min_length=1, max_length=50_000,
                          description="Jinja2 source, rendered in a sandbox.")
    description: str = Field("", max_length=500)


class TemplateOut(TemplateIn):
    created_by: str
    created_at: datetime
    updated_at: datetime


class TemplateList(BaseModel):
    templates: list[TemplateOut]


KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
TEAM_NAME_PATTERN = r"^[a-z0-9][a-z0-9._\-]{0,63}$"


def _printable(value: str, what: str) -> str:
    if not value.strip() or not value.isprintable():
        raise ValueError(f"{what} must be printable and not blank")
    return value


class OwnKeyIn(BaseModel):
    """A new API key of the caller's own (`/api/llm/keys`): it acts as the caller, with the
    `user` role, within the limits given here as well as the caller's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100, description="To tell keys apart.")
    expires_at: datetime | None = Field(
        None, description="ISO 8601, in the future; a time without an offset is UTC. "
                          "Absent: the key does not expire.")
    allowed_models: list[ModelName] | None = Field(
        None, max_length=100, description="Only these models (name or name:tag), within "
                                          "PROXY_MODEL_ALLOWLIST. Absent: every model allowed.")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, le=1_000_000, description="Requests per minute for this key, besides its "
                                              "owner's limit. Absent: the owner's limit alone.")
    concurrency_limit: int | None = Field(
        None, ge=1, le=1000, description="Generations at once for this key, besides its "
                                         "owner's limit. Absent: the owner's limit alone.")
    token_limit_per_minute: int | None = Field(
        None, ge=1, le=1_000_000_000, description="Tokens (prompt and generated) per UTC "
        "minute for this key, besides its owner's limits. Absent: the owner's alone.")
    token_limit_per_day: int | None = Field(
        None, ge=1, le=1_000_000_000_000, description="Tokens per UTC day for this key, "
                                                      "besides its owner's limits.")

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str) -> str:
        return _printable(value, "name")


class KeyIn(OwnKeyIn):
    """A new API key made by an admin (`/api/admin/keys`), for any user."""

    owner: str | None = Field(None, min_length=1, max_length=255,
                              description="The user (`sub`) the key acts as; absent: the admin.")
    role: Literal["user", "admin"] = Field(
        "user", description="`admin` only when asked for: a key is a `user` by default.")

    @field_validator("owner")
    @classmethod
    def _owner_printable(cls, value: str | None) -> str | None:
        return None if value is None else _printable(value, "owner")


class KeyRotation(BaseModel):
    """Optional settings of a rotation: the new secret may get a new expiry."""

    model_config = ConfigDict(extra="forbid")

    expires_at: datetime | None = Field(
        None, description="A new expiry, in the future; absent: the key's expiry is kept.")


class KeyOut(BaseModel):
    """An API key as it is listed: never its secret, nor the secret's hash."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    owner: str
    name: str
    role: str
    prefix: str = Field(description="The secret's first characters, to recognise it.")
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    allowed_models: list[str] | None
    rate_limit_per_minute: int | None
    concurrency_limit: int | None
    token_limit_per_minute: int | None
    token_limit_per_day: int | None


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself (`sk-llm-…`): shown this once, never again.")


class KeyList(BaseModel):
    keys: list[KeyOut]


class TokenDenialIn(BaseModel):
    """Refuse one token (`jti`), or every token of a user (`subject`) issued before a time."""

    model_config = ConfigDict(extra="forbid")

    jti: str | None = Field(None, min_length=1, max_length=255)
    subject: str | None = Field(None, min_length=1, max_length=255)
    issued_before: datetime | None = Field(
        None, description="With `subject`: tokens whose `iat` is earlier are refused (and those "
                          "without `iat`). Absent: now. Not in the future.")
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _one_kind(self) -> TokenDenialIn:
        if (self.jti is None) == (self.subject is None):
            raise ValueError("give either `jti` (one token) or `subject` (a user's tokens)")
        if self.jti is not None and self.issued_before is not None:
            raise ValueError("`issued_before` goes with `subject`, not with `jti`")
        return self


class TokenDenialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    jti: str | None
    subject: str | None
    issued_before: datetime | None
    expires_at: datetime | None = Field(description="When no token it matches can still be "
                                                    "valid; absent: never.")
    reason: str
    created_by: str
    created_at: datetime


class TokenDenialList(BaseModel):
    denials: list[TokenDenialOut]


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=TEAM_NAME_PATTERN,
                      description="Lower-case letters, digits, '.', '_', '-'; up to 64.")
    description: str = Field("", max_length=500)


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=255, description="A user id (`sub`).")


class TeamOut(BaseModel):
    name: str
    description: str
    created_by: str
    created_at: datetime
    members: list[str] = Field(description="User ids (`sub`); a user is in one team at most.")


class TeamList(BaseModel):
    teams: list[TeamOut]


class BudgetIn(BaseModel):
    """A budget in the cost model's money (PROXY_COST_MODE, PROXY_COST_CURRENCY)."""

    model_config = ConfigDict(extra="forbid")

    amount: float = Field(..., gt=0, le=1e12, description="The hard limit: requests are "
                          "refused (429 `budget_exceeded`) once it is spent, until the period "
                          "resets.")
    soft_limit: float | None = Field(None, gt=0, le=1e12, description="Past it the proxy "
                                     "warns (a metric, an alert) but still admits.")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> BudgetIn:
        if self.soft_limit is not None and self.soft_limit > self.amount:
            raise ValueError("soft_limit must not be above amount")
        return self


class BudgetOut(BaseModel):
    scope: Literal["user", "key", "team"]
    subject: str = Field(description="A user id, an API key id or a team name.")
    period: Literal["day", "week", "month"] = Field(description="UTC calendar periods; a "
                                                    "week starts on Monday.")
    amount: float
    soft_limit: float | None
    spent: float = Field(description="Spent in the current period.")
    resets_at: datetime


class BudgetList(BaseModel):
    currency: str
    cost_mode: str
    budgets: list[BudgetOut]
