"""Quotas per tenant on apps and dedicated addresses: at the quota, 409 with a clear message and nothing
created or allocated; addresses in quarantine count against the tenant who released them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from egressportal.core import services
from egressportal.core.errors import QuotaExceeded
from egressportal.core.models import App, EgressIP, EgressIPStatus, EgressStatus, EgressType

from .conftest import assert_error

pytestmark = pytest.mark.django_db


def release(app: App) -> None:
    """What the workers do at the end of a disable: the addresses go to quarantine."""
    services.egress_ips_release(app=app)
    App.objects.filter(pk=app.pk).update(egress_type=EgressType.SHARED, egress_status=EgressStatus.DISABLED)


def test_app_quota(alice_api, bob_api, region, settings, staff, alice):
    settings.EGRESS_QUOTA_APPS = 2
    for name in ("one", "two"):
        assert alice_api.post("/api/v1/apps/", {"name": name, "region": region.slug}).status_code == 201
    error = assert_error(alice_api.post("/api/v1/apps/", {"name": "three", "region": region.slug}), 409, "quota_exceeded")
    assert "2 of 2 apps" in error["message"]
    assert not App.objects.filter(name="three").exists()
    # Others have their own quota.
    assert bob_api.post("/api/v1/apps/", {"name": "three", "region": region.slug}).status_code == 201
    # Staff raise alice's quota: audited, and it takes effect at once.
    services.tenant_quota_set(user=alice, max_apps=3, actor=staff)
    assert alice_api.post("/api/v1/apps/", {"name": "three", "region": region.slug}).status_code == 201
    assert services.quota_usage(alice).apps == 3


def test_address_quota_counts_quarantine_against_who_released_it(
    infra, make_app, make_gateway, alice, bob, settings, alice_api
):
    settings.EGRESS_QUOTA_ADDRESSES = 3  # two gateways: 2 addresses per app
    first, second = make_app(alice, "first"), make_app(alice, "second")
    services.egress_enable(app=first)
    assert services.quota_usage(alice).addresses == 2
    before = sorted(EgressIP.objects.values_list("address", "status", "app_id"))
    error = assert_error(alice_api.put(f"/api/v1/apps/{second.pk}/egress/", {"type": "dedicated"}), 409, "quota_exceeded")
    assert "quota is 3" in error["message"] and "Nothing was allocated" in error["message"]
    assert sorted(EgressIP.objects.values_list("address", "status", "app_id")) == before
    second.refresh_from_db()
    assert second.egress_type == EgressType.SHARED and second.egress_status == EgressStatus.DISABLED

    # Released addresses still count while in quarantine: releasing and taking fresh ones elsewhere is no
    # way around the quota (another app of hers in this region may take them back, as allow-lists expect).
    settings.EGRESS_QUOTA_ADDRESSES = 2
    release(first)
    assert services.quota_usage(alice).addresses == 2
    elsewhere = services.region_create(slug="test-elsewhere")
    make_gateway("gw-far", reg=elsewhere)
    services.pool_create(region=elsewhere, name="pool-far", cidr="203.0.113.64/28")
    far = make_app(alice, "far", reg=elsewhere)
    with pytest.raises(QuotaExceeded):
        services.egress_enable(app=far)
    assert not EgressIP.objects.filter(pool__region=elsewhere).exclude(status="free").exists()
    # Re-enabling takes her own quarantined addresses back: no more than before.
    services.egress_enable(app=second)
    assert services.quota_usage(alice).addresses == 2
    release(second)
    # Once the quarantine is over, they no longer count.
    EgressIP.objects.filter(status=EgressIPStatus.QUARANTINED).update(
        released_at=timezone.now() - dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS + 1)
    )
    assert services.quota_usage(alice).addresses == 0
    services.egress_enable(app=far)
    assert services.quota_usage(alice).addresses == 1
    # Bob's quota is his own.
    services.egress_enable(app=make_app(bob, "bobs"))
    assert services.quota_usage(bob).addresses == 2


def test_quota_override_validation(alice, staff):
    with pytest.raises(Exception) as refused:
        services.tenant_quota_set(user=alice, max_apps=-1, actor=staff)
    assert "whole number" in str(refused.value)
    services.tenant_quota_set(user=alice, max_addresses=0, actor=staff)
    assert services.quota_usage(alice).max_addresses == 0
    services.tenant_quota_set(user=alice, actor=staff)  # back to the defaults
    assert services.quota_usage(alice).max_addresses == 20
