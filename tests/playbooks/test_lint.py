"""ansible-lint (production profile, offline) and ansible-playbook's syntax check."""

from __future__ import annotations

import subprocess

import pytest

from tests.playbooks.ansible_cli import (
    ANSIBLE_RUN,
    CI_INVENTORY,
    EXAMPLE_INVENTORY,
    PLAYBOOKS,
    REPO,
    ansible_env,
    run_ansible,
)
from tests.support.timing import scaled

pytestmark = pytest.mark.timeout(300)


def test_ansible_lint_passes_the_production_profile_offline() -> None:
    # What people and CI run: the syntax check, then ansible-lint with playbooks/.ansible-lint.
    result = subprocess.run(
        [ANSIBLE_RUN, "lint"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=scaled(300),
        stdin=subprocess.DEVNULL,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output
    # Offline: nothing was fetched from Galaxy.
    assert "Skipped installing collection dependencies due to running in offline mode" in output


@pytest.mark.parametrize("inventory", [CI_INVENTORY, EXAMPLE_INVENTORY], ids=["ci", "example"])
def test_site_yml_passes_the_syntax_check(inventory: object) -> None:
    result = run_ansible(
        "ansible-playbook", "-i", inventory, "--syntax-check", PLAYBOOKS / "site.yml"
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_plays_run_in_order_each_with_its_tag() -> None:
    result = run_ansible(
        "ansible-playbook", "-i", CI_INVENTORY, "--list-tags", PLAYBOOKS / "site.yml"
    )

    assert result.returncode == 0, result.stderr
    plays = [
        line.strip() for line in result.stdout.splitlines() if line.strip().startswith("play #")
    ]
    tags = [play.split("TAGS: [")[1].rstrip("]") for play in plays]
    # First an untagged play gathers the facts every role reads, whatever --tags says.
    assert tags == ["", "docker", "nvidia", "firewall", "engine", "stack", "models", "models",
                    "verify"], plays


def test_the_repository_root_stays_free_of_ansible_files() -> None:
    # The config lives in playbooks/; scripts/ansible-run points ANSIBLE_CONFIG at it.
    assert not (REPO / "ansible.cfg").exists()
    assert not (REPO / ".ansible-lint").exists()
