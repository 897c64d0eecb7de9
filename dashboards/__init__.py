"""Monitoring as code: Prometheus rules and Grafana dashboards generated from config.py."""
