"""The Jinja sandbox prompt templates render in, and the loop of the worker process that runs it.

A template is a small program, and its loop bounds can come from the caller's variables. This
module imports nothing but the standard library and Jinja, because it is also a script: the proxy
runs it as a separate process (`proxy.services.template_runner`), which it kills when a render
outlives its time budget. Time is enforced from outside; everything else is enforced here:

- `SandboxedEnvironment`: no attribute tricks (`{{ ''.__class__ }}`); `StrictUndefined`: a
  missing variable is an error, not an empty string in the prompt; ranges of at most 100000.
- No `include`, `import` or `extends`: there is no loader, and the tags are refused when a
  template is parsed, so they are refused when a template is stored too.
- `*` (repetition) and `**` are checked before they run, so one expression cannot allocate
  gigabytes or compute a number with millions of digits before the clock runs out.
- Output is counted as it is produced; past the cap the render stops.
- An address-space limit (`WORKER_MEMORY_BYTES`) stops what the checks above cannot see (a
  filter such as `center(10**9)`), and a per-render alarm ends a worker whose parent is gone.

Protocol (one JSON object per line): the worker prints `{"ready": true}` once, then answers each
`{"source", "variables"}` line on stdin with `{"ok": true, "text"}` or `{"ok": false, "kind",
"error"}` on stdout. `kind` is "syntax", "refused", "unsafe", "output" or "error".
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

WORKER_MEMORY_BYTES = 512 * 1024 * 1024
# A power with a result wider than this is refused: far beyond any number a prompt needs.
MAX_POWER_BITS = 4096
# The worker's own alarm fires this long after the parent should have killed it.
ALARM_GRACE_SECONDS = 5.0

FORBIDDEN_TAGS: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from … import"),
    (nodes.Extends, "extends"),
)


class SourceRefused(Exception):
    """A template that parses but may not be used (it names other templates)."""


class OutputTooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NumberTooLarge(Exception):
    pass


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class CappedSandbox(SandboxedEnvironment):
    """The sandbox, plus a check on the size of `*` and `**` results before they are built."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_chars: int) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.max_chars = max_chars

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                size = _length(sequence)
                if size is not None and isinstance(count, int) and size * count > self.max_chars:
                    raise OutputTooLarge(f"would build a value of {size * count} characters, "
                                         f"more than the {self.max_chars} a render may produce")
        elif (operator == "**" and isinstance(left, int) and isinstance(right, int)
              and abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_POWER_BITS):
            raise NumberTooLarge(f"{left} ** {right} is too large to compute")
        return super().call_binop(context, operator, left, right)


def check_source(environment: SandboxedEnvironment, source: str) -> nodes.Template:
    """Parse a template; TemplateSyntaxError, or SourceRefused for tags that are not allowed."""
    tree = environment.parse(source)
    for node_type, tag in FORBIDDEN_TAGS:
        if tree.find(node_type) is not None:
            raise SourceRefused(f"uses `{{% {tag} %}}`, which is not allowed: a template cannot "
                                "use other templates")
    return tree


def syntax_message(exc: TemplateSyntaxError) -> str:
    return f"syntax error on line {exc.lineno}: {exc.message}"


class Renderer:
    """Renders in the current process, within the limits above (except time)."""

    def __init__(self, max_chars: int) -> None:
        self.environment = CappedSandbox(max_chars)
        self.max_chars = max_chars
        self._compiled = functools.lru_cache(maxsize=128)(self._compile)

    def _compile(self, source: str) -> Template:
        return self.environment.from_string(check_source(self.environment, source))

    def render(self, source: str, variables: dict[str, Any]) -> str:
        template = self._compiled(source)
        parts: list[str] = []
        size = 0
        # Passed as one mapping, not as keywords: a variable may be called `self`.
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > self.max_chars:
                raise OutputTooLarge(f"rendered more than {self.max_chars} characters")
            parts.append(chunk)
        return "".join(parts)

    def answer(self, source: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The protocol's reply to one job: every failure becomes a kind and a message."""
        try:
            return {"ok": True, "text": self.render(source, variables)}
        except TemplateSyntaxError as exc:
            return _failed("syntax", f"has a {syntax_message(exc)}")
        except SourceRefused as exc:
            return _failed("refused", str(exc))
        except SecurityError as exc:
            return _failed("unsafe", f"tried something unsafe: {exc}")
        except OutputTooLarge as exc:
            return _failed("output", exc.message)
        except ZeroDivisionError:
            return _failed("error", "could not be rendered: division by zero")
        except RecursionError:
            return _failed("error", "could not be rendered: recursion too deep (a macro that "
                                    "calls itself without end?)")
        except MemoryError:
            return _failed("error", "could not be rendered: it needed more memory than a "
                                    "template may use")
        except (TemplateError, NumberTooLarge, ArithmeticError) as exc:
            return _failed("error", f"could not be rendered: {exc}")
        except Exception as exc:
            return _failed("error", f"could not be rendered: {type(exc).__name__}: {exc}")


def _failed(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "error": message}


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):  # not on this platform: time still bounds it
        pass


def serve(max_chars: int, seconds: float) -> None:
    """The worker's loop: one job per stdin line, one answer per stdout line, until EOF."""
    _limit_memory()
    renderer = Renderer(max_chars)
    output = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers may reach the protocol stream

    def reply(obj: dict[str, Any]) -> None:
        # ASCII only: a lone surrogate in a variable must not break the line encoding.
        output.write(json.dumps(obj, ensure_ascii=True).encode() + b"\n")
        output.flush()

    reply({"ready": True})
    for line in sys.stdin.buffer:
        job = json.loads(line)
        # The default action of SIGALRM ends the process: a worker whose parent has gone (and
        # so cannot kill it) still stops.
        signal.setitimer(signal.ITIMER_REAL, seconds + ALARM_GRACE_SECONDS)
        answer = renderer.answer(job["source"], job["variables"])
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply(answer)


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
