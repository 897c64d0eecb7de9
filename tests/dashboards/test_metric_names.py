"""Every metric a dashboard or rule queries exists: in a live proxy's /metrics, in a named
exporter's list, as a recording rule, or in the repository's node-exporter textfiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.dashboards.metric_names import (
    Known,
    PromQLSyntaxError,
    exporter_lists,
    exposition_names,
    metric_names,
    recorded_names,
    unknown,
    used_metrics,
    variable_query_names,
)
from tests.dashboards.paths import (
    DASHBOARD_FILES,
    EXPORTER_LISTS,
    RULE_FILES,
    TEXTFILES,
)

# What the proxy's README promises (proxy/core/metrics.py), as Prometheus stores it.
PROXY_SERIES = {
    "llm_proxy_requests_total",
    "llm_proxy_request_duration_seconds_bucket",
    "llm_proxy_time_to_first_token_seconds_bucket",
    "llm_proxy_prompt_tokens_total",
    "llm_proxy_generation_tokens_total",
    "llm_proxy_generation_tokens_per_second_bucket",
    "llm_proxy_generation_tokens_per_second_count",
    "llm_proxy_requests_in_flight",
    "llm_proxy_rate_limited_total",
    "llm_proxy_limiter_backend_errors_total",
    "llm_proxy_auth_failures_total",
    "llm_proxy_cache_requests_total",
    "llm_proxy_upstream_up",
    "llm_proxy_audit_queue_depth",
    "llm_proxy_audit_spooled_rows",
    "llm_proxy_audit_rows_written_total",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('up{job="proxy"} == 0', {"up"}),
        ('sum by (le, model) (rate(a_bucket{job="x", le=~"1|2"}[5m]))', {"a_bucket"}),
        ("sum(rate(a_total[$__rate_interval])) by (model)", {"a_total"}),
        ("histogram_quantile(0.95, sum without (instance) (rate(b_bucket[5m:1m])))",
         {"b_bucket"}),
        ("a / on (uuid) group_left (name) b", {"a", "b"}),
        ("a * ignoring(x) group_right b", {"a", "b"}),
        ("x > 0.5 and on () count(y) > 0 unless z or bool_metric", {"x", "y", "z",
                                                                     "bool_metric"}),
        ("max(a) == bool 1", {"a"}),
        ("a offset 1h30m + b @ end()", {"a", "b"}),
        ("level:metric:rate5m > 1e3", {"level:metric:rate5m"}),
        ('count_values("v", a) or vector(0)', {"a"}),
        ('label_replace(a, "dst", "$1", "src", "(by|on)")', {"a"}),
        ('{__name__="only_in_matchers", job="x"}', {"only_in_matchers"}),
        ('a{name=~"llm-stack-.+", mountpoint="/"} / b{path="{curly}"}', {"a", "b"}),
        ("topk(5, a) # a comment naming fake_metric", {"a"}),
        ("sum by (mode) (delta(c[10m])) >= -Inf", {"c"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_unreadable_promql_is_an_error_not_an_empty_set() -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names('up{job="proxy"')
    with pytest.raises(PromQLSyntaxError):
        metric_names("up ! 1")


def test_variable_queries_are_read() -> None:
    assert variable_query_names('label_values(llm_proxy_requests_total{job="p"}, model)') == {
        "llm_proxy_requests_total"}


def test_exposition_names_include_declared_but_empty_series() -> None:
    text = (
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        "# HELP h Latency.\n# TYPE h histogram\n"
        'g{a="1"} 3.0\n'
    )
    assert exposition_names(text) == {"x_total", "h_bucket", "h_sum", "h_count", "g"}


def _known(live_metrics: str, rule_files: list[Path] = RULE_FILES) -> Known:
    textfile_names = set()
    for path in TEXTFILES:
        textfile_names |= exposition_names(path.read_text())
    return Known(
        proxy=exposition_names(live_metrics),
        exporters=exporter_lists(EXPORTER_LISTS),
        recorded=recorded_names(rule_files),
        textfiles=textfile_names,
    )


def test_the_live_proxy_exports_what_its_readme_promises(live_metrics: str) -> None:
    assert PROXY_SERIES - exposition_names(live_metrics) == set()
    # The generation went through: the histograms have samples, not only declarations.
    assert 'llm_proxy_time_to_first_token_seconds_bucket{le="+Inf",model=' in live_metrics


def test_every_metric_in_dashboards_and_rules_exists(live_metrics: str) -> None:
    uses = used_metrics(DASHBOARD_FILES, RULE_FILES)
    assert len({u.name for u in uses}) > 20, "the checker found suspiciously few names"
    missing = unknown(uses, _known(live_metrics))
    assert missing == [], "metrics that nothing exports:\n" + "\n".join(missing)


def test_every_proxy_metric_is_on_a_dashboard_or_in_a_rule() -> None:
    used = {u.name for u in used_metrics(DASHBOARD_FILES, RULE_FILES)}
    assert PROXY_SERIES - used == set()


def test_exporter_lists_hold_only_used_names_of_their_exporter() -> None:
    lists = exporter_lists(EXPORTER_LISTS)
    assert set(lists) == {"node_exporter", "cadvisor", "nvidia_gpu_exporter", "prometheus"}
    used = {u.name for u in used_metrics(DASHBOARD_FILES, RULE_FILES)}
    for exporter, names in lists.items():
        assert names, exporter
        # The proxy's names must come from the live /metrics, never from a hand-kept list.
        assert not {n for n in names if n.startswith("llm_proxy_")}, exporter
        assert names <= used, f"{exporter}.txt lists unused names {sorted(names - used)}"
    for path in EXPORTER_LISTS.glob("*.txt"):
        assert path.read_text().startswith("# "), f"{path.name} lacks its source comment"


def test_a_renamed_metric_is_reported(live_metrics: str, tmp_path: Path) -> None:
    """Mutation: rename a proxy metric in a copy of a dashboard and of the rules."""
    board = next(p for p in DASHBOARD_FILES if p.name == "llm-overview.json")
    board_copy = tmp_path / board.name
    board_copy.write_text(board.read_text().replace(
        "llm_proxy_time_to_first_token_seconds_bucket", "llm_proxy_ttft_seconds_bucket"))
    rules_copy = tmp_path / RULE_FILES[0].name
    rules_copy.write_text(RULE_FILES[0].read_text().replace(
        "nvidia_smi_memory_used_bytes", "nvidia_smi_memory_use_bytes"))
    known = _known(live_metrics, [rules_copy])
    missing = unknown(used_metrics([board_copy], [rules_copy]), known)
    assert any("llm_proxy_ttft_seconds_bucket" in line and "llm-overview.json" in line
               for line in missing), missing
    assert any("nvidia_smi_memory_use_bytes" in line for line in missing), missing
    # Unchanged copies pass: the mutation, not the copying, is what the checker reports.
    shutil.copy(board, board_copy)
    shutil.copy(RULE_FILES[0], rules_copy)
    assert unknown(used_metrics([board_copy], [rules_copy]), known) == []


def test_a_renamed_variable_metric_is_reported(live_metrics: str, tmp_path: Path) -> None:
    board = json.loads(next(p for p in DASHBOARD_FILES if p.name == "llm-overview.json")
                       .read_text())
    variable = board["templating"]["list"][0]
    variable["query"]["query"] = variable["query"]["query"].replace(
        "llm_proxy_requests_total", "llm_proxy_request_total")
    copy = tmp_path / "llm-overview.json"
    copy.write_text(json.dumps(board))
    missing = unknown(used_metrics([copy], []), _known(live_metrics))
    assert any("variable model: llm_proxy_request_total" in line for line in missing), missing
