"""OpenAI's request bodies, and their translation into Ollama's native terms (an `Ask`).

The proxy translates (rather than forwarding to Ollama's own `/v1` layer) so that every dialect
goes the one way a generation goes: the same validation of Ollama's fields, one relay that
measures time to first token and counts tokens from Ollama's final object, and, later, engines
that are not Ollama behind the same translation. The mapping follows Ollama's own OpenAI layer
(`openai/openai.go`): `max_tokens`/`max_completion_tokens` → `num_predict`, `stop` → `options.stop`,
`response_format` → `format`, `reasoning_effort` → `think`, tool calls' JSON-string arguments →
objects, `temperature` and `top_p` 1.0 when not given (OpenAI's defaults, as Ollama's layer sets
them), so a client sees the same behaviour through the proxy as from Ollama's `/v1` directly.

What Ollama cannot do is refused with a clear 400 rather than ignored: `n` other than 1,
`tool_choice` other than `auto`/`none`, `logprobs`, image URLs other than base64 `data:` URIs
(the proxy never fetches a URL a caller names), token-array prompts and inputs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from proxy.core.errors import RequestInvalid
from proxy.schemas import GenerationOptions, ModelName
from proxy.services.calls import Ask

Text = Annotated[str, StringConstraints(max_length=1_000_000)]
Stop = str | list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None
IMAGE_PREFIXES = ("data:;base64,", *(f"data:image/{t};base64," for t in
                                    ("jpeg", "jpg", "png", "webp")))
# OpenAI's reasoning efforts, mapped to Ollama's `think` as Ollama's own layer maps them.
THINK_BY_EFFORT: dict[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "max": "max", "xhigh": "max", "ultra": "max",
}


class FunctionCall(BaseModel):
    name: str = Field(..., max_length=200)
    arguments: str = Field("", max_length=1_000_000)


class ToolCall(BaseModel):
    id: str | None = Field(None, max_length=200)
    type: Literal["function"] = "function"
    index: int | None = None
    function: FunctionCall


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: dict[str, Any] | str | None = None


class Message(BaseModel):
    # Besides what a request carries, what an SDK echoes back when a previous answer's message
    # object is appended to the conversation (`refusal`, `annotations`, … as null).
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=200)
    tool_calls: list[ToolCall] | None = Field(None, max_length=64)
    tool_call_id: str | None = Field(None, max_length=200)
    reasoning: Text | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: Any = None


class ToolFunction(BaseModel):
    name: str = Field(..., max_length=200)
    description: str | None = Field(None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: ToolFunction


class JsonSchemaFormat(BaseModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] = Field(..., alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class Reasoning(BaseModel):
    effort: str | None = None


class Sampling(BaseModel):
    """What the chat and legacy completion requests share."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: Stop = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    n: int | None = None
    user: str | None = Field(None, max_length=256, description="Accepted, not used.")

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def options(self, max_tokens: int | None) -> GenerationOptions:
        if self.n not in (None, 1):
            raise RequestInvalid("n: only 1 choice per request is supported")
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return GenerationOptions(
            num_predict=max_tokens, seed=self.seed, stop=stop,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty)


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto"] | dict[str, Any] | str | None = None
    parallel_tool_calls: bool | None = Field(None, description="Accepted; the model decides.")
    reasoning_effort: str | None = None
    reasoning: Reasoning | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class CompletionRequest(Sampling):
    prompt: Text | list[Any]
    suffix: Text | None = None
    echo: bool | None = None
    best_of: int | None = None
    logprobs: int | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    input: Text | list[Text]
    dimensions: int | None = Field(None, ge=1, le=65536)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, max_length=256, description="Accepted, not used.")


def _image(part: ContentPart) -> str:
    url = part.image_url.get("url") if isinstance(part.image_url, dict) else part.image_url
    if not isinstance(url, str):
        raise RequestInvalid("image_url: needs a `url`")
    for prefix in IMAGE_PREFIXES:
        if url.startswith(prefix):
            return url.removeprefix(prefix)
    raise RequestInvalid("image_url: only base64 `data:image/…;base64,` URIs are accepted; "
                         "the proxy does not fetch URLs")


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    native = []
    for call in calls:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            raise RequestInvalid(f"tool call {call.function.name!r}: arguments are not "
                                 "JSON") from None
        if not isinstance(arguments, dict):
            raise RequestInvalid(f"tool call {call.function.name!r}: arguments must be a JSON "
                                 "object")
        entry: dict[str, Any] = {"function": {"name": call.function.name,
                                              "arguments": arguments}}
        if call.id:
            entry["id"] = call.id
        native.append(entry)
    return native


def _tool_name(messages: list[Message], call_id: str | None) -> str | None:
    for message in reversed(messages):
        for call in message.tool_calls or []:
            if call.id == call_id:
                return call.function.name
    return None


def native_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI's messages in Ollama's shape: `developer` is a system message, text parts are
    joined, images become base64 `images`, tool results are named by their tool."""
    native = []
    for message in messages:
        out: dict[str, Any] = {"role": "system" if message.role == "developer"
                               else message.role}
        if isinstance(message.content, list):
            out["content"] = "\n".join(p.text or "" for p in message.content if p.type == "text")
            images = [_image(p) for p in message.content if p.type == "image_url"]
            if images:
                out["images"] = images
        else:
            out["content"] = message.content or ""
        if message.tool_calls:
            out["tool_calls"] = _tool_calls(message.tool_calls)
        if message.reasoning:
            out["thinking"] = message.reasoning
        if message.role == "tool":
            name = message.name or _tool_name(messages, message.tool_call_id)
            if name:
                out["tool_name"] = name
        native.append(out)
    return native


def chat_ask(body: ChatCompletionRequest) -> Ask:
    if body.logprobs:
        raise RequestInvalid("logprobs: not supported by this proxy")
    native: dict[str, Any] = {}
    choice = body.tool_choice
    if choice not in (None, "auto", "none"):
        raise RequestInvalid("tool_choice: only \"auto\" and \"none\" are supported (the model "
                             "decides which tool to call)")
    if body.tools and choice != "none":
        native["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    if body.response_format is not None:
        if body.response_format.type == "json_object":
            native["format"] = "json"
        elif body.response_format.type == "json_schema":
            if body.response_format.json_schema is None:
                raise RequestInvalid("response_format: json_schema needs `json_schema`")
            native["format"] = body.response_format.json_schema.schema_
    effort = body.reasoning.effort if body.reasoning is not None else body.reasoning_effort
    if effort:
        if effort not in THINK_BY_EFFORT:
            raise RequestInvalid(f"reasoning_effort: {effort!r} is not one of "
                                 f"{', '.join(THINK_BY_EFFORT)}")
        native["think"] = THINK_BY_EFFORT[effort]
    options = body.options(body.max_completion_tokens or body.max_tokens)
    return Ask("chat", body.model, options, messages=native_messages(body.messages),
               native=native)


def completion_ask(body: CompletionRequest) -> Ask:
    if not isinstance(body.prompt, str):
        raise RequestInvalid("prompt: only a single string is supported")
    if body.echo or body.logprobs or body.best_of not in (None, 1):
        raise RequestInvalid("echo, logprobs and best_of are not supported by this proxy")
    native: dict[str, Any] = {"suffix": body.suffix} if body.suffix else {}
    return Ask("generate", body.model, body.options(body.max_tokens), prompt=body.prompt,
               native=native)
