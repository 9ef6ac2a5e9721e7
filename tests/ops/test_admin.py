"""The admin index shows what needs attention."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressStatus, HealthStatus, Node


def test_admin_index_shows_what_needs_attention(client, staff, infra, alice, make_app):
    apps = [make_app(alice, f"busy-{i}") for i in range(6)]
    for app in apps:
        services.egress_enable(app=app)  # 12 of 14 addresses: 86 %
    stuck, failed = apps[0], apps[1]
    App.objects.filter(pk=stuck.pk).update(egress_requested_at=timezone.now() - dt.timedelta(minutes=7))
    App.objects.filter(pk=failed.pk).update(egress_status=EgressStatus.FAILED, egress_message="gw-a unreachable")
    node = infra["nodes"][1]
    Node.objects.filter(pk=node.pk).update(health=HealthStatus.UNHEALTHY, health_message="unreachable: timed out")
    client.force_login(staff)
    response = client.get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    block = html[html.index('id="egress-attention"'):]
    assert "Needs attention" in html
    assert "pool-a" in block and "86%" in block
    assert node.name in block and "unreachable: timed out" in block
    assert stuck.name in block and failed.name in block and "gw-a unreachable" in block
    assert "pending more than 5 min (1)" in block and "Apps failed (1)" in block
    # No Redis in this test: the sweep is unknown and flagged, the page still renders.
    assert "Last sweep" in block and "late" in block
    # The healthy apps pending for seconds are not listed.
    assert apps[2].name not in block


def test_admin_index_quiet_when_all_is_well(client, staff, infra):
    client.force_login(staff)
    html = client.get("/admin/").content.decode()
    block = html[html.index('id="egress-attention"'):]
    assert block.count("None.") == 3
