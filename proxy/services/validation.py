"""Checks on requests whose limits come from settings rather than from the schema."""

from __future__ import annotations

from proxy.core.errors import RequestInvalid
from proxy.core.settings import Settings
from proxy.schemas import ChatRequest, GenerateRequest, GenerationOptions


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
    limit = settings.proxy_max_prompt_chars
    if len(request.prompt) > limit:
        raise RequestInvalid(f"prompt is {len(request.prompt)} characters; the limit is {limit}")
    return bounded_options(request.options, settings)


def check_chat(request: ChatRequest, settings: Settings) -> GenerationOptions:
    if len(request.messages) > settings.proxy_max_messages:
        raise RequestInvalid(
            f"too many messages: {len(request.messages)}; the limit is "
            f"{settings.proxy_max_messages}"
        )
    total = sum(len(m.content) for m in request.messages)
    if total > settings.proxy_max_prompt_chars:
        raise RequestInvalid(
            f"messages total {total} characters; the limit is {settings.proxy_max_prompt_chars}"
        )
    if not any(m.content.strip() for m in request.messages if m.role == "user"):
        raise RequestInvalid("messages must include a non-blank user message")
    return bounded_options(request.options, settings)
