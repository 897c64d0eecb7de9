"""The compose files are the one description of the stack (docker-compose.yml, and the engine's
definition it extends, infra/ollama.yml): a change made there alone reaches all three deployment
paths (compose, Pulumi, Ansible), and a change Pulumi cannot carry stops it.

The changes are made in a temporary copy of the repository's files, never in the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.compose import COMPOSE_FILE, GPU_COMPOSE_FILE, compose_files, run, with_extended
from infra.stack import UnsupportedCompose
from tests.infra.pulumi_mocks import Deployment, reveal
from tests.infra.stack_files import COMPOSE, COMPOSE_SECRETS, GPU_COMPOSE, REPO_ROOT, rendered
from tests.playbooks.ansible_cli import ROLES, run_playbook

pytestmark = pytest.mark.timeout(300)
Deploy = Callable[..., Deployment]
# What the compose files mount or the program runs: enough of the repository for all three paths.
COPIED = (COMPOSE_FILE, GPU_COMPOSE_FILE, "infra", "dashboards")
ENGINE_FILE = "infra/ollama.yml"


def copy_repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    return root


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` in the file, keeping everything else byte for byte."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def changed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy whose compose files alone changed: Ollama's image and a new Ollama variable (in its
    definition, infra/ollama.yml), Grafana's host port and a new Grafana volume."""
    root = copy_repository(tmp_path)
    compose, engine = root / COMPOSE_FILE, root / ENGINE_FILE
    ollama_image = yaml.safe_load(engine.read_text())["services"]["ollama"]["image"]
    new_image = ollama_image.rsplit(":", 1)[0] + ":9.9.9"
    edit(engine, f"image: {ollama_image}\n", f"image: {new_image}\n")
    edit(compose, ":3000:3000\n", ":3001:3000\n")
    edit(engine, "      OLLAMA_HOST: 0.0.0.0:11434\n",
         "      OLLAMA_HOST: 0.0.0.0:11434\n"
         "      OLLAMA_CONTEXT_LENGTH: ${OLLAMA_CONTEXT_LENGTH:-8192}\n")  # fmt: skip
    edit(compose, "      - grafana-data:/var/lib/grafana\n",
         "      - grafana-data:/var/lib/grafana\n"
         "      - grafana-plugins:/var/lib/grafana-plugins\n")  # fmt: skip
    edit(compose, "  grafana-data:\n", "  grafana-data:\n  grafana-plugins:\n")
    return root, {"image": new_image}


ANSIBLE_PLAYBOOK = """\
- name: Deploy the compose project's files as the stack role does, and read the nvidia role's image
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  vars_files:
    - {nvidia_defaults}
  tasks:
    - name: Gather the values as the stack role does
      ansible.builtin.include_role:
        name: stack
        tasks_from: env.yml
        public: true
    - name: Put the files in place as the stack role does
      ansible.builtin.include_role:
        name: stack
        tasks_from: files.yml
    - name: Record the image of the nvidia role's smoke test
      ansible.builtin.copy:
        content: "{{{{ nvidia_smoke_test_image }}}}"
        dest: {smoke_image}
        mode: "0644"
"""


def test_a_change_to_the_compose_files_alone_reaches_every_path(
    changed: tuple[Path, dict[str, str]], deploy: Deploy, tmp_path: Path
) -> None:
    root, new = changed

    # 1. docker compose itself.
    env = {**COMPOSE_SECRETS, "OLLAMA_CONTEXT_LENGTH": "16384"}
    services = rendered(root / COMPOSE_FILE, root=root, env=env)["services"]
    assert services["ollama"]["image"] == new["image"]
    assert services["ollama"]["environment"]["OLLAMA_CONTEXT_LENGTH"] == "16384"
    assert [p["published"] for p in services["grafana"]["ports"]] == ["3001"]
    plugins = {"source": "grafana-plugins", "target": "/var/lib/grafana-plugins"}
    assert any(plugins.items() <= v.items() for v in services["grafana"]["volumes"])

    # 2. Pulumi: the copy's program, with the new variable's key derived and set.
    deployment = deploy(root=root, ollamaContextLength="16384")
    assert deployment.remote_images["ollama"].plain["name"] == new["image"]
    assert deployment.container("ollama").plain["image"] == new["image"]
    assert "OLLAMA_CONTEXT_LENGTH=16384" in reveal(deployment.container("ollama").inputs["envs"])
    grafana = deployment.container("grafana").plain
    assert [(p["external"], p["internal"]) for p in grafana["ports"]] == [(3001, 3000)]
    assert deployment.outputs["grafana_url"] == "http://127.0.0.1:3001"
    assert deployment.volumes["grafana-plugins"].plain["name"] == "llm-stack_grafana-plugins"
    mounted = {"volumeName": "llm-stack_grafana-plugins", "containerPath": plugins["target"]}
    assert mounted in grafana["volumes"]
    # Unset, the new variable takes compose's default.
    default = deploy(root=root).container("ollama").inputs["envs"]
    assert "OLLAMA_CONTEXT_LENGTH=8192" in reveal(default)

    # 3. Ansible: the stack role ships the file and sets the new variable through its rule; the
    # nvidia role's smoke test follows the new Ollama image.
    deployed, smoke_image = tmp_path / "deployed", tmp_path / "smoke-image"
    playbook = tmp_path / "deploy-files.yml"
    nvidia_defaults = ROLES / "nvidia" / "defaults" / "main.yml"
    playbook.write_text(
        ANSIBLE_PLAYBOOK.format(nvidia_defaults=nvidia_defaults, smoke_image=smoke_image)
    )
    variables = {
        "stack_source_dir": str(root),
        "stack_dir": str(deployed),
        "stack_gpu": False,
        "stack_build_proxy": False,
        # The new compose variable, through the role's rule: no change to the role.
        "stack_ollama_context_length": "16384",
        **{f"stack_{name.lower()}": value for name, value in COMPOSE_SECRETS.items()},
    }
    ansible = run_playbook("-i", "localhost,", playbook, "-e", json.dumps(variables))
    assert ansible.returncode == 0, ansible.summary()
    for name in (COMPOSE_FILE, ENGINE_FILE):
        assert (deployed / name).read_bytes() == (root / name).read_bytes()
    assert smoke_image.read_text() == new["image"]
    lines = (deployed / ".env").read_text().splitlines()
    dotenv = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert dotenv["OLLAMA_CONTEXT_LENGTH"] == "16384"
    on_host = rendered(deployed / COMPOSE_FILE, root=deployed, env=dotenv)["services"]
    assert on_host["ollama"]["environment"]["OLLAMA_CONTEXT_LENGTH"] == "16384"
    assert on_host["ollama"]["image"] == new["image"]
    assert [p["published"] for p in on_host["grafana"]["ports"]] == ["3001"]


# Each change, with the file it is made in.
def _privileged(doc: str) -> str:
    return doc.replace("  cadvisor:\n", "  cadvisor:\n    privileged: true\n")


def _cpu_limit(doc: str) -> str:
    return doc.replace("        limits:\n", "        limits:\n          cpus: \"2\"\n")


def _secret_in_a_command(doc: str) -> str:
    return doc.replace(r'--requirepass \"$$REDIS_PASSWORD\"', "--requirepass ${REDIS_PASSWORD}")


def _file_secret(doc: str) -> str:
    return doc.replace("    environment: PROXY_METRICS_TOKEN\n", "    file: ./metrics-token\n")


@pytest.mark.parametrize(
    ("changed", "change", "message"),
    [
        (COMPOSE_FILE, _privileged, "service 'cadvisor': the compose field 'privileged' (true)"),
        (ENGINE_FILE, _cpu_limit,
         "service 'ollama' deploy.resources.limits: the compose field 'cpus'"),
        (COMPOSE_FILE, _secret_in_a_command,
         "service 'redis': the secret REDIS_PASSWORD is used in 'command'"),
        (COMPOSE_FILE, _file_secret, "secret 'proxy_metrics_token': the compose field 'file'"),
    ],
    ids=["service-field", "nested-field", "secret-outside-environment", "secret-from-a-file"],
)
def test_a_compose_field_pulumi_cannot_carry_stops_the_program(
    tmp_path: Path, deploy: Deploy, changed: str, change: Callable[[str], str], message: str
) -> None:
    root = copy_repository(tmp_path)
    compose = root / changed
    before = compose.read_text()
    compose.write_text(change(before))
    assert compose.read_text() != before, "the change did not apply"
    (root / "metrics-token").write_text("token\n")

    with pytest.raises(UnsupportedCompose, match="^" + re.escape(message)):
        deploy(root=root)


def test_the_gpu_exporter_runs_only_with_the_gpu_override() -> None:
    cpu = rendered(COMPOSE)["services"]
    gpu = rendered(COMPOSE, GPU_COMPOSE)["services"]
    assert "gpu-exporter" not in cpu
    declared = yaml.safe_load(COMPOSE.read_text())["services"]["gpu-exporter"]
    assert gpu["gpu-exporter"]["image"] == declared["image"]
    assert declared["profiles"] == ["gpu"]
    # Nothing of it is pulled on a CPU host: compose leaves inactive profiles out entirely.
    images = run(REPO_ROOT, [COMPOSE], "--images", env=COMPOSE_SECRETS).stdout.split()
    assert gpu["gpu-exporter"]["image"] not in images


def pinned_images() -> set[str]:
    files = compose_files(REPO_ROOT, gpu=True)
    images = set(run(REPO_ROOT, files, "--images", env=COMPOSE_SECRETS).stdout.split())
    services: dict[str, Any] = rendered(*files)["services"]
    bases = {s["build"]["args"]["BASE_IMAGE"] for s in services.values() if "build" in s}
    # The proxy's own tag is a name for what is built, not a pin.
    return (images | bases) - {services["proxy"]["image"]}


def test_every_image_is_pinned_in_one_compose_file_only() -> None:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    # Tests and Prometheus' rule tests may name an image as data (a label in a sample series).
    texts = {
        name: (REPO_ROOT / name).read_text(errors="ignore")
        for name in listed
        if (REPO_ROOT / name).is_file()
        and not name.startswith(("tests/", "dashboards/prometheus/tests/"))
    }
    sources = {str(p.relative_to(REPO_ROOT))
               for p in with_extended(compose_files(REPO_ROOT, gpu=True))}
    images = pinned_images()
    assert len(images) >= 10, images
    for image in images:
        holders = [name for name, text in texts.items() if image in text]
        assert len(holders) == 1 and holders[0] in sources, f"{image} is pinned in {holders}"
