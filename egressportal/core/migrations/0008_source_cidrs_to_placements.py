"""Apps' tenant-declared source CIDRs become placements, reported as if by the platform: each goes to
the node of the app's region whose pod CIDR holds it. One that fits no node, is wider than a /24, or
overlaps another app's placement in the region is dropped, with a warning event on the app saying so
(the platform reports the real placements on its next deploy)."""

import ipaddress

from django.db import migrations

MIN_PREFIXLEN = 24  # egressportal.core.ipam.MIN_PLACEMENT_PREFIXLEN, frozen here as migrations must be


def _pods(node):
    out = []
    for cidr in node.pod_cidrs or []:
        try:
            out.append(ipaddress.IPv4Network(cidr))
        except ValueError:
            continue
    return out


def forward(apps, schema_editor):
    App = apps.get_model("core", "App")
    AppSourceCIDR = apps.get_model("core", "AppSourceCIDR")
    Node = apps.get_model("core", "Node")
    Placement = apps.get_model("core", "Placement")
    Event = apps.get_model("core", "Event")
    nodes_by_region = {}
    for node in Node.objects.order_by("pk"):
        nodes_by_region.setdefault(node.region_id, []).append((node, _pods(node)))
    taken = {}  # region id -> [(first, last, app id)]
    dropped = {}
    for row in AppSourceCIDR.objects.order_by("first_int", "pk"):
        app = App.objects.get(pk=row.app_id)
        net = ipaddress.IPv4Network(row.cidr)
        first, last = int(net.network_address), int(net.broadcast_address)
        home = None
        if net.prefixlen >= MIN_PREFIXLEN:
            home = next((n for n, pods in nodes_by_region.get(app.region_id, []) if any(net.subnet_of(p) for p in pods)), None)
        clash = any(f <= last and first <= l and a != app.pk for f, l, a in taken.get(app.region_id, []))
        if home is None or clash:
            dropped.setdefault(app.pk, []).append(row.cidr)
            continue
        Placement.objects.create(
            region_id=app.region_id, node_id=home.pk, app_id=app.pk, cidr=str(net), first_int=first, last_int=last
        )
        taken.setdefault(app.region_id, []).append((first, last, app.pk))
    for app_id, cidrs in dropped.items():
        app = App.objects.get(pk=app_id)
        Event.objects.create(
            kind="app.source_cidrs_dropped",
            level="warning",
            message="Source CIDRs are no longer declared by app owners; the platform reports where apps run. "
            "These fit no node's pod CIDRs in this region (or were wider than /24, or overlapped another app), "
            f"so they were dropped: {', '.join(cidrs)}.",
            actor_name="system",
            app_id=app_id,
            subject=app.name,
            data={"dropped": cidrs},
        )


class Migration(migrations.Migration):
    dependencies = [("core", "0007_host_reconcile_retry_at")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
