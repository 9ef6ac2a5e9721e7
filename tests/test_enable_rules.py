"""One answer to "can this app be enabled?": what the portal tells before the click
(capacity.egress_enable_problem) and what the allocator does (egress_enable) agree, also at the edges
of quarantine."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from egressportal.core import capacity, services
from egressportal.core.errors import ConflictError, PoolExhausted
from egressportal.core.models import App, EgressIP, EgressIPStatus

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.77"


@pytest.fixture
def one_address(region, make_gateway):
    """A region with one gateway and a pool of exactly one address."""
    make_gateway()
    services.pool_create(region=region, name="tiny", cidr=f"{ADDRESS}/32")


def _quarantined_by(owner, make_app, *, days_ago: float) -> None:
    """``owner``'s app held the address and released it ``days_ago``."""
    holder = make_app(owner)
    services.egress_ips_allocate(app=holder)
    services.egress_ips_release(app=holder, now=timezone.now() - dt.timedelta(days=days_ago))


def test_an_address_whose_quarantine_ended_is_offered_and_handed_out(one_address, make_app, alice, bob, settings):
    _quarantined_by(bob, make_app, days_ago=settings.EGRESS_QUARANTINE_DAYS + 1)
    app = make_app(alice)
    assert capacity.addresses_available(app=app) == 1
    assert capacity.egress_enable_problem(app) is None
    app, changed = services.egress_enable(app=app)
    assert changed
    assert list(EgressIP.objects.filter(app=app).values_list("address", flat=True)) == [ADDRESS]


def test_another_tenants_address_in_quarantine_is_neither_offered_nor_handed_out(
    one_address, make_app, alice, bob, settings
):
    _quarantined_by(bob, make_app, days_ago=settings.EGRESS_QUARANTINE_DAYS - 1)
    app = make_app(alice)
    assert capacity.egress_enable_problem(app) == capacity.OUT_OF_ADDRESSES
    with pytest.raises(PoolExhausted):
        services.egress_enable(app=app)
    assert not EgressIP.objects.filter(app=app).exists()


def test_the_owners_own_address_in_quarantine_is_offered_and_handed_back(one_address, make_app, alice, settings):
    _quarantined_by(alice, make_app, days_ago=1)
    app = make_app(alice)
    assert capacity.egress_enable_problem(app) is None
    services.egress_enable(app=app)
    assert EgressIP.objects.get(address=ADDRESS).app == app


def test_an_address_withdrawn_from_another_dedicated_app_of_the_owner_stays_reserved(one_address, make_app, alice):
    """Withdrawn during a drain: it stays reserved for its app, which still wants dedicated egress."""
    holder = make_app(alice)
    services.egress_enable(app=holder)
    EgressIP.objects.filter(address=ADDRESS).update(
        status=EgressIPStatus.QUARANTINED, app=None, gateway=None, role="", released_at=timezone.now(),
        last_app=holder, last_owner=alice.pk,
    )
    app = make_app(alice)
    assert capacity.egress_enable_problem(app) == capacity.OUT_OF_ADDRESSES
    with pytest.raises(PoolExhausted):
        services.egress_enable(app=app)


def test_refusals_are_the_same_words_before_and_after_the_click(one_address, make_app, alice):
    app = make_app(alice)
    App.objects.filter(pk=app.pk).update(delete_requested=True)  # deletion waits: no enabling any more
    app.refresh_from_db()
    assert capacity.egress_enable_problem(app) == capacity.BEING_DELETED
    with pytest.raises(ConflictError, match="being deleted"):
        services.egress_enable(app=app)


def test_an_app_running_nowhere_yet_is_offered_the_enable(one_address, make_app, alice):
    """Its addresses can go into allow-lists before the platform first places it."""
    app = make_app(alice, cidrs=[])
    assert capacity.egress_enable_problem(app) is None
