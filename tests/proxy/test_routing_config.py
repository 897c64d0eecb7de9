"""Where the proxy reads its engines from: PROXY_UPSTREAMS_FILE, or the same document in
PROXY_UPSTREAMS itself (JSON on one line, as Ansible's `.env` and Pulumi pass it), never both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proxy.core.settings import Settings, SettingsError
from proxy.upstream.router import RoutingConfig

ROUTING = {
    "upstreams": [
        {"name": "local", "url": "http://ollama:11434"},
        {"name": "gpu-2", "url": "http://10.0.0.12:11434", "weight": 2},
    ],
    "aliases": {"chat": "llama3.2"},
}


def test_the_variable_and_the_file_say_the_same(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.yml"
    path.write_text(yaml.safe_dump(ROUTING))
    from_file = RoutingConfig.load(Settings(proxy_upstreams_file=path))
    inline = RoutingConfig.load(Settings(proxy_upstreams=json.dumps(ROUTING)))
    assert inline == from_file
    assert [(u.name, u.weight) for u in inline.upstreams] == [("local", 1.0), ("gpu-2", 2.0)]


def test_without_either_the_one_ollama_at_ollama_url() -> None:
    config = RoutingConfig.load(Settings(ollama_url="http://engine:11434"))
    assert [(u.name, u.url) for u in config.upstreams] == [("ollama", "http://engine:11434")]


def test_both_set_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.yml"
    path.write_text(yaml.safe_dump(ROUTING))
    with pytest.raises(SettingsError, match="PROXY_UPSTREAMS and PROXY_UPSTREAMS_FILE"):
        RoutingConfig.load(Settings(proxy_upstreams_file=path,
                                    proxy_upstreams=json.dumps(ROUTING)))


@pytest.mark.parametrize(("text", "says"), [
    ('{"upstreams": [', "PROXY_UPSTREAMS"),
    ('{"upstreams": []}', "at least 1 item"),
    ('{"upstreams": [{"name": "a", "url": "ftp://x"}]}', "url"),
])
def test_an_invalid_document_names_the_variable(text: str, says: str) -> None:
    with pytest.raises(SettingsError, match="PROXY_UPSTREAMS") as refused:
        RoutingConfig.load(Settings(proxy_upstreams=text))
    assert says in str(refused.value)
