"""The Pulumi program that builds the stack of docker-compose.yml on a Docker host.

`__main__.py` composes the components; `config.py` is the only place that reads stack config.
"""
