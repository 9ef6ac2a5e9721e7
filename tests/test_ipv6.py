"""IPv6 in the domain (issue 20): pools, the IPv6 partner of each egress address, placements, transit
addresses, capacity. Runs on PostgreSQL and on SQLite; the database's own guards are marked postgres."""

from __future__ import annotations

import datetime as dt
from ipaddress import ip_address, ip_network

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from egressportal.core import capacity, selectors, services
from egressportal.core.desired import gateway_desired, node_desired
from egressportal.core.errors import ConflictError, PoolExhausted
from egressportal.core.models import App, EgressIP, EgressIPStatus, Event, HostSync, IPFamily, IPPool, Placement
from egressportal.core.services.hostsync import host_reconcile_succeeded
from egressportal.core.services.quotas import quota_check_addresses
from tests.helpers import place

pytestmark = pytest.mark.django_db

POOL6 = "2001:db8:0:2::/64"


@pytest.fixture
def infra6(infra):
    """infra (two gateways, two nodes, an IPv4 /28) made dual-stack: IPv6 transit addresses, IPv6 pods on
    node-a, and an IPv6 /64 pool."""
    gw1, gw2 = infra["gateways"]
    node1, node2 = infra["nodes"]
    services.host_update(host=gw1, transit_address6="2001:db8:0:1::11")
    services.host_update(host=gw2, transit_address6="2001:db8:0:1::12")
    services.host_update(host=node1, transit_address6="2001:db8:0:1::21",
                         pod_cidrs=[*node1.pod_cidrs, "2001:db8:10:1::/64"])
    services.host_update(host=node2, pod_cidrs=[*node2.pod_cidrs, "2001:db8:10:2::/64"])
    infra["pool6"] = services.pool_create(region=infra["region"], name="pool6", cidr=POOL6)
    return infra


class TestPools6:
    def test_an_ipv6_pool_is_a_pool_of_its_own_family(self, region):
        pool = services.pool_create(region=region, name="p6", cidr="2001:DB8:0:2::/64", excluded=["2001:db8:0:2::1"])
        pool.refresh_from_db()
        assert (pool.cidr, pool.family, pool.first_int, pool.last_int) == (POOL6, IPFamily.IPV6, None, None)
        assert (pool.first_hex, pool.last_hex) == ("20010db8000000020000000000000000", "20010db800000002ffffffffffffffff")
        assert pool.size == 2**64 - 2  # the subnet-router anycast address and the excluded one
        assert selectors.pool_utilization(pool).free == 2**64 - 2

    @pytest.mark.parametrize(
        ("cidr", "fragment"),
        [
            ("2001:db8::/63", "at most a /64"),
            ("2001:db8::1/64", "host bits set"),
            ("fe80::/64", "link-local"),
            ("::ffff:203.0.113.0/120", "IPv4-mapped"),
            ("ff00::/64", "multicast"),
            ("2001:db8::%eth0/64", "zone index"),
            ("2001:db8::/64 || true", "not a valid"),
        ],
    )
    def test_bad_ipv6_pools(self, region, cidr, fragment):
        with pytest.raises(ValidationError) as err:
            services.pool_create(region=region, name="p", cidr=cidr)
        assert fragment in str(err.value.message_dict["cidr"])
        assert not IPPool.objects.exists()

    def test_excluded_addresses_are_ipv6_inside_the_pool(self, region):
        for excluded, fragment in [(["2001:db8:0:3::1"], "not inside"), (["203.0.113.1"], "not a valid"),
                                   (["fe80::1"], "link-local")]:
            with pytest.raises(ValidationError, match=fragment):
                services.pool_create(region=region, name="p", cidr=POOL6, excluded=excluded)
        pool = services.pool_create(region=region, name="p", cidr=POOL6)
        services.pool_update(pool=pool, excluded=["2001:db8:0:2::5", "2001:DB8:0:2::3"])
        assert pool.excluded == ["2001:db8:0:2::3", "2001:db8:0:2::5"]

    def test_ipv6_pools_never_overlap_and_never_clash_with_ipv4(self, region):
        services.pool_create(region=region, name="a", cidr="2001:db8:0:2::/64")
        for cidr in ["2001:db8:0:2::/120", "2001:db8:0:2::ff/128"]:
            with pytest.raises(ValidationError, match="overlaps pool a"):
                services.pool_create(region=region, name="b", cidr=cidr)
        services.pool_create(region=region, name="c", cidr="2001:db8:0:3::/64")
        services.pool_create(region=region, name="d", cidr="203.0.113.0/28")
        assert sorted(IPPool.objects.values_list("name", "family")) == [("a", 6), ("c", 6), ("d", 4)]

    @pytest.mark.postgres
    def test_database_refuses_an_overlapping_ipv6_pool_even_without_the_service(self, region):
        services.pool_create(region=region, name="a", cidr="2001:db8:0:2::/64")
        with pytest.raises(IntegrityError), transaction.atomic():
            IPPool(region=region, name="raw", cidr="2001:db8:0:2::100/120").save()
        IPPool(region=region, name="raw4", cidr="203.0.113.0/28").save()  # the other family never overlaps

    @pytest.mark.postgres
    def test_database_refuses_mixed_up_bounds(self, region):
        pool = services.pool_create(region=region, name="a", cidr="2001:db8:0:2::/64")
        with pytest.raises(IntegrityError), transaction.atomic():
            IPPool.objects.filter(pk=pool.pk).update(first_int=1, last_int=2)

    def test_an_ipv6_pool_goes_only_when_none_of_its_addresses_is_held(self, infra6, make_app, alice):
        pool6 = infra6["pool6"]
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        with pytest.raises(ConflictError, match="still has"):
            services.pool_delete(pool=pool6)
        services.egress_ips_release(app=app, now=timezone.now() - dt.timedelta(days=400))
        with pytest.raises(ConflictError, match="still has"):
            services.pool_delete(pool=pool6)  # quarantined: still the tenant's
        EgressIP.objects.update(status=EgressIPStatus.FREE, released_at=None)
        services.pool_delete(pool=pool6)
        assert not EgressIP.objects.exclude(address6=None).exists()


class TestAllocation6:
    def test_each_address_gets_an_ipv6_partner_on_the_same_gateway(self, infra6, make_app, alice):
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        ips = list(EgressIP.objects.filter(app=app).order_by("address_int"))
        assert len(ips) == 2
        assert [ip.address6 for ip in ips] == ["2001:db8:0:2::1", "2001:db8:0:2::2"]
        assert {ip.role for ip in ips} == {"active", "standby"}
        assert len({ip.gateway_id for ip in ips}) == 2
        assert all(ip.pool6_id == infra6["pool6"].pk for ip in ips)
        # A second app: the next ones, never the same.
        other, _ = services.egress_enable(app=make_app(alice), actor=alice)
        assert sorted(EgressIP.objects.filter(app=other).values_list("address6", flat=True)) == [
            "2001:db8:0:2::3", "2001:db8:0:2::4"
        ]

    def test_a_region_without_an_ipv6_pool_stays_ipv4_only(self, infra, make_app, alice):
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        assert list(EgressIP.objects.filter(app=app).values_list("address6", flat=True)) == [None, None]
        summary = selectors.egress_summary(app)
        assert summary["ipv6_available"] is False and [ip["address6"] for ip in summary["ips"]] == [None, None]

    def test_released_partners_stay_with_their_address_and_come_back_with_it(self, infra6, make_app, alice, bob):
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        pairs = sorted(EgressIP.objects.filter(app=app).values_list("address", "address6"))
        services.egress_disable(app=app, actor=alice)
        services.egress_ips_release(app=app)
        assert sorted(EgressIP.objects.filter(last_app=app).values_list("address", "address6")) == pairs
        assert set(EgressIP.objects.filter(last_app=app).values_list("status", flat=True)) == {"quarantined"}
        # Another tenant gets neither the IPv4 nor the IPv6 addresses in quarantine.
        other, _ = services.egress_enable(app=make_app(bob), actor=bob)
        theirs = set(EgressIP.objects.filter(app=other).values_list("address6", flat=True))
        assert not theirs & {v6 for _, v6 in pairs}
        # Re-enabling gets the very pairs back (allow-lists keep working for both families).
        app, _ = services.egress_enable(app=app, actor=alice)
        assert sorted(EgressIP.objects.filter(app=app).values_list("address", "address6")) == pairs

    def test_an_address_assigned_before_the_region_had_ipv6_gets_its_partner_on_the_next_allocation(
        self, infra, make_app, alice
    ):
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        services.pool_create(region=infra["region"], name="late6", cidr=POOL6)
        services.egress_ips_allocate(app=app)
        assert sorted(EgressIP.objects.filter(app=app).values_list("address6", flat=True)) == [
            "2001:db8:0:2::1", "2001:db8:0:2::2"
        ]

    def test_an_exhausted_ipv6_pool_allocates_nothing(self, infra, make_app, alice):
        services.pool_create(region=infra["region"], name="tiny6", cidr="2001:db8:0:2::/127")  # 2 addresses
        services.egress_enable(app=make_app(alice), actor=alice)
        app = make_app(alice)
        assert capacity.egress_enable_problem(app) == capacity.OUT_OF_ADDRESSES6
        before = list(EgressIP.objects.values_list("pk", "status", "app_id", "address6"))
        with pytest.raises(PoolExhausted, match="IPv6"):
            services.egress_enable(app=app, actor=alice)
        assert list(EgressIP.objects.values_list("pk", "status", "app_id", "address6")) == before
        app.refresh_from_db()
        assert app.egress_type == "shared"

    def test_a_small_ipv6_pool_fills_its_gaps(self, infra, make_app, alice, settings):
        settings.EGRESS_IPS_PER_APP = 1
        services.pool_create(region=infra["region"], name="tiny6", cidr="2001:db8:0:2::/126",
                             excluded=["2001:db8:0:2::2"])
        a, _ = services.egress_enable(app=make_app(alice), actor=alice)
        b, _ = services.egress_enable(app=make_app(alice), actor=alice)
        assert [EgressIP.objects.get(app=x).address6 for x in (a, b)] == ["2001:db8:0:2::1", "2001:db8:0:2::3"]
        # The IPv6 partner of a row that is given back stays with it; a new row fills the gap only once freed.
        EgressIP.objects.filter(app=a).update(app=None, gateway=None, role="", status=EgressIPStatus.FREE,
                                              pool6=None, address6=None, address6_hex=None)
        c, _ = services.egress_enable(app=make_app(alice), actor=alice)
        assert EgressIP.objects.get(app=c).address6 == "2001:db8:0:2::1"

    def test_ipv6_partners_do_not_count_against_the_address_quota(self, infra6, make_app, alice, settings):
        settings.EGRESS_QUOTA_ADDRESSES = 2
        services.egress_enable(app=make_app(alice), actor=alice)  # two IPv4 addresses, two IPv6 partners
        assert services.quota_usage(alice).addresses == 2
        quota_check_addresses(owner=alice.pk)  # at the quota, not over it

    @pytest.mark.postgres
    def test_database_refuses_a_duplicate_or_half_partner(self, infra6, make_app, alice):
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        first, second = EgressIP.objects.filter(app=app).order_by("pk")
        with pytest.raises(IntegrityError), transaction.atomic():
            EgressIP.objects.filter(pk=second.pk).update(address6=first.address6, address6_hex=first.address6_hex)
        with pytest.raises(IntegrityError), transaction.atomic():
            EgressIP.objects.filter(pk=second.pk).update(pool6=None)


class TestPlacements6:
    def test_ipv6_placements_beside_ipv4_ones(self, infra6, make_app, alice):
        node1 = infra6["nodes"][0]
        app = make_app(alice, cidrs=[])
        place(app, ["198.18.128.16/28", "2001:db8:10:1::17", "2001:DB8:10:1::100/120"], node=node1)
        rows = sorted(Placement.objects.filter(app=app).values_list("cidr", "first_int", "first_hex", "last_hex"),
                      key=lambda r: r[0])
        assert rows[0][0] == "198.18.128.16/28" and rows[0][2] is None
        assert rows[1] == ("2001:db8:10:1::100/120", None, "20010db8001000010000000000000100",
                           "20010db80010000100000000000001ff")
        assert rows[2][:2] == ("2001:db8:10:1::17/128", None)
        assert selectors.node_placements(node1) == [
            {"app": app.pk, "addresses": ["198.18.128.16/28", "2001:db8:10:1::17/128", "2001:db8:10:1::100/120"]}
        ]

    @pytest.mark.parametrize(
        ("address", "fragment"),
        [
            ("2001:db8:10:2::1", "not inside a pod CIDR"),  # node-b's pods
            ("2001:db8:10:1::/119", "too wide"),
            ("fe80::1", "link-local"),
            ("::ffff:198.18.128.1", "IPv4-mapped"),
            ("2001:db8:10:1::1%eth0", "zone index"),
            ("2001:db8:10:1::1/128; true", "not a valid"),
        ],
    )
    def test_bad_ipv6_placements_change_nothing(self, infra6, make_app, alice, address, fragment):
        node1 = infra6["nodes"][0]
        app = make_app(alice, cidrs=[])
        with pytest.raises(ValidationError) as err:
            services.node_placements_set(node=node1, placements=[{"app": app.pk, "addresses": [address]}])
        assert fragment in str(err.value.message_dict)
        assert not Placement.objects.exists()

    def test_an_ipv6_address_belongs_to_one_app_at_a_time(self, infra6, make_app, alice, bob):
        node1 = infra6["nodes"][0]
        a, b = make_app(alice, cidrs=[]), make_app(bob, cidrs=[])
        with pytest.raises(ValidationError, match="overlaps"):
            services.node_placements_set(
                node=node1,
                placements=[{"app": a.pk, "addresses": ["2001:db8:10:1::100/120"]},
                            {"app": b.pk, "addresses": ["2001:db8:10:1::1ff"]}],
            )
        assert not Placement.objects.exists()
        # The low bits of an IPv6 range never clash with an IPv4 placement of the same numbers.
        place(a, ["2001:db8:10:1::c612:8000/124"], node=node1)
        place(b, ["198.18.128.0/28"], node=node1)
        assert Placement.objects.count() == 2

    def test_an_ipv6_address_another_app_holds_on_another_node_is_refused(self, infra6, make_app, alice, bob):
        node1, node2 = infra6["nodes"]
        # Both nodes' pod ranges hold 2001:db8:10:1::/64 (as while the platform moves a range).
        services.host_update(host=node2, pod_cidrs=[*node2.pod_cidrs, "2001:db8:10:1::/64"])
        a, b = make_app(alice, cidrs=[]), make_app(bob, cidrs=[])
        place(a, ["2001:db8:10:1::100/120"], node=node1)
        with pytest.raises(ConflictError, match="already placed for another app") as err:
            services.node_placements_set(node=node2, placements=[{"app": b.pk, "addresses": ["2001:db8:10:1::180/121"]}])
        assert a.name not in str(err.value) and "alice" not in str(err.value)
        # The same app may be on both while it moves.
        services.node_placements_set(node=node2, placements=[{"app": a.pk, "addresses": ["2001:db8:10:1::180/121"]}])
        assert Placement.objects.filter(app=a).count() == 2

    def test_pod_cidrs_cannot_shrink_from_under_ipv6_placements(self, infra6, make_app, alice):
        node1 = infra6["nodes"][0]
        place(make_app(alice, cidrs=[]), ["2001:db8:10:1::17"], node=node1)
        with pytest.raises(ValidationError, match="would lie outside"):
            services.host_update(host=node1, pod_cidrs=["198.18.128.0/18"])

    @pytest.mark.postgres
    def test_database_refuses_an_ipv6_address_for_two_apps_and_a_wide_one(self, infra6, make_app, alice, bob):
        node1, node2 = infra6["nodes"]
        a, b = make_app(alice, cidrs=[]), make_app(bob, cidrs=[])
        place(a, ["2001:db8:10:1::100/120"], node=node1)
        with pytest.raises(IntegrityError), transaction.atomic():
            Placement(region=infra6["region"], node=node1, app=b, cidr="2001:db8:10:1::1ff/128").save()
        with pytest.raises(IntegrityError), transaction.atomic():
            Placement(region=infra6["region"], node=node1, app=b, cidr="2001:db8:10:1::/119").save()
        with pytest.raises(IntegrityError), transaction.atomic():  # outside the node's pods (the trigger)
            Placement(region=infra6["region"], node=node2, app=b, cidr="2001:db8:10:1::200/128").save()


class TestTransit6:
    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("fe80::1", "link-local"),
            ("::ffff:198.18.0.1", ""),
            ("2001:db8::1%eth0", ""),
            ("198.18.0.1", ""),
            ("2001:db8::/64", ""),
            ("ff02::1", ""),
        ],
    )
    def test_bad_ipv6_transit_addresses(self, make_gateway, value, fragment):
        gw = make_gateway()
        with pytest.raises(ValidationError) as err:
            services.host_update(host=gw, transit_address6=value)
        assert "transit_address6" in err.value.message_dict
        assert fragment in str(err.value.message_dict["transit_address6"])

    def test_ipv6_transit_address_is_optional_and_normalised(self, make_gateway):
        gw = make_gateway(transit_address6="2001:DB8:0:1::0011")
        gw.refresh_from_db()
        assert gw.transit_address6 == "2001:db8:0:1::11"
        gw = services.host_update(host=gw, transit_address6="")
        gw.refresh_from_db()
        assert gw.transit_address6 is None

    @pytest.mark.parametrize(
        ("pods", "fragment"),
        [
            (["2001:db8::/32"], "at most a /48"),
            (["2001:db8:10:1::/64", "2001:db8:10:1:8000::/65"], "overlap"),
            (["fe80::/64"], "link-local"),
            (["::ffff:198.18.0.0/112"], "IPv4-mapped"),
        ],
    )
    def test_bad_ipv6_pod_cidrs(self, make_node, pods, fragment):
        with pytest.raises(ValidationError, match=fragment):
            make_node(pod_cidrs=pods)

    def test_pod_cidrs_of_both_families_sorted_ipv4_first(self, make_node):
        node = make_node(pod_cidrs=["2001:db8:10:1::/64", "198.18.128.0/18"])
        assert node.pod_cidrs == ["198.18.128.0/18", "2001:db8:10:1::/64"]


class TestDesired6:
    def test_the_database_gives_the_rules_both_families(self, infra6, make_app, alice):
        gw1, gw2 = infra6["gateways"]
        node1, node2 = infra6["nodes"]
        app = make_app(alice, cidrs=[])
        place(app, ["198.18.128.16/28", "2001:db8:10:1::100/120"], node=node1)
        services.egress_enable(app=app, actor=alice)
        pairs = {ip.gateway_id: ip for ip in EgressIP.objects.filter(app=app)}
        for gw in (gw1, gw2):
            state = gateway_desired(gw).state
            mine = pairs[gw.pk]
            assert state.addresses == {ip_address(mine.address), ip_address(mine.address6)}
            assert dict(state.snat) == {
                ip_network("198.18.128.16/28"): ip_address(mine.address),
                ip_network("2001:db8:10:1::100/120"): ip_address(mine.address6),
            }
            # node-a has an IPv6 transit address, node-b none: its IPv6 pods are guarded, never routed.
            assert state.return_routes[ip_network("2001:db8:10:1::/64")] == ip_address("2001:db8:0:1::21")
            assert ip_network("2001:db8:10:2::/64") not in state.return_routes
            assert ip_network("2001:db8:10:2::/64") in state.guarded_sources
        # As the gateways' reconcile marks them once applied (services.hostsync).
        EgressIP.objects.filter(status="assigned").update(programmed=True, programmed6=True)
        active = next(ip for ip in pairs.values() if ip.role == "active")
        state = node_desired(node1).state
        assert dict(state.steering) == {
            ip_network("198.18.128.16/28"): active.gateway.slot,
            ip_network("2001:db8:10:1::100/120"): active.gateway.slot,
        }
        assert dict(state.gateways6) == {gw1.slot: ip_address("2001:db8:0:1::11"), gw2.slot: ip_address("2001:db8:0:1::12")}
        assert ip_network("2001:db8:0:1::21/128") in state.internal

    def test_failover_takes_the_ipv6_placements_to_the_standby(self, infra6, make_app, alice):
        app = make_app(alice, cidrs=[])
        place(app, ["2001:db8:10:1::17"], node=infra6["nodes"][0])
        services.egress_enable(app=app, actor=alice)
        EgressIP.objects.filter(status="assigned").update(programmed=True, programmed6=True)
        active = EgressIP.objects.get(app=app, role="active")
        standby = EgressIP.objects.get(app=app, role="standby")
        active.gateway.__class__.objects.filter(pk=active.gateway_id).update(health="unhealthy")
        state = node_desired(infra6["nodes"][0]).state
        assert dict(state.steering) == {ip_network("2001:db8:10:1::17/128"): standby.gateway.slot}


class TestBackfill6:
    """Apps enabled before their region had IPv6 get their IPv6 addresses when an IPv6 pool is created or
    grows (services.egress6_backfill), through the admin and the API alike."""

    def _enabled(self, make_app, owner, n=2):
        apps = [services.egress_enable(app=make_app(owner), actor=owner)[0] for _ in range(n)]
        # Live already: their gateways and nodes had caught up before the region got IPv6.
        EgressIP.objects.filter(app__in=apps).update(programmed=True)
        HostSync.objects.filter(app__in=apps).delete()
        App.objects.filter(pk__in=[a.pk for a in apps]).update(egress_status="assigned", egress_message="")
        return apps

    def test_a_new_ipv6_pool_partners_every_address_of_the_enabled_apps(self, infra, make_app, alice, bob, staff):
        a, b = self._enabled(make_app, alice)
        shared = make_app(bob)
        releasing = self._enabled(make_app, bob, n=1)[0]
        services.egress_disable(app=releasing, actor=bob)
        pool = services.pool_create(region=infra["region"], name="late6", cidr=POOL6, actor=staff)
        assert (pool.backfill6.apps, pool.backfill6.addresses, pool.backfill6.left) == (2, 4, ())
        rows = {(ip.app_id, ip.role): ip for ip in EgressIP.objects.filter(app__in=[a, b])}
        assert [rows[(x.pk, r)].address6 for x in (a, b) for r in ("active", "standby")] == [
            "2001:db8:0:2::1", "2001:db8:0:2::2", "2001:db8:0:2::3", "2001:db8:0:2::4"
        ]
        assert all(ip.pool6_id == pool.pk for ip in rows.values())
        assert not EgressIP.objects.filter(last_app=releasing).exclude(address6=None).exists()
        assert not EgressIP.objects.filter(app=shared).exists()
        gw1, gw2 = infra["gateways"]
        node1 = infra["nodes"][0]
        for app in (a, b):
            # Gateways first (they hold the new addresses), then the node the app runs on; nothing else.
            assert sorted(HostSync.objects.filter(app=app).values_list("gateway_id", "node_id"), key=str) == sorted(
                [(gw1.pk, None), (gw2.pk, None), (None, node1.pk)], key=str)
            app.refresh_from_db()
            assert app.egress_status == "assigned"  # its IPv4 egress works on meanwhile
            assert app.egress_message == "Adding IPv6 egress addresses on the gateways."
            added = Event.objects.get(app=app, kind="egress.ipv6_added")
            assert "2001:db8:0:2::" in added.message and added.actor_name == staff.username
        # What the gateways must hold now includes the new addresses, each beside its IPv4 one.
        for gw in (gw1, gw2):
            held = gateway_desired(gw).state.addresses
            for ip in rows.values():
                if ip.gateway_id == gw.pk:
                    assert {ip_address(ip.address), ip_address(ip.address6)} <= held
        summary = Event.objects.get(kind="region.ipv6_backfill")
        assert summary.level == "info" and "2 app(s) got 4 IPv6 address(es)" in summary.message
        # Nothing left to do: saving the pool again changes nothing.
        again = services.pool_update(pool=pool, description="again")
        assert (again.backfill6.apps, again.backfill6.left) == (0, ())
        assert Event.objects.filter(kind="region.ipv6_backfill").count() == 1

    def test_an_exhausted_ipv6_pool_loses_nothing_and_says_so_then_growing_it_serves_the_rest(
        self, infra, make_app, alice
    ):
        a, b = self._enabled(make_app, alice)
        before_b = sorted(EgressIP.objects.filter(app=b).values_list("address", "gateway_id", "role", "programmed"))
        # A /125 has 7 usable addresses; 4 excluded leave 3: one app's pair, never half of the other's (an app
        # with IPv6 on its active gateway only would lose it, silently, on failover).
        excluded = [f"2001:db8:0:2::{n}" for n in range(4, 8)]
        pool = services.pool_create(region=infra["region"], name="tiny6", cidr="2001:db8:0:2::/125", excluded=excluded)
        assert (pool.backfill6.apps, pool.backfill6.left) == (1, (b.name,))
        assert "1 app(s) stay IPv4-only because the region's IPv6 pools are exhausted" in pool.backfill6.message
        assert sorted(EgressIP.objects.filter(app=a).values_list("address6", flat=True)) == [
            "2001:db8:0:2::1", "2001:db8:0:2::2"
        ]
        assert list(EgressIP.objects.filter(app=b).values_list("address6", flat=True)) == [None, None]
        assert sorted(EgressIP.objects.filter(app=b).values_list("address", "gateway_id", "role", "programmed")) == before_b
        assert not HostSync.objects.filter(app=b).exists()
        b.refresh_from_db()
        assert (b.egress_status, b.egress_message) == ("assigned", "")
        unavailable = Event.objects.get(app=b, kind="egress.ipv6_unavailable")
        assert unavailable.level == "warning" and "exhausted" in unavailable.message
        assert Event.objects.get(kind="region.ipv6_backfill").level == "warning"
        # The pool grows (addresses excluded no more): the app left out gets its pair.
        grown = services.pool_update(pool=pool, excluded=[])
        assert (grown.backfill6.apps, grown.backfill6.left) == (1, ())
        assert sorted(EgressIP.objects.filter(app=b).values_list("address6", flat=True)) == [
            "2001:db8:0:2::3", "2001:db8:0:2::4"
        ]

    def test_nodes_steer_the_new_ipv6_addresses_only_once_their_gateways_hold_them(self, infra, make_app, alice):
        gw1, gw2 = infra["gateways"]
        node1 = infra["nodes"][0]
        services.host_update(host=gw1, transit_address6="2001:db8:0:1::11")
        services.host_update(host=gw2, transit_address6="2001:db8:0:1::12")
        services.host_update(host=node1, transit_address6="2001:db8:0:1::21",
                             pod_cidrs=[*node1.pod_cidrs, "2001:db8:10:1::/64"])
        app = make_app(alice, cidrs=[])
        place(app, ["198.18.128.16/28", "2001:db8:10:1::100/120"], node=node1)
        self._enabled(lambda owner: app, alice, n=1)
        v4, v6 = ip_network("198.18.128.16/28"), ip_network("2001:db8:10:1::100/120")
        active = EgressIP.objects.get(app=app, role="active").gateway
        assert dict(node_desired(node1).state.steering) == {v4: active.slot}
        services.pool_create(region=infra["region"], name="late6", cidr=POOL6)
        # The partners exist, but no gateway holds them yet: IPv6 still leaves from the node, and the node
        # keeps owing the app a reconcile (its sync row does not settle).
        plan = node_desired(node1)
        assert dict(plan.state.steering) == {v4: active.slot}
        node_sync = HostSync.objects.get(app=app, node=node1)
        assert node_sync.pk not in plan.settles
        for gw in (gw1, gw2):
            host_reconcile_succeeded(host=gw, plan=gateway_desired(gw), changed=True, summary="applied",
                                              changes=[], duration=0.01)
        assert set(EgressIP.objects.filter(app=app).values_list("programmed6", flat=True)) == {True}
        plan = node_desired(node1)
        assert dict(plan.state.steering) == {v4: active.slot, v6: active.slot}
        assert node_sync.pk in plan.settles

    def test_backfill_queries_do_not_grow_with_the_apps(self, infra, make_app, alice, settings):
        settings.EGRESS_QUOTA_APPS = settings.EGRESS_QUOTA_ADDRESSES = 1000
        services.pool_create(region=infra["region"], name="big", cidr="203.0.113.128/25")
        counts = []
        for n, cidr in ((3, "2001:db8:0:2::/64"), (30, "2001:db8:0:3::/64")):
            apps = self._enabled(make_app, alice, n=n)
            pool = services.pool_create(region=infra["region"], name=f"p{n}", cidr=cidr)
            services.pool_update(pool=pool, excluded=[])  # nothing to do: but count the work of a full run
            EgressIP.objects.filter(app__in=apps).update(pool6=None, address6=None, address6_hex=None)
            with CaptureQueriesContext(connection) as queries:
                result = services.egress6_backfill(region=infra["region"])
            assert result.apps == n
            counts.append(len(queries))
            IPPool.objects.filter(family=6).update()  # keep pools; the next round adds apps
        assert counts[0] == counts[1], counts
