"""Deterministic "model output" for the simulator, and the crude token counting around it.

Tests on both sides of the proxy need to know what the model will say, so the text is a pure
function of the prompt (or the last chat message) and `options.seed`: the same request always
streams the same tokens. `completion_tokens` is public so a test can compute the expected reply.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

MIN_TOKENS = 20
MAX_TOKENS = 40

_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum"
).split()


def seeded_random(*parts: object) -> random.Random:
    """A random generator that is a pure function of `parts`.

    hashlib rather than hash(): str hashes are salted per process (PYTHONHASHSEED), and the
    simulator runs in another process than the test that predicts its output.
    """
    key = "\x00".join(str(part) for part in parts).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _rng(text: str, seed: int | None) -> random.Random:
    return seeded_random(seed if seed is not None and seed >= 0 else "", text)


def word_for(*parts: object) -> str:
    """One deterministic lorem-ipsum word for `parts` (structured output, tool arguments)."""
    return seeded_random(*parts).choice(_WORDS)


def completion_tokens(text: str, seed: int | None = None, length: int = 0) -> list[str]:
    """The full reply to `text`: 20–40 tokens (`length`, if given), one word each.

    The first token is a capitalised word, every later token is a word with its leading
    space, and the last one ends with a full stop, so `"".join(tokens)` reads as a sentence.
    A negative or missing seed means "no seed" (Ollama's -1 means random; here it must not).
    """
    rng = _rng(text, seed)
    count = rng.randint(MIN_TOKENS, MAX_TOKENS)
    count = length or count
    words = [rng.choice(_WORDS) for _ in range(count)]
    tokens = [words[0].capitalize(), *(f" {w}" for w in words[1:])]
    tokens[-1] += "."
    return tokens


def thinking_tokens(text: str, seed: int | None = None) -> list[str]:
    """What a thinking model "thinks" before answering `text` (`think: true`), in the same
    form as `completion_tokens` and just as predictable."""
    return completion_tokens(f"thinking about: {text}", seed)


def count_tokens(text: str) -> int:
    """A crude token count (whitespace-separated words), standing in for a tokenizer."""
    return len(text.split())


def token_ids(text: str) -> list[int]:
    """Stable fake token ids for `text`, for the `context` array of /api/generate."""
    return [
        int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % 128_000
        for word in text.split()
    ]


def apply_stop(tokens: Sequence[str], stop: Sequence[str]) -> tuple[list[str], bool]:
    """Cut `tokens` where the text first contains a stop sequence, as Ollama's `options.stop`.

    Returns the tokens to emit (the last one possibly shortened, the stop text itself never
    emitted) and whether a stop sequence was hit.
    """
    stops = [s for s in stop if s]
    if not stops:
        return list(tokens), False
    emitted: list[str] = []
    text = ""
    for token in tokens:
        candidate = text + token
        cuts = [i for i in (candidate.find(s) for s in stops) if i >= 0]
        if cuts:
            rest = candidate[len(text) : min(cuts)]
            if rest:
                emitted.append(rest)
            return emitted, True
        emitted.append(token)
        text = candidate
    return emitted, False
