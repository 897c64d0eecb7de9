"""Which metric names the dashboards and rules use, and whether each one exists.

`metric_names(expr)` is a tokenizer, not a PromQL parser: it walks the expression and keeps the
identifiers that can only be metric names. It skips strings, label-matcher blocks (reading a
`__name__="..."` matcher inside one), range and subquery brackets, numbers and durations,
Grafana variables (`$__rate_interval`, `${var}`), function and aggregation calls (an identifier
followed by `(`, or an aggregation followed by `by`/`without`), keywords and binary operators
written as words, and the label lists after `by`, `without`, `on`, `ignoring`, `group_left`,
`group_right`.

A name is known when it is one of:
- exported by the proxy: read from a live /metrics (sample names, and the names a `# TYPE`
  line implies: counters as `_total`, histograms as `_bucket`/`_sum`/`_count`);
- in a named exporter's list, dashboards/exporters/<exporter>.txt (one name a line, `#`
  comments with the source);
- recorded by a rule of the repository's rule files;
- set by a node-exporter textfile of the repository (dashboards/node-exporter/*/*.prom).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LISTS | {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<open_brace>\{)
    | (?P<close_brace>\})
    | (?P<bracket>\[[^\]]*\])
    | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_]\w*)
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<operator>==|!=|<=|>=|=~|!~|[-+*/%^<>=@,()])
    """,
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    pass


def tokens(expr: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLSyntaxError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            yield kind, match.group()
        pos = match.end()


def metric_names(expr: str) -> set[str]:
    found: set[str] = set()
    toks = list(tokens(expr))
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "open_brace":
            i = _label_matchers(toks, i + 1, found)
            continue
        if kind == "ident":
            word = text.lower()
            if word in LABEL_LISTS and following == "(":
                i = _skip_to_close(toks, i + 1)
                continue
            if following == "(" or word in KEYWORDS:
                pass  # a function, an aggregation, or a keyword
            elif word in AGGREGATIONS and following.lower() in ("by", "without"):
                pass  # `sum by (le) (...)`
            else:
                found.add(text)
        i += 1
    return found


def _skip_to_close(toks: list[tuple[str, str]], i: int) -> int:
    """From the `(` at i, past its matching `)`."""
    depth = 0
    while i < len(toks):
        if toks[i][1] == "(":
            depth += 1
        elif toks[i][1] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLSyntaxError("unbalanced parentheses")


def _label_matchers(toks: list[tuple[str, str]], i: int, found: set[str]) -> int:
    """Past the `}` closing the block that starts at i; a `__name__="x"` adds x."""
    while i < len(toks):
        kind, text = toks[i]
        if kind == "close_brace":
            return i + 1
        if (text == "__name__" and i + 2 < len(toks) and toks[i + 1][1] == "="
                and toks[i + 2][0] == "string"):
            found.add(toks[i + 2][1][1:-1])
        i += 1
    raise PromQLSyntaxError("unclosed label matchers")


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*\w+\s*\)\s*$", re.DOTALL)


def variable_query_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (`label_values(selector, label)`)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise PromQLSyntaxError(f"unsupported variable query {query!r}")
    return metric_names(match.group("selector"))


# --- where queries are ------------------------------------------------------------------------

@dataclass
class Use:
    name: str
    where: str


def dashboard_queries(path: Path) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every Prometheus target and variable of a dashboard JSON file."""
    board: dict[str, Any] = json.loads(path.read_text())
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") == "prometheus":
                yield f"{path.name}: panel {panel.get('title')!r}", target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"{path.name}: variable {variable['name']}", text


def rules(path: Path) -> Iterator[dict[str, Any]]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        yield from group["rules"]


def used_metrics(dashboard_files: Iterable[Path], rule_files: Iterable[Path]) -> list[Use]:
    uses: list[Use] = []
    for path in dashboard_files:
        for where, expr in dashboard_queries(path):
            names = (variable_query_names(expr) if expr.startswith("label_values")
                     else metric_names(expr))
            uses += [Use(name, where) for name in sorted(names)]
    for path in rule_files:
        for rule in rules(path):
            where = f"{path.name}: {rule.get('alert') or rule.get('record')}"
            uses += [Use(name, where) for name in sorted(metric_names(rule["expr"]))]
    return uses


# --- what exists ------------------------------------------------------------------------------

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("", "_sum", "_count"), "gauge": ("",), "untyped": ("",)}


def exposition_names(text: str) -> set[str]:
    """Series names a Prometheus text exposition offers, including declared-but-empty ones."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + suffix for suffix in _SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def exporter_lists(folder: Path) -> dict[str, set[str]]:
    """{exporter: names} from folder/<exporter>.txt."""
    lists = {}
    for path in sorted(folder.glob("*.txt")):
        names = set()
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(line)
        lists[path.stem] = names
    return lists


def recorded_names(rule_files: Iterable[Path]) -> set[str]:
    return {rule["record"] for path in rule_files for rule in rules(path) if "record" in rule}


@dataclass
class Known:
    proxy: set[str]
    exporters: dict[str, set[str]]
    recorded: set[str]
    textfiles: set[str] = field(default_factory=set)

    def source(self, name: str) -> str | None:
        if name in self.proxy:
            return "proxy"
        for exporter, names in self.exporters.items():
            if name in names:
                return exporter
        if name in self.recorded:
            return "recording rule"
        if name in self.textfiles:
            return "textfile"
        return None


def unknown(uses: Iterable[Use], known: Known) -> list[str]:
    """One line per use of a name no source offers."""
    return [f"{use.where}: {use.name}" for use in uses if known.source(use.name) is None]
