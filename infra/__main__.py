"""`pulumi up`: the services of docker-compose.yml on the Docker host named by DOCKER_HOST, and
docker-compose.engine.yml on each engine host of `engines` that names its own `dockerHost`.

`docker compose config` renders the compose files with the stack config's values (secrets as
placeholders), and infra/stack.py deploys what it renders: the stack is described once, in
docker-compose.yml. Pulumi adds only what it owns: the Docker hosts, the secrets, the outputs.
"""

from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.compose import ENGINE_PROJECT, engine_files, render
from infra.config import load_config
from infra.stack import ComposeStack, ComposeStackArgs, published_url

# The checkout this program belongs to: its compose files and the files they mount.
ROOT = Path(__file__).resolve().parent.parent

config = load_config(ROOT)
rendered = render(ROOT, config.files, config.name_prefix, config.compose_environment())
ComposeStack("llm-stack", ComposeStackArgs(rendered, ROOT, config.secrets))

# Engine hosts Pulumi deploys: Ollama alone on each one's Docker host. Its published port must be
# reachable from the stack's host only: a firewall as the Ansible firewall role sets up (see
# infra/README.md), which this program does not manage.
for engine in config.engines:
    if engine.docker_host is None:
        continue
    host = docker.Provider(f"engine-{engine.name}", host=engine.docker_host)
    engine_rendered = render(ROOT, engine_files(ROOT, engine.gpu), ENGINE_PROJECT,
                             config.engine_environment(engine))
    ComposeStack(
        f"engine-{engine.name}",
        ComposeStackArgs(engine_rendered, ROOT, {}, resource_prefix=f"{engine.name}-"),
        pulumi.ResourceOptions(providers={"docker": host}),
    )

pulumi.export("proxy_url", published_url(rendered, "proxy"))
pulumi.export("prometheus_url", published_url(rendered, "prometheus"))
pulumi.export("alertmanager_url", published_url(rendered, "alertmanager"))
pulumi.export("grafana_url", published_url(rendered, "grafana"))
pulumi.export("gpu", config.gpu)
pulumi.export("engines", {engine.name: engine.url for engine in config.engines})
# Ollama downloads models only when asked; this is the list to ask for after `pulumi up`
# (the README shows the one-line `docker exec … ollama pull` loop).
pulumi.export("models", list(config.models))
