"""Business logic: every write goes through a function here (HackSoft style)."""

from .apps import (
    app_create,
    app_delete,
    app_hosts_mark_pending,
    app_update,
    egress_disable,
    egress_enable,
    egress_enable_many,
    egress_set,
)
from .drain import gateway_drain, gateway_undrain
from .egress6 import egress6_backfill
from .events import event_record
from .hosts import gateway_create, host_accept_presented_key, host_create, host_delete, host_update, node_create
from .network import (
    egress_ips_allocate,
    egress_ips_release,
    pool_create,
    pool_delete,
    pool_update,
    region_create,
    region_delete,
    region_update,
)
from .placements import node_placements_set
from .quotas import quota_usage, tenant_quota_set
from .reconcile import reconcile_dispatch, reconcile_request

__all__ = [
    "app_create",
    "app_delete",
    "app_hosts_mark_pending",
    "app_update",
    "egress6_backfill",
    "egress_disable",
    "egress_enable",
    "egress_enable_many",
    "egress_ips_allocate",
    "egress_ips_release",
    "egress_set",
    "event_record",
    "gateway_create",
    "gateway_drain",
    "gateway_undrain",
    "host_accept_presented_key",
    "host_create",
    "host_delete",
    "host_update",
    "node_create",
    "node_placements_set",
    "pool_create",
    "pool_delete",
    "pool_update",
    "quota_usage",
    "reconcile_dispatch",
    "reconcile_request",
    "region_create",
    "region_delete",
    "region_update",
    "tenant_quota_set",
]
