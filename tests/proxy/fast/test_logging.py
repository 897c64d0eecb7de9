"""The proxy's log lines, in process: one per request, with the request's id and what is known
about it; the two formats (`PROXY_LOG_FORMAT`); the request id on lines written inside a
request. (The whole log of a real server, searched for secrets: tests/proxy/test_log_redaction.py.)
"""

from __future__ import annotations

import json
import logging
from logging.config import DictConfigurator

import pytest
from pydantic import ValidationError

from proxy.core.logs import RequestContextFilter, logging_config, request_id_var
from proxy.core.redact import RedactingFilter
from tests.support.proxy_app import ExplicitSettings, InProcessProxy
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")


def access_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "proxy.access" and getattr(r, "request_id", None) == request_id]


async def test_a_streamed_generation_has_one_line_with_who_what_and_how_long(
        proxy: InProcessProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    response = await proxy.client.post(
        "/api/llm/generate?trace=on", headers=auth("logan"),
        json={"model": "llama3.2", "prompt": "hello", "options": {"num_predict": 3}})
    assert response.status_code == 200
    [line] = access_lines(caplog, response.headers["x-request-id"])
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("POST /api/llm/generate?trace=on 200 ")
    fields = vars(line)
    assert (fields["user"], fields["model"], fields["dialect"]) == (
        "logan", "llama3.2:latest", "llm")
    # Written when the stream had ended: the duration covers it, the first token came in it.
    body = [json.loads(chunk) for chunk in response.text.splitlines()]
    assert 0 < fields["ttft_ms"] <= fields["duration_ms"]
    assert fields["duration_ms"] >= body[-1]["timings"]["total_ms"]


async def test_probes_are_logged_at_debug_and_pages_at_info(
        proxy: InProcessProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="proxy.access")
    probe = await proxy.client.get("/livez")
    page = await proxy.client.get("/")
    [probe_line] = access_lines(caplog, probe.headers["x-request-id"])
    [page_line] = access_lines(caplog, page.headers["x-request-id"])
    assert probe_line.levelno == logging.DEBUG
    assert (page_line.levelno, vars(page_line)["status"]) == (logging.INFO, 200)
    assert vars(page_line)["dialect"] is None  # not an API path


async def test_a_path_cannot_start_a_forged_line(
        proxy: InProcessProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    response = await proxy.client.get("/nothing%0AFORGED-LOG-LINE%20x")
    [line] = access_lines(caplog, response.headers["x-request-id"])
    assert line.getMessage().startswith("GET /nothing%0AFORGED-LOG-LINE%20x 404 ")


def formatted(log_format: str, record: logging.LogRecord) -> str:
    config = logging_config(log_format, "info")  # type: ignore[arg-type]
    formatter = DictConfigurator(config).configure_formatter(config["formatters"]["proxy"])
    for step in (RequestContextFilter(), RedactingFilter()):
        step.filter(record)
    return formatter.format(record)


def a_record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("proxy.cache", logging.WARNING, __file__, 1,
                               "cache read failed (%s)", ("redis://:pw-1@redis:6379/0",), None)
    record.__dict__.update(fields)
    return record


def test_a_line_written_inside_a_request_carries_its_id_in_both_formats() -> None:
    reset = request_id_var.set("req-1234")
    try:
        text = formatted("text", a_record(user="ann"))
        as_json = json.loads(formatted("json", a_record(user="ann")))
    finally:
        request_id_var.reset(reset)
    assert " WARNING proxy.cache [req-1234] cache read failed (redis://***@redis:6379/0) " \
           "user=ann" in text
    assert as_json["request_id"] == "req-1234"
    assert (as_json["level"], as_json["logger"], as_json["user"]) == ("WARNING", "proxy.cache",
                                                                      "ann")
    assert as_json["message"] == "cache read failed (redis://***@redis:6379/0)"
    assert as_json["time"].endswith("+00:00")
    # Outside a request: a placeholder, never another request's id.
    assert json.loads(formatted("json", a_record()))["request_id"] == "-"


def test_structured_fields_are_cleaned_of_credentials_too() -> None:
    line = json.loads(formatted("json", a_record(path="/api/llm/ws?token=eyJa.eyJb.sig")))
    assert line["path"] == "/api/llm/ws?token=***"


def test_log_settings_take_any_case_and_refuse_other_values() -> None:
    settings = ExplicitSettings(proxy_log_format="JSON", proxy_log_level="Debug")
    assert (settings.proxy_log_format, settings.proxy_log_level) == ("json", "debug")
    with pytest.raises(ValidationError) as refused:
        ExplicitSettings(proxy_log_format="xml")
    assert refused.value.errors()[0]["loc"] == ("proxy_log_format",)
