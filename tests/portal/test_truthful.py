"""The portal tells the truth off the happy path: every reserved address in the
allow-list, reduced redundancy not shown as "all good", tags that say where
traffic goes during a failover, a confirmation before disabling, reserved
addresses after disabling, the owner's own timeline, error pages with a way
back, htmx requests that fail out loud. SQLite and PostgreSQL, no worker: the
tests put the database in the states the workers produce."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressIP, EgressStatus, Event, Gateway, HostSync
from egressportal.core.services.hostsync import app_settle
from tests.conftest import api_token_for

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _settle(app: App) -> App:
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)
    app.refresh_from_db()
    return app


def _assigned(alice, make_app, name="shop") -> App:
    app = make_app(alice, name)
    services.egress_enable(app=app, actor=alice)
    return _settle(app)


def _withdraw(ip: EgressIP) -> None:
    """What a drain does when no other gateway can hold an address: it stays reserved for its app."""
    EgressIP.objects.filter(pk=ip.pk).update(
        status="quarantined", released_at=timezone.now(), last_app=ip.app, last_owner=ip.app.owner,
        app=None, gateway=None, role="", programmed=False,
    )


def _snippet(html: str, key: str) -> str:
    match = re.search(rf'<pre id="snippet-{key}"[^>]*><code>(.*?)</code></pre>', html, re.S)
    assert match, key
    return match.group(1)


class TestAllowList:
    def test_a_withdrawn_address_stays_in_the_allow_list_and_redundancy_shows_reduced(self, alice, infra, make_app):
        """Finding 1: during a drain the snippet listed one of two addresses under a green "Assigned"."""
        app = _assigned(alice, make_app)
        standby = EgressIP.objects.get(app=app, role="standby")
        active = EgressIP.objects.get(app=app, role="active")
        _withdraw(standby)
        app_settle(app_id=app.pk)  # the worker's status after the drain
        app.refresh_from_db()
        html = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        for key in ("plain", "cidr", "nftables", "iptables", "aws"):
            snippet = _snippet(html, key)
            assert active.address in snippet and standby.address in snippet, key
        assert 'data-view="reduced"' in html and "Assigned · reduced redundancy" in html
        assert 'data-testid="reserved-ip" data-address="' + standby.address in html
        assert "badge--assigned" not in html

    def test_every_state_lists_every_reserved_address(self, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        addresses = set(EgressIP.objects.filter(app=app).values_list("address", flat=True))
        client = _client(alice)
        for status in ["assigning", "assigned", "degraded", "failed"]:
            App.objects.filter(pk=app.pk).update(egress_status=status)
            plain = _snippet(client.get(reverse("portal:app_detail", args=[app.pk])).content.decode(), "plain")
            assert set(plain.split()) == addresses, status
        # And after going back to shared egress: the addresses are reserved, still listed.
        _settle(app)
        services.egress_disable(app=app, actor=alice)
        _settle(app)
        assert app.egress_status == EgressStatus.DISABLED
        plain = _snippet(client.get(reverse("portal:app_detail", args=[app.pk])).content.decode(), "plain")
        assert set(plain.split()) == addresses


class TestFailover:
    def test_tags_say_where_traffic_goes_now(self, alice, infra, make_app):
        """Finding 3: the dead gateway's address said "Active · Live"."""
        app = _assigned(alice, make_app)
        active = EgressIP.objects.select_related("gateway").get(app=app, role="active")
        standby = EgressIP.objects.get(app=app, role="standby")
        client = _client(alice)
        html = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert re.search(rf'data-address="{active.address}" data-role="active" data-state="in_use"', html)
        assert re.search(rf'data-address="{standby.address}" data-role="standby" data-state="standby"', html)
        assert 'data-view="assigned"' in html
        Gateway.objects.filter(pk=active.gateway_id).update(health="unhealthy")
        App.objects.filter(pk=app.pk).update(egress_status="degraded", egress_message="Gateway gw-a is down.")
        html = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert re.search(rf'data-address="{active.address}" data-role="active" data-state="gateway_down"', html)
        assert re.search(rf'data-address="{standby.address}" data-role="standby" data-state="in_use"', html)
        assert "Carrying traffic" in html and "Gateway down" in html
        assert f"Traffic leaves from {standby.address}" in html

    def test_standby_gateway_down_is_reduced_not_all_good(self, alice, infra, make_app):
        app = _assigned(alice, make_app)
        standby = EgressIP.objects.get(app=app, role="standby")
        Gateway.objects.filter(pk=standby.gateway_id).update(health="unhealthy")
        html = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'data-view="reduced"' in html
        assert re.search(rf'data-address="{standby.address}" data-role="standby" data-state="gateway_down"', html)


class TestRetrying:
    def test_waiting_for_an_unreachable_gateway_says_so_with_the_next_attempt(self, alice, infra, make_app):
        """Finding 4: "usually takes about a second" for 11 s, then a red "Failed" while retrying."""
        gw_a = infra["gateways"][0]
        Gateway.objects.filter(pk=gw_a.pk).update(health="unhealthy")
        app = make_app(alice)
        client = _client(alice)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        # Told before clicking, without blocking: it works, with reduced redundancy at first.
        assert 'data-testid="enable-warning"' in page and "gw-a is not reachable" in page
        services.egress_enable(app=app, actor=alice)
        Gateway.objects.filter(pk=gw_a.pk).update(reconcile_retry_at=timezone.now() + dt.timedelta(seconds=8))
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert "usually takes about a second" not in html
        assert "Waiting for gateway gw-a" in html and "Next attempt in about" in html
        App.objects.filter(pk=app.pk).update(egress_status="failed", egress_message="gw-a could not be configured.")
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert 'data-view="retrying"' in html and ">Retrying<" in html and ">Failed<" not in html
        dashboard = client.get(reverse("portal:dashboard")).content.decode()
        assert 'data-view="retrying">Retrying<' in dashboard  # one name in both places
        HostSync.objects.filter(app=app).delete()  # nothing retries any more: now it is failed
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert 'data-view="failed"' in html and "does not use dedicated egress" in html


class TestDisable:
    def test_disable_asks_first_naming_addresses_and_how_long_they_stay_reserved(self, alice, infra, make_app):
        app = _assigned(alice, make_app)
        addresses = sorted(EgressIP.objects.filter(app=app).values_list("address", flat=True))
        client = _client(alice)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert f'action="{reverse("portal:app_disable_confirm", args=[app.pk])}"' in page
        for headers in ({}, HTMX):
            # The plain post without the confirmation changes nothing and asks.
            response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "shared"}, **headers)
            html = response.content.decode()
            assert response.status_code == 200 and 'data-testid="disable-confirm"' in html
            for address in addresses:
                assert f'data-testid="confirm-ip" data-address="{address}"' in html
            assert "reserved for this app for 30 days, until" in html
            until = (timezone.now() + dt.timedelta(days=30)).strftime("%Y-%m-%d")
            assert until in html
            app.refresh_from_db()
            assert app.egress_type == "dedicated"
        confirm = client.get(reverse("portal:app_disable_confirm", args=[app.pk]))
        assert "<html" in confirm.content.decode() and 'name="confirm" value="on"' in confirm.content.decode()
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "shared", "confirm": "on"})
        assert response.status_code == 302
        app.refresh_from_db()
        assert app.egress_type == "shared"

    def test_reserved_addresses_stay_visible_and_come_back(self, alice, infra, make_app):
        """Finding 5: after disabling, the addresses reserved for 30 days vanished from the page."""
        app = _assigned(alice, make_app)
        before = set(EgressIP.objects.filter(app=app).values_list("address", flat=True))
        services.egress_disable(app=app, actor=alice)
        _settle(app)
        client = _client(alice)
        html = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        shown = set(re.findall(r'data-testid="reserved-ip" data-address="([^"]+)"', html))
        assert shown == before
        until = (timezone.now() + dt.timedelta(days=30)).strftime("%Y-%m-%d")
        assert html.count(f'data-reserved-until="{until}') == 2
        assert ">Shared<" in html and "Enable again" in html and "brings back the reserved addresses" in html
        assert "stay reserved for this app for 30 days; enabling dedicated egress again brings them back." in html
        assert "quarantine" not in html.lower()
        services.egress_enable(app=app, actor=alice)
        assert set(EgressIP.objects.filter(app=app, status="assigned").values_list("address", flat=True)) == before


class TestOneName:
    def test_shared_is_called_shared_everywhere(self, alice, staff, infra, make_app):
        """Finding 10: "Shared", "Disabled · Shared egress" and "Disabled" for one state."""
        app = make_app(alice, "plain-app")
        client = _client(alice)
        dashboard = client.get(reverse("portal:dashboard")).content.decode()
        detail = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'data-view="shared">Shared<' in dashboard
        assert re.search(r'badge--shared">Shared<', detail)
        assert '<option value="disabled">Shared</option>' in dashboard
        for html in (dashboard, detail):
            assert ">Disabled<" not in html
        admin = _client(staff).get(reverse("admin:core_app_changelist")).content.decode()
        assert ">Shared<" in admin


class TestTimeline:
    def test_owner_sees_one_live_event_with_its_duration_staff_see_hosts(self, alice, staff, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        App.objects.filter(pk=app.pk).update(egress_requested_at=timezone.now() - dt.timedelta(seconds=1.2))
        for host in ("gw-a", "gw-b", "node-a", "node-b"):
            kind = "gateway" if host.startswith("gw") else "node"
            services.event_record(kind=f"egress.{kind}_configured", message=f"{kind.title()} {host} configured.",
                                  actor="worker", app=app)
        _settle(app)
        owner = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert "configured." not in owner
        assert owner.count('data-kind="egress.assigned"') == 1
        assert re.search(r'data-testid="live-duration">Took 1\.\d seconds', owner), owner
        # Absolute time to the second, and relative.
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time> <span class=\"when__relative\">\(just now\)", owner)
        staff_view = _client(staff).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert staff_view.count("configured.") >= 4
        events = _client(alice).get(reverse("portal:app_events", args=[app.pk])).content.decode()
        assert "configured." not in events


class TestErrorsAndSessions:
    def test_404_in_the_portals_look_with_a_way_back(self, alice, settings):
        settings.DEBUG = False
        response = _client(alice).get("/no/such/page/")
        html = response.content.decode()
        assert response.status_code == 404
        assert 'data-testid="error-page" data-code="404"' in html and 'class="site-header"' in html
        assert f'href="{reverse("portal:dashboard")}" data-testid="error-back"' in html
        api = _client(alice).get("/api/v1/nope/")
        assert api.status_code == 404 and api["Content-Type"].startswith("application/json")

    def test_500_page(self, alice):
        from egressportal.portal.views import error_500

        response = error_500(None)
        assert response.status_code == 500 and b"Something went wrong on our side" in response.content
        assert b'data-testid="error-back"' in response.content

    def test_csrf_failure_page_and_htmx_banner(self, alice, infra, make_app):
        app = make_app(alice)
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        url = reverse("portal:app_egress", args=[app.pk])
        page = client.post(url, {"type": "dedicated"})
        assert page.status_code == 403 and b"This page was out of date" in page.content
        assert b'data-testid="error-back"' in page.content
        htmx = client.post(url, {"type": "dedicated"}, **HTMX)
        assert htmx.status_code == 403 and htmx["X-Portal-Problem"] == "csrf"
        assert not EgressIP.objects.exclude(status="free").exists()

    def test_non_staff_on_admin_get_a_page_in_the_portals_look(self, alice, client):
        response = _client(alice).get(reverse("admin:index"), follow=True)
        html = response.content.decode()
        assert response.status_code == 403 and "The admin site is for platform admins" in html
        assert 'class="site-header"' in html and 'data-testid="error-back"' in html
        anonymous = client.get(reverse("admin:index"), follow=True)
        assert anonymous.redirect_chain[-1][0].startswith(reverse("login") + "?next=")
        assert b'id="login-heading"' in anonymous.content

    def test_lockout_message_in_words(self, alice):
        for _ in range(5):
            response = Client().post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="198.51.100.7")
        html = response.content.decode()
        assert response.status_code == 429 and "Try again in 15 minutes" in html and "PT15M" not in html


class TestAddresses:
    def test_my_addresses_page_exports_and_api(self, alice, bob, infra, make_app):
        app = _assigned(alice, make_app, "shop")
        other = _assigned(alice, make_app, "billing")
        bobs = _assigned(bob, make_app, "bob-app")
        services.egress_disable(app=other, actor=alice)
        _settle(other)
        mine = set(EgressIP.objects.filter(app=app).values_list("address", flat=True)) | set(
            EgressIP.objects.filter(last_app=other).values_list("address", flat=True)
        )
        hidden = set(EgressIP.objects.filter(app=bobs).values_list("address", flat=True))
        client = _client(alice)
        page = client.get(reverse("portal:addresses")).content.decode()
        shown = set(re.findall(r'data-testid="address-row" data-address="([^"]+)"', page))
        assert shown == mine and not shown & hidden
        assert page.count('data-state="reserved"') == 2
        rows = list(csv.DictReader(io.StringIO(client.get(reverse("portal:addresses_csv")).content.decode())))
        assert {r["address"] for r in rows} == mine
        reserved = [r for r in rows if r["state"] == "reserved"]
        assert len(reserved) == 2 and all(r["app"] == "billing" and r["reserved_until"] for r in reserved)
        data = client.get(reverse("portal:addresses_json")).json()["addresses"]
        assert {r["address"] for r in data} == mine
        assert {r["state"] for r in data if r["app"] == "shop"} == {"in_use", "standby"}
        token = api_token_for(alice)
        api = Client().get("/api/v1/addresses/", HTTP_AUTHORIZATION=f"Token {token}").json()
        assert {r["address"] for r in api["results"]} == mine
        assert {r["role"] for r in api["results"] if r["app"] == "shop"} == {"active", "standby"}
        schema = Client().get("/api/v1/schema/", HTTP_AUTHORIZATION=f"Token {token}").content.decode()
        assert "/api/v1/addresses/" in schema and "reserved_until" in schema


class TestAdminWording:
    def test_draining_column_confirmation_and_times(self, staff, alice, infra, make_app):
        app = _assigned(alice, make_app, "shop")
        gw = EgressIP.objects.get(app=app, role="active").gateway
        client = _client(staff)
        listing = client.get(reverse("admin:core_gateway_changelist")).content.decode()
        cells = re.findall(r'<td class="field-service_state">(.*?)</td>', listing)
        assert cells and all("In service" in c and "icon-" not in c for c in cells)
        url = reverse("admin:core_gateway_changelist")
        ask = client.post(url, {"action": "drain", "_selected_action": [gw.pk]})
        html = ask.content.decode()
        assert ask.status_code == 200 and 'data-testid="drain-confirmation"' in html
        assert 'data-testid="drain-affected-app"' in html and "shop" in html and "alice" in html
        gw.refresh_from_db()
        assert not gw.draining  # nothing happened yet
        done = client.post(url, {"action": "drain", "_selected_action": [gw.pk], "confirm": "yes"}, follow=True)
        text = done.content.decode()
        assert "1 app moved to its standby address" in text and "role(s)" not in text
        gw.refresh_from_db()
        assert gw.draining
        cells = re.findall(r'<td class="field-service_state">(.*?)</td>', client.get(url).content.decode())
        assert any("Draining" in c for c in cells)
        Gateway.objects.filter(pk=gw.pk).update(last_reconcile_duration=0.1410806369999591)
        change = client.get(reverse("admin:core_gateway_change", args=[gw.pk])).content.decode()
        assert "141 ms" in change and "0.1410806369999591" not in change
        audit = client.get(reverse("admin:core_event_changelist")).content.decode()
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", audit)
        assert Event.objects.filter(kind="gateway.drain_started").exists()
