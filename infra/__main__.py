"""`pulumi up`: the stack of docker-compose.yml on the Docker host named by DOCKER_HOST.

Only composes the components; every setting comes from `infra.config.load_config()`.
"""

import pulumi

from infra.config import load_config
from infra.datastores import Datastores, DatastoresArgs
from infra.gpu_exporter import GpuExporter, GpuExporterArgs
from infra.host_exporters import HostExporters, HostExportersArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Networks, NetworksArgs
from infra.ollama import Ollama, OllamaArgs
from infra.proxy import Proxy, ProxyArgs

config = load_config()
prefix = config.name_prefix

networks = Networks("networks", NetworksArgs(name_prefix=prefix))
ollama = Ollama(
    "ollama",
    OllamaArgs(
        name_prefix=prefix,
        image=config.images.ollama,
        networks=networks,
        memory_bytes=config.ollama_memory_bytes,
        keep_alive=config.ollama_keep_alive,
        num_parallel=config.ollama_num_parallel,
        max_loaded_models=config.ollama_max_loaded_models,
        gpu=config.gpu,
    ),
)
datastores = Datastores(
    "datastores",
    DatastoresArgs(
        name_prefix=prefix,
        redis_image=config.images.redis,
        postgres_image=config.images.postgres,
        networks=networks,
        postgres_password=config.secrets.postgres_password,
        proxy_db_password=config.secrets.proxy_db_password,
        redis_password=config.secrets.redis_password,
    ),
)
proxy = Proxy(
    "proxy",
    ProxyArgs(
        name_prefix=prefix,
        image_name=config.images.proxy,
        base_image=config.images.proxy_base,
        networks=networks,
        publish_address=config.proxy_publish_address,
        publish_port=config.proxy_port,
        jwt_audience=config.jwt_audience,
        jwt_issuer=config.jwt_issuer,
        trusted_proxies=config.proxy_trusted_proxies,
        audit_retention_days=config.proxy_audit_retention_days,
        secrets=config.secrets,
        depends_on=[ollama.container, datastores.redis, datastores.postgres],
    ),
)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(
        name_prefix=prefix,
        prometheus_image=config.images.prometheus,
        grafana_image=config.images.grafana,
        networks=networks,
        prometheus_bind=config.prometheus_bind,
        grafana_bind=config.grafana_bind,
        metrics_token=config.secrets.metrics_token,
        grafana_admin_password=config.secrets.grafana_admin_password,
        grafana_secret_key=config.secrets.grafana_secret_key,
        grafana_audit_db_password=config.secrets.grafana_audit_db_password,
        depends_on=[proxy.container],
    ),
)
HostExporters(
    "host-exporters",
    HostExportersArgs(
        name_prefix=prefix,
        node_exporter_image=config.images.node_exporter,
        cadvisor_image=config.images.cadvisor,
        docker_api_image=config.images.docker_api,
        networks=networks,
        gpu_expected=config.gpu,
    ),
)
if config.gpu:
    GpuExporter(
        "gpu-exporter",
        GpuExporterArgs(name_prefix=prefix, image=config.images.gpu_exporter, networks=networks),
    )

pulumi.export("proxy_url", f"http://{config.proxy_publish_address}:{config.proxy_port}")
pulumi.export("prometheus_url", f"http://{config.prometheus_bind}:9090")
pulumi.export("grafana_url", f"http://{config.grafana_bind}:3000")
pulumi.export("gpu", config.gpu)
# Ollama downloads models only when asked; this is the list to ask for after `pulumi up`
# (the README shows the one-line `docker exec … ollama pull` loop).
pulumi.export("models", list(config.models))
