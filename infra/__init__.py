"""The Pulumi program that deploys the stack of docker-compose.yml on a Docker host.

`__main__.py` wires it up; `compose.py` runs `docker compose config`; `config.py` is the only
place that reads stack config; `stack.py` turns the rendered services into Docker resources.
"""
