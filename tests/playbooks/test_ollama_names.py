"""The models role's name handling (roles/models/filter_plugins/ollama_names.py)."""

from __future__ import annotations

import pytest

from tests.playbooks.ansible_cli import ROLES, load_plugin

names = load_plugin(ROLES / "models" / "filter_plugins" / "ollama_names.py")


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("codellama:7b", "codellama:7b"),
        (" mistral ", "mistral:latest"),
        ("registry.example:5000/team/model", "registry.example:5000/team/model:latest"),
        ("registry.example:5000/team/model:q4", "registry.example:5000/team/model:q4"),
    ],
)
def test_a_missing_tag_means_latest(given: str, full: str) -> None:
    assert names.ollama_model_name(given) == full


def test_models_already_present_under_their_full_name_are_not_pulled_again() -> None:
    present = ["llama3.2:latest", "mistral:latest", "codellama:7b"]

    missing = names.ollama_missing_models(
        ["llama3.2", "mistral", "codellama:7b", "gemma3:270m", "gemma3:270m"], present
    )

    assert missing == ["gemma3:270m"]


def test_a_different_tag_of_a_present_model_is_missing() -> None:
    assert names.ollama_missing_models(["llama3.2:1b"], ["llama3.2:latest"]) == ["llama3.2:1b"]
