"""Operability: Prometheus metrics, health endpoints, structured logs, worker health."""
