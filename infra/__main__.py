"""`pulumi up`: the services of docker-compose.yml on the Docker host named by DOCKER_HOST.

`docker compose config` renders the compose files with the stack config's values (secrets as
placeholders), and infra/stack.py deploys what it renders: the stack is described once, in
docker-compose.yml. Pulumi adds only what it owns: the Docker host, the secrets, the outputs.
"""

from pathlib import Path

import pulumi

from infra.compose import render
from infra.config import load_config
from infra.stack import ComposeStack, ComposeStackArgs, published_url

# The checkout this program belongs to: its compose files and the files they mount.
ROOT = Path(__file__).resolve().parent.parent

config = load_config(ROOT)
rendered = render(ROOT, config.files, config.name_prefix, config.compose_environment())
ComposeStack("llm-stack", ComposeStackArgs(rendered, ROOT, config.secrets))

pulumi.export("proxy_url", published_url(rendered, "proxy"))
pulumi.export("prometheus_url", published_url(rendered, "prometheus"))
pulumi.export("grafana_url", published_url(rendered, "grafana"))
pulumi.export("gpu", config.gpu)
# Ollama downloads models only when asked; this is the list to ask for after `pulumi up`
# (the README shows the one-line `docker exec … ollama pull` loop).
pulumi.export("models", list(config.models))
