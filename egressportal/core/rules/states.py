"""The words of the state machines, defined once: the models' choices and the pure rules both use them."""

from __future__ import annotations

__all__ = ["ASSIGNED", "ASSIGNING", "DEGRADED", "DISABLED", "FAILED", "HEALTHY", "RELEASING", "UNHEALTHY", "UNKNOWN"]

# A host's health (models.HealthStatus).
UNKNOWN = "unknown"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

# An app's egress status (models.EgressStatus).
DISABLED = "disabled"
ASSIGNING = "assigning"
ASSIGNED = "assigned"
DEGRADED = "degraded"
RELEASING = "releasing"
FAILED = "failed"
