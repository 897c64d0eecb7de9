"""Checks on requests whose limits come from settings rather than from the schema.

Control characters: text with C0/C1 control characters other than tab, newline and carriage
return is refused (422) rather than silently stripped, so the caller learns that their input
was not what they thought, and what is audited is exactly what was sent.
"""

from __future__ import annotations

import re

from proxy.core.errors import Forbidden, RequestInvalid
from proxy.core.model_names import full_model_name
from proxy.core.settings import Settings
from proxy.schemas import ChatMessage, ChatRequest, GenerateRequest, GenerationOptions

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_model(model: str, settings: Settings) -> None:
    allowed = settings.proxy_model_allowlist
    if allowed and full_model_name(model) not in {full_model_name(m) for m in allowed}:
        raise Forbidden(f"model '{model}' is not allowed on this proxy "
                        f"(allowed: {', '.join(allowed)})")


def check_text(field: str, text: str) -> None:
    found = CONTROL_CHARACTERS.search(text)
    if found:
        raise RequestInvalid(
            f"{field} contains a control character (U+{ord(found.group()):04X}) at position "
            f"{found.start()}; only tab, newline and carriage return are allowed"
        )


def check_context_size(what: str, chars: int, settings: Settings, advice: str = "") -> None:
    """PROXY_MAX_PROMPT_CHARS bounds everything a request sends upstream: prompt, rendered
    template, system prompt, stored history and new messages together."""
    limit = settings.proxy_max_prompt_chars
    if chars > limit:
        raise RequestInvalid(f"{what} {chars} characters; the limit is {limit} "
                             f"(PROXY_MAX_PROMPT_CHARS){advice}")


def check_prompt_text(prompt: str, settings: Settings) -> None:
    check_context_size("prompt is", len(prompt), settings)
    check_text("prompt", prompt)


def check_generate_context(prompt: str, system: str | None, settings: Settings) -> None:
    """The prompt (as given or as rendered) and the system prompt, together."""
    check_prompt_text(prompt, settings)
    if system:
        check_context_size("prompt and system prompt total", len(prompt) + len(system), settings)


def check_chat_context(earlier: list[ChatMessage], asked: list[ChatMessage],
                       settings: Settings) -> None:
    """The stored history sent upstream, and the new messages, together."""
    check_context_size(
        "with its stored history the conversation is",
        sum(len(m.content) for m in earlier) + sum(len(m.content) for m in asked), settings,
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


def check_generate(request: GenerateRequest, settings: Settings) -> GenerationOptions:
    check_model(request.model, settings)
    if request.prompt is not None:
        check_generate_context(request.prompt, request.system, settings)
    if request.system is not None:
        check_text("system", request.system)
    return bounded_options(request.options, settings)


def check_chat(request: ChatRequest, settings: Settings) -> GenerationOptions:
    check_model(request.model, settings)
    if len(request.messages) > settings.proxy_max_messages:
        raise RequestInvalid(
            f"too many messages: {len(request.messages)}; the limit is "
            f"{settings.proxy_max_messages}"
        )
    check_context_size("messages total", sum(len(m.content) for m in request.messages), settings)
    for index, message in enumerate(request.messages):
        check_text(f"messages[{index}].content", message.content)
    if not any(m.content.strip() for m in request.messages if m.role == "user"):
        raise RequestInvalid("messages must include a non-blank user message")
    return bounded_options(request.options, settings)
