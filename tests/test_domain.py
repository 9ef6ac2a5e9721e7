"""Services and selectors of the domain: validation, allocation, quarantine,
state transitions. Runs on PostgreSQL and on SQLite."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from egressportal.core import capacity, selectors, services
from egressportal.core.errors import ConflictError, NoGatewaysAvailable, PoolExhausted
from egressportal.core.models import App, EgressIP, EgressStatus, Event, HostSync, IPPool
from egressportal.core.services import network as network_services
from tests.helpers import place

pytestmark = pytest.mark.django_db


class TestPools:
    @pytest.mark.parametrize(
        ("cidr", "fragment"),
        [
            ("203.0.113.0", "no prefix length"),
            ("203.0.113.7/24", "host bits set"),
            ("2001:db8::/48", "at most a /64"),
            ("fe80::/64", "link-local"),
            ("garbage", "not a valid"),
            ("198.18.0.0/15", "at most a /16"),
        ],
    )
    def test_bad_cidr(self, region, cidr, fragment):
        with pytest.raises(ValidationError) as err:
            services.pool_create(region=region, name="p", cidr=cidr)
        assert fragment in str(err.value.message_dict["cidr"])
        assert not IPPool.objects.exists()

    def test_pools_never_overlap(self, region):
        services.pool_create(region=region, name="a", cidr="203.0.113.0/25")
        for cidr in ["203.0.113.0/24", "203.0.113.64/26", "203.0.113.127/32"]:
            with pytest.raises(ValidationError, match="overlaps pool a"):
                services.pool_create(region=region, name="b", cidr=cidr)
        services.pool_create(region=region, name="c", cidr="203.0.113.128/25")
        assert IPPool.objects.count() == 2

    @pytest.mark.postgres
    def test_database_refuses_overlap_even_without_the_service(self, region):
        services.pool_create(region=region, name="a", cidr="203.0.113.0/25")
        pool = IPPool(region=region, name="raw", cidr="203.0.113.64/26")
        with pytest.raises(IntegrityError), transaction.atomic():
            pool.save()

    def test_free_rows_are_made_a_chunk_at_a_time_and_follow_the_exclusions(
        self, region, make_gateway, make_app, alice, settings, monkeypatch
    ):
        monkeypatch.setattr(network_services, "POOL_ROWS_CHUNK", 2)
        settings.EGRESS_IPS_PER_APP = 1
        pool = services.pool_create(region=region, name="p", cidr="203.0.113.0/29", excluded=["203.0.113.2"])
        rows = EgressIP.objects.filter(pool=pool)
        assert list(rows.values_list("address", "status")) == [("203.0.113.1", "free"), ("203.0.113.3", "free")]
        make_gateway()
        got = [services.egress_ips_allocate(app=make_app(alice))[0].address for _ in range(3)]
        assert got == ["203.0.113.1", "203.0.113.3", "203.0.113.4"]  # the third made the next chunk
        assert rows.count() == 4
        # Excluding a free address removes its row; excluding it no more brings it back.
        services.pool_update(pool=pool, excluded=["203.0.113.5"])
        assert set(rows.filter(status="free").values_list("address", flat=True)) == {"203.0.113.2"}
        assert capacity.addresses_available(app=make_app(alice)) == 2  # .2 and .6 (no row yet)
        got = [services.egress_ips_allocate(app=make_app(alice))[0].address for _ in range(2)]
        assert got == ["203.0.113.2", "203.0.113.6"]
        with pytest.raises(PoolExhausted):
            services.egress_ips_allocate(app=make_app(alice))

    def test_excluded_addresses_validated_and_never_allocated(self, region, make_gateway, make_app, alice):
        with pytest.raises(ValidationError, match="not inside"):
            services.pool_create(region=region, name="p", cidr="203.0.113.0/30", excluded=["198.51.100.1"])
        pool = services.pool_create(region=region, name="p", cidr="203.0.113.0/30", excluded=["203.0.113.1"])
        assert pool.size == 1
        make_gateway()
        app = make_app(alice)
        ips = services.egress_ips_allocate(app=app, count=1)
        assert [ip.address for ip in ips] == ["203.0.113.2"]

    def test_utilization(self, infra, make_app, alice):
        pool = infra["pool"]
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        util = selectors.pool_utilization(selectors.pool_list().get(pk=pool.pk))
        assert (util.size, util.assigned, util.quarantined, util.free) == (14, 2, 0, 12)
        services.egress_ips_release(app=app)
        util = selectors.pool_utilization(pool)
        assert (util.assigned, util.quarantined, util.free) == (0, 2, 12)


class TestApps:
    def test_names_validated(self, region, alice):
        with pytest.raises(ValidationError, match="App names"):
            services.app_create(owner=alice, region=region, name="Bad Name; rm")
        assert not App.objects.exists()

    def test_apps_take_no_source_addresses(self, region, alice):
        """Where an app runs is reported by the platform (placements), never declared with the app."""
        with pytest.raises(TypeError):
            services.app_create(owner=alice, region=region, name="a", source_cidrs=["198.18.64.0/24"])
        app = services.app_create(owner=alice, region=region, name="a")
        with pytest.raises(TypeError):
            services.app_update(app=app, source_cidrs=["198.18.64.0/24"])

    def test_a_move_keeps_the_addresses_and_marks_only_the_new_node_and_the_gateways(self, infra, make_app, alice):
        node_a, node_b = infra["nodes"]
        app = make_app(alice, cidrs=["198.18.128.16/28"])
        services.egress_enable(app=app, actor=alice)
        addresses = sorted(app.egress_ips.values_list("address", flat=True))
        HostSync.objects.all().delete()
        # The platform redeploys the app on node-b: node-b's report adds it, node-a's drops it.
        place(app, ["198.18.192.16/28"], node=node_b)
        services.node_placements_set(node=node_a, placements=[])
        app.refresh_from_db()
        assert selectors.app_placements(app) == [{"node": "node-b", "addresses": ["198.18.192.16/28"]}]
        assert sorted(app.egress_ips.values_list("address", flat=True)) == addresses
        synced = set(HostSync.objects.filter(app=app).values_list("gateway_id", "node_id"))
        gateways = {(g.pk, None) for g in infra["gateways"]}
        assert synced == gateways | {(None, node_b.pk), (None, node_a.pk)}


class TestEgress:
    def test_enable_allocates_one_address_per_gateway(self, infra, make_app, alice):
        app = make_app(alice)
        app, changed = services.egress_enable(app=app, actor=alice)
        assert changed and app.egress_status == EgressStatus.ASSIGNING
        ips = list(EgressIP.objects.filter(app=app))
        assert len(ips) == 2
        assert {ip.gateway_id for ip in ips} == {g.pk for g in infra["gateways"]}
        assert sorted(ip.role for ip in ips) == ["active", "standby"]
        # Its two gateways and the one node it runs on: never a node it does not run on.
        synced = set(HostSync.objects.filter(app=app).values_list("gateway_id", "node_id"))
        assert synced == {(g.pk, None) for g in infra["gateways"]} | {(None, infra["nodes"][0].pk)}
        assert Event.objects.filter(app=app, kind="egress.enable_requested").exists()
        # Idempotent: a second enable changes nothing.
        _, changed = services.egress_enable(app=app, actor=alice)
        assert not changed and EgressIP.objects.filter(app=app).count() == 2

    def test_fewer_gateways_means_fewer_addresses(self, region, make_gateway, make_app, alice):
        make_gateway()
        services.pool_create(region=region, name="p", cidr="203.0.113.0/28")
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        assert EgressIP.objects.filter(app=app).count() == 1

    def test_a_new_gateway_takes_new_allocations_and_moves_nobody(self, infra, make_gateway, make_app, alice):
        existing = [make_app(alice) for _ in range(3)]
        for app in existing:
            services.egress_enable(app=app, actor=alice)
        before = {ip.pk: (ip.address, ip.gateway_id, ip.role) for ip in EgressIP.objects.exclude(status="free")}
        gw_c = make_gateway("gw-c")
        app, _ = services.egress_enable(app=make_app(alice), actor=alice)
        gateways = set(EgressIP.objects.filter(app=app).values_list("gateway_id", flat=True))
        assert gw_c.pk in gateways  # the empty gateway is the least loaded
        # Nobody else moved.
        others = EgressIP.objects.exclude(status="free").exclude(app=app)
        assert {ip.pk: (ip.address, ip.gateway_id, ip.role) for ip in others} == before

    def test_region_without_gateways(self, region, make_app, alice):
        services.pool_create(region=region, name="p", cidr="203.0.113.0/28")
        app = make_app(alice)
        with pytest.raises(NoGatewaysAvailable, match="no gateway"):
            services.egress_enable(app=app, actor=alice)
        app.refresh_from_db()
        assert app.egress_type == "shared" and not EgressIP.objects.exclude(status="free").exists()

    def test_an_app_running_nowhere_yet_may_enable(self, infra, make_app, alice):
        """Its addresses can go into allow-lists before the first deploy; no node owes it anything."""
        app = make_app(alice, cidrs=[])
        services.egress_enable(app=app, actor=alice)
        assert EgressIP.objects.filter(app=app).count() == 2
        assert not HostSync.objects.filter(app=app, node__isnull=False).exists()

    def test_nine_asked_eight_free_allocates_nothing(self, region, make_gateway, make_app, alice, settings):
        for _ in range(9):
            make_gateway()
        services.pool_create(region=region, name="p", cidr="203.0.113.0/29", excluded=["203.0.113.1"])
        # /29 has 6 usable, minus 1 excluded = 5; add a second pool of 3 usable (a /30 has 2).
        services.pool_create(region=region, name="q", cidr="203.0.113.8/30")
        services.pool_create(region=region, name="r", cidr="203.0.113.12/31")
        # Free: 5 + 2 + 2 - 1 = 8 after one address is taken below.
        first = make_app(alice)
        services.egress_ips_allocate(app=first, count=1)
        assert EgressIP.objects.exclude(status="free").count() == 1
        settings.EGRESS_IPS_PER_APP = 9
        app = make_app(alice)
        with pytest.raises(PoolExhausted, match="9 needed"):
            services.egress_enable(app=app, actor=alice)
        app.refresh_from_db()
        assert app.egress_type == "shared" and app.egress_status == EgressStatus.DISABLED
        assert EgressIP.objects.exclude(status="free").count() == 1  # nothing half-allocated
        assert not HostSync.objects.filter(app=app).exists()
        settings.EGRESS_IPS_PER_APP = 8
        services.egress_enable(app=app, actor=alice)
        assert EgressIP.objects.filter(app=app).count() == 8

    def test_disable_marks_nodes_first_and_release_quarantines(self, infra, make_app, alice):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        HostSync.objects.all().delete()
        app, changed = services.egress_disable(app=app, actor=alice)
        assert changed and app.egress_status == EgressStatus.RELEASING and app.egress_type == "shared"
        # Its two gateways and the one node it runs on.
        assert HostSync.objects.filter(app=app).count() == 3
        released = services.egress_ips_release(app=app)
        assert len(released) == 2
        used = EgressIP.objects.exclude(status="free")
        assert set(used.values_list("status", flat=True)) == {"quarantined"}
        assert set(used.values_list("last_owner", flat=True)) == {alice.pk}

    def test_quarantine_returns_addresses_only_to_their_last_owner(self, infra, make_app, alice, bob, settings):
        services.pool_delete(pool=infra["pool"])
        services.pool_create(region=infra["region"], name="tiny", cidr="203.0.113.16/31")  # 2 addresses
        a = make_app(alice)
        services.egress_enable(app=a, actor=alice)
        held = set(EgressIP.objects.filter(app=a).values_list("address", flat=True))
        # What the workers do once a disable is done: shared again, addresses in quarantine.
        App.objects.filter(pk=a.pk).update(egress_type="shared", egress_status="disabled")
        services.egress_ips_release(app=a)
        # Bob cannot get them while they are in quarantine...
        b = make_app(bob)
        with pytest.raises(PoolExhausted):
            services.egress_enable(app=b, actor=bob)
        # ...but Alice gets the very same addresses back (her allow-lists still work).
        a2 = make_app(alice)
        services.egress_enable(app=a2, actor=alice)
        assert set(EgressIP.objects.filter(app=a2).values_list("address", flat=True)) == held
        App.objects.filter(pk=a2.pk).update(egress_type="shared", egress_status="disabled")
        services.egress_ips_release(app=a2)
        # Once the quarantine has passed, anyone may have them.
        EgressIP.objects.update(released_at=timezone.now() - dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS + 1))
        services.egress_enable(app=b, actor=bob)
        assert set(EgressIP.objects.filter(app=b).values_list("address", flat=True)) == held

    def test_an_address_withdrawn_from_a_dedicated_app_stays_reserved_for_it(self, infra, make_app, alice):
        services.pool_delete(pool=infra["pool"])
        services.pool_create(region=infra["region"], name="tiny", cidr="203.0.113.16/31")  # 2 addresses
        a = make_app(alice)
        services.egress_enable(app=a, actor=alice)
        # As during a drain: one address withdrawn while the app stays dedicated.
        ip = EgressIP.objects.get(app=a, role="standby")
        EgressIP.objects.filter(pk=ip.pk).update(
            status="quarantined", released_at=timezone.now(), last_app=a, last_owner=alice, app=None, gateway=None,
            role="",
        )
        # Another app of the same owner does not take it...
        with pytest.raises(PoolExhausted):
            services.egress_enable(app=make_app(alice), actor=alice)
        # ...the app it belongs to gets it back.
        services.egress_ips_allocate(app=a)
        assert EgressIP.objects.get(pk=ip.pk).app_id == a.pk

    def test_a_withdrawn_address_stays_reserved_past_the_quarantine_while_its_app_is_dedicated(
        self, infra, make_app, alice, bob, settings
    ):
        """A drain can last longer than the quarantine: the app still wants (and allow-lists) the address."""
        services.pool_delete(pool=infra["pool"])
        services.pool_create(region=infra["region"], name="tiny", cidr="203.0.113.16/31")  # 2 addresses
        a = make_app(alice)
        services.egress_enable(app=a, actor=alice)
        ip = EgressIP.objects.get(app=a, role="standby")
        long_ago = timezone.now() - dt.timedelta(days=settings.EGRESS_QUARANTINE_DAYS * 3)
        EgressIP.objects.filter(pk=ip.pk).update(
            status="quarantined", released_at=long_ago, last_app=a, last_owner=alice, app=None, gateway=None, role="",
        )
        b = make_app(bob, cidrs=["198.18.200.0/28"])  # on node-b
        with pytest.raises(PoolExhausted):
            services.egress_ips_allocate(app=b, count=1)
        assert EgressIP.objects.get(pk=ip.pk).app_id is None
        # When the app lets go of dedicated egress, the quarantine starts then, not at the withdrawal.
        App.objects.filter(pk=a.pk).update(egress_type="shared", egress_status="disabled")
        services.egress_ips_release(app=a)
        assert EgressIP.objects.get(pk=ip.pk).released_at > long_ago + dt.timedelta(days=1)
        with pytest.raises(PoolExhausted):
            services.egress_ips_allocate(app=b, count=1)

    def test_delete_with_dedicated_egress_waits_for_release(self, infra, make_app, alice):
        app = make_app(alice)
        assert services.app_delete(app=make_app(alice), actor=alice) is True
        services.egress_enable(app=app, actor=alice)
        assert services.app_delete(app=app, actor=alice) is False
        app.refresh_from_db()
        assert app.delete_requested and app.egress_status == EgressStatus.RELEASING
        with pytest.raises(ConflictError):
            services.egress_enable(app=app, actor=alice)

    def test_unknown_type(self, infra, make_app, alice):
        with pytest.raises(ValidationError, match="Unknown egress type"):
            services.egress_set(app=make_app(alice), egress_type="bogus; drop table", actor=alice)


class TestHosts:
    @pytest.mark.parametrize(
        ("field", "value", "fragment"),
        [
            ("public_interface", "eth0; reboot", "Interface names"),
            ("public_interface", "a" * 16, "Interface names"),
            ("public_interface", "$(id)", "Interface names"),
            ("host_key", "ssh-ed25519 not-base64!!", ""),
            ("host_key", "hello", ""),
            ("mgmt_address", "2001:db8::1", ""),
            ("transit_address", "300.1.1.1", ""),
        ],
    )
    def test_hostile_or_malformed_gateway_fields(self, region, field, value, fragment):
        from tests.conftest import TEST_HOST_KEY

        kwargs = dict(
            region=region,
            name="gw",
            mgmt_address="198.18.0.11",
            host_key=TEST_HOST_KEY,
            transit_address="198.18.100.11",
            public_interface="eth0",
        )
        kwargs[field] = value
        with pytest.raises(ValidationError) as err:
            services.gateway_create(**kwargs)
        assert field in err.value.message_dict
        assert fragment in " ".join(err.value.message_dict[field])

    def test_gateway_slots_are_unique_per_region(self, make_gateway):
        slots = [make_gateway().slot for _ in range(3)]
        assert slots == [1, 2, 3]

    def test_host_update_audits_before_and_after(self, make_gateway, staff):
        gw = make_gateway()
        services.host_update(host=gw, public_interface="pub0", actor=staff)
        ev = Event.objects.get(kind="gateway.updated")
        assert ev.data == {"before": {"public_interface": "eth0"}, "after": {"public_interface": "pub0"}}
        assert ev.actor == staff


class TestEvents:
    def test_events_are_append_only(self, infra, make_app, alice):
        app = make_app(alice)
        ev = Event.objects.filter(app=app).first()
        ev.message = "rewritten"
        with pytest.raises(TypeError):
            ev.save()
        with pytest.raises(TypeError):
            ev.delete()
        with pytest.raises(TypeError):
            Event.objects.filter(app=app).update(message="x")

    def test_secrets_are_scrubbed(self, alice):
        ev = services.event_record(kind="x", message="m", actor=alice, data={"password": "hunter2", "n": {"token": "t"}})
        assert ev.data == {"password": "********", "n": {"token": "********"}}


class TestSelectors:
    def test_tenant_scoping(self, infra, make_app, alice, bob, staff):
        a = make_app(alice)
        b = make_app(bob)
        assert list(selectors.app_list(user=alice)) == [a]
        assert set(selectors.app_list(user=staff)) == {a, b}
        with pytest.raises(App.DoesNotExist):
            selectors.app_get(user=alice, pk=b.pk)
        with pytest.raises(App.DoesNotExist):
            selectors.app_get(user=alice, pk="1 OR 1=1")

    def test_enable_problem_explains_capacity(self, region, make_gateway, make_app, alice):
        app = make_app(alice)
        assert "no egress gateway" in capacity.egress_enable_problem(app)
        make_gateway()
        assert "run out" in capacity.egress_enable_problem(app)
        services.pool_create(region=region, name="p", cidr="203.0.113.0/30")
        assert capacity.egress_enable_problem(app) is None
