"""Checks on requests whose limits come from settings rather than from the schema.

They run on an `Ask`, the dialect-neutral form of a generation (`proxy.services.calls`), so the
proxy's own API, the OpenAI dialect and the Ollama dialect are held to the same rules by the
same code.

Control characters: text with C0/C1 control characters other than tab, newline and carriage
return is refused (422) rather than silently stripped, so the caller learns that their input
was not what they thought, and what is audited is exactly what was sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from proxy.core.errors import Forbidden, RequestInvalid
from proxy.core.model_names import full_model_name
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.schemas import GenerationOptions

if TYPE_CHECKING:
    from proxy.services.calls import Ask

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Go's time.ParseDuration, which Ollama uses for a `keep_alive` string ("5m", "1h30m", "-1s").
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def is_allowed(model: str, settings: Settings) -> bool:
    """Whether PROXY_MODEL_ALLOWLIST (empty: every model) lets users use `model`."""
    allowed = settings.proxy_model_allowlist
    return not allowed or full_model_name(model) in {full_model_name(m) for m in allowed}


def check_model(model: str, settings: Settings) -> None:
    allowed = settings.proxy_model_allowlist
    if not is_allowed(model, settings):
        raise Forbidden(f"model '{model}' is not allowed on this proxy "
                        f"(allowed: {', '.join(allowed)})")


def check_key_models(model: str, caller: Principal) -> None:
    """An API key with a model allowlist of its own narrows the proxy's to it."""
    allowed = caller.key.allowed_models if caller.key is not None else None
    if allowed is not None and full_model_name(model) not in {full_model_name(m)
                                                               for m in allowed}:
        raise Forbidden(f"model '{model}' is not allowed for this API key "
                        f"(allowed: {', '.join(allowed) or 'none'})")


def check_text(field: str, text: str) -> None:
    found = CONTROL_CHARACTERS.search(text)
    if found:
        raise RequestInvalid(
            f"{field} contains a control character (U+{ord(found.group()):04X}) at position "
            f"{found.start()}; only tab, newline and carriage return are allowed"
        )


def check_context_size(what: str, chars: int, settings: Settings, advice: str = "") -> None:
    """PROXY_MAX_PROMPT_CHARS bounds everything a request sends upstream: prompt, rendered
    template, system prompt, stored history, new messages, tools and tool calls together."""
    limit = settings.proxy_max_prompt_chars
    if chars > limit:
        raise RequestInvalid(f"{what} {chars} characters; the limit is {limit} "
                             f"(PROXY_MAX_PROMPT_CHARS){advice}")


def message_chars(messages: Iterable[dict[str, Any]]) -> int:
    """The characters of chat messages as sent upstream: text, thinking and tool calls."""
    total = 0
    for message in messages:
        for key in ("content", "thinking"):
            value = message.get(key)
            total += len(value) if isinstance(value, str) else 0
        if message.get("tool_calls"):
            total += len(json.dumps(message["tool_calls"], ensure_ascii=False))
    return total


def check_prompt_text(prompt: str, settings: Settings) -> None:
    check_context_size("prompt is", len(prompt), settings)
    check_text("prompt", prompt)


def check_generate_context(prompt: str, system: str | None, settings: Settings) -> None:
    """The prompt (as given or as rendered) and the system prompt, together."""
    check_prompt_text(prompt, settings)
    if system:
        check_context_size("prompt and system prompt total", len(prompt) + len(system), settings)


def check_chat_context(earlier: list[dict[str, Any]], asked: list[dict[str, Any]],
                       settings: Settings) -> None:
    """The stored history sent upstream, and the new messages, together."""
    check_context_size(
        "with its stored history the conversation is",
        message_chars(earlier) + message_chars(asked), settings,
        advice="; start a new conversation")


def bounded_options(options: GenerationOptions | None, settings: Settings) -> GenerationOptions:
    """The caller's options with `num_predict` capped; unset or -1 becomes the cap."""
    opts = options.model_copy() if options is not None else GenerationOptions()
    cap = settings.proxy_max_num_predict
    if opts.num_predict is not None and opts.num_predict > cap:
        raise RequestInvalid(f"options.num_predict must be at most {cap} (PROXY_MAX_NUM_PREDICT)")
    if opts.num_predict is None or opts.num_predict < 0:
        opts.num_predict = cap
    return opts


def keep_alive_seconds(value: float | str) -> float:
    """A `keep_alive` in seconds: a number, or a Go duration string as Ollama accepts it."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise RequestInvalid(f"keep_alive: {value!r} is not a duration (e.g. 300, \"5m\", "
                             "\"1h30m\")")
    return sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def check_keep_alive(value: float | str | None, settings: Settings) -> None:
    """Callers may keep a model loaded for up to PROXY_MAX_KEEP_ALIVE_SECONDS after their
    request, or unload it (0); never forever (negative), which would pin GPU memory."""
    if value is None:
        return
    seconds = keep_alive_seconds(value)
    cap = settings.proxy_max_keep_alive_seconds
    if seconds < 0 or seconds > cap:
        raise RequestInvalid(f"keep_alive must be between 0 and {cap} seconds "
                             "(PROXY_MAX_KEEP_ALIVE_SECONDS)")


def check_ask(ask: Ask, settings: Settings) -> None:
    """Everything about a generation that can be checked without any I/O; options bounded."""
    check_model(ask.model, settings)
    if ask.kind == "generate":
        if ask.prompt is not None:
            check_generate_context(ask.prompt, ask.system, settings)
        if ask.system is not None:
            check_text("system", ask.system)
    else:
        if len(ask.messages) > settings.proxy_max_messages:
            raise RequestInvalid(
                f"too many messages: {len(ask.messages)}; the limit is "
                f"{settings.proxy_max_messages}"
            )
        check_context_size("messages total", message_chars(ask.messages), settings)
        for index, message in enumerate(ask.messages):
            content = message.get("content")
            if isinstance(content, str):
                check_text(f"messages[{index}].content", content)
        if not any(str(m.get("content") or "").strip() for m in ask.messages
                   if m.get("role") == "user"):
            raise RequestInvalid("messages must include a non-blank user message")
    if ask.native.get("tools"):
        check_context_size("tools total", len(json.dumps(ask.native["tools"],
                                                         ensure_ascii=False)), settings)
    check_keep_alive(ask.native.get("keep_alive"), settings)
    ask.options = bounded_options(ask.options, settings)


def check_embed_inputs(inputs: list[str], settings: Settings) -> None:
    limit = settings.proxy_max_embed_inputs
    if not inputs:
        raise RequestInvalid("input must hold at least one text")
    if len(inputs) > limit:
        raise RequestInvalid(f"too many inputs: {len(inputs)}; the limit is {limit} "
                             "(PROXY_MAX_EMBED_INPUTS)")
    check_context_size("input total", sum(len(t) for t in inputs), settings)
    for index, text in enumerate(inputs):
        check_text(f"input[{index}]", text)
