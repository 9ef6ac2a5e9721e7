"""The portal's views: login, tenant isolation, the egress toggle with and
without htmx, errors in words, live-status polling. SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from egressportal.core import services
from egressportal.core.models import App, EgressIP, EgressStatus, Event, HostSync, Placement
from egressportal.core.services.hostsync import app_settle

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _settle(app: App) -> App:
    """What the workers do once every host caught up."""
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)
    app.refresh_from_db()
    return app


def _panel_root(html: str) -> str:
    match = re.search(r'<div class="egress"[^>]*>', html)
    assert match, html
    return match.group(0)


class TestLogin:
    @pytest.mark.parametrize("name", ["portal:dashboard", "portal:app_detail", "portal:app_events"])
    def test_login_required(self, client, alice, make_app, name):
        kwargs = {"pk": make_app(alice).pk} if name != "portal:dashboard" else {}
        url = reverse(name, kwargs=kwargs)
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")

    def test_login_required_for_toggle_and_fragment(self, client, alice, make_app):
        app = make_app(alice)
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"})
        assert response.status_code == 302 and reverse("login") in response["Location"]
        # htmx gets no login form swapped into the panel: a 401 that says the session ended and where to log in
        # (the page shows a banner with "Log in again", static/portal/portal.js).
        response = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX,
                              HTTP_HX_CURRENT_URL=f"http://testserver/apps/{app.pk}/")
        assert response.status_code == 401
        assert response["X-Portal-Problem"] == "session-expired"
        assert response["X-Portal-Login"] == reverse("login") + f"?next=%2Fapps%2F{app.pk}%2F"
        app.refresh_from_db()
        assert app.egress_status == EgressStatus.DISABLED

    def test_login_page_and_logout(self, client, alice):
        response = client.get(reverse("login"))
        assert response.status_code == 200
        assert b'autocomplete="current-password"' in response.content
        response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-only"})
        assert response.status_code == 302 and response["Location"] == reverse("portal:dashboard")
        page = client.get(reverse("portal:dashboard")).content.decode()
        assert f'action="{reverse("logout")}"' in page and "csrfmiddlewaretoken" in page
        response = client.post(reverse("logout"))
        assert response.status_code == 302
        assert client.get(reverse("portal:dashboard")).status_code == 302

    def test_wrong_password_says_so(self, client, alice):
        response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
        assert response.status_code == 200
        assert b'role="alert"' in response.content


class TestDashboard:
    def test_shows_only_own_apps(self, alice, bob, make_app):
        make_app(alice, "alice-api")
        make_app(bob, "bob-secret")
        page = _client(alice).get(reverse("portal:dashboard")).content.decode()
        assert "alice-api" in page
        assert "bob-secret" not in page
        assert "Owner" not in page
        assert 'data-testid="admin-link"' not in page

    def test_staff_see_all_with_owner_and_admin_link(self, alice, bob, staff, make_app):
        make_app(alice, "alice-api")
        make_app(bob, "bob-secret")
        response = _client(staff).get(reverse("portal:dashboard"))
        page = response.content.decode()
        assert "alice-api" in page and "bob-secret" in page
        assert ">Owner<" in page and ">bob<" in page
        assert f'href="{reverse("admin:index")}"' in page
        assert _client(staff).get(reverse("admin:index")).status_code == 200

    def test_search_status_and_pagination(self, alice, infra, make_app):
        for i in range(30):
            make_app(alice, f"svc-{i:02d}")
        make_app(alice, "billing")
        client = _client(alice)
        page1 = client.get(reverse("portal:dashboard")).content.decode()
        assert page1.count('data-testid="app-row"') == 25
        assert "Page 1 of 2" in page1 and "billing" in page1
        page2 = client.get(reverse("portal:dashboard"), {"page": 2}).content.decode()
        assert page2.count('data-testid="app-row"') == 6
        found = client.get(reverse("portal:dashboard"), {"q": "bill"}).content.decode()
        assert found.count('data-testid="app-row"') == 1 and "billing" in found
        # Pagination keeps the search.
        many = client.get(reverse("portal:dashboard"), {"q": "svc"}).content.decode()
        assert "?q=svc&amp;page=2" in many
        none = client.get(reverse("portal:dashboard"), {"q": "zzz"}).content.decode()
        assert "No apps match" in none
        services.egress_enable(app=App.objects.get(name="billing"), actor=alice)
        assigning = client.get(reverse("portal:dashboard"), {"status": "assigning"}).content.decode()
        assert assigning.count('data-testid="app-row"') == 1 and "203.0.113." in assigning
        # Nonsense input is ignored, not a crash.
        assert client.get(reverse("portal:dashboard"), {"page": "x", "status": "bogus"}).status_code == 200


class TestTenantIsolation:
    def test_someone_elses_app_is_404(self, alice, bob, infra, make_app):
        app = make_app(bob)
        client = _client(alice)
        for name in ["portal:app_detail", "portal:app_events"]:
            assert client.get(reverse(name, args=[app.pk])).status_code == 404
        assert client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).status_code == 404
        for headers in ({}, HTMX):
            response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"}, **headers)
            assert response.status_code == 404
        app.refresh_from_db()
        assert app.egress_status == EgressStatus.DISABLED
        assert not EgressIP.objects.exclude(status="free").exists()
        assert client.get(reverse("portal:app_detail", args=[999999])).status_code == 404

    def test_staff_see_and_toggle_any_app(self, bob, staff, infra, make_app):
        app = make_app(bob, "bob-app")
        client = _client(staff)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert "bob-app" in page and "Owner" in page
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"})
        assert response.status_code == 302
        app.refresh_from_db()
        assert app.egress_status == EgressStatus.ASSIGNING
        assert Event.objects.filter(app=app, kind="egress.enable_requested", actor=staff).exists()


class TestToggle:
    def test_post_without_csrf_token_is_rejected(self, alice, infra, make_app):
        app = make_app(alice)
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"}, **HTMX)
        assert response.status_code == 403
        app.refresh_from_db()
        assert app.egress_status == EgressStatus.DISABLED and not EgressIP.objects.exclude(status="free").exists()

    def test_post_with_csrf_token_from_the_page_works(self, alice, infra, make_app):
        app = make_app(alice)
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        response = client.post(
            reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated", "csrfmiddlewaretoken": token}
        )
        assert response.status_code == 302

    def test_toggle_without_javascript_redirects(self, alice, infra, make_app):
        app = make_app(alice)
        client = _client(alice)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'data-testid="egress-toggle"' in page and "Enable dedicated egress" in page
        assert '<form method="post" action="' + reverse("portal:app_egress", args=[app.pk]) in page
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"})
        assert response.status_code == 302
        assert response["Location"] == reverse("portal:app_detail", args=[app.pk])
        app.refresh_from_db()
        assert app.egress_type == "dedicated" and app.egress_status == EgressStatus.ASSIGNING
        page = client.get(response["Location"]).content.decode()
        assert "Dedicated egress requested" in page
        assert page.count('data-testid="egress-ip"') == 2
        assert "Disable dedicated egress" in page
        # Again: nothing changes, and the user is told so.
        client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"})
        assert "Nothing to change" in client.get(response["Location"]).content.decode()
        assert EgressIP.objects.filter(app=app).count() == 2

    def test_toggle_with_htmx_returns_the_panel(self, alice, infra, make_app):
        app = make_app(alice)
        client = _client(alice)
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated"}, **HTMX)
        assert response.status_code == 200
        html = response.content.decode()
        assert "<html" not in html  # a fragment, not a page
        assert 'data-testid="egress-status" data-status="assigning"' in html
        assert html.count('data-testid="egress-ip"') == 2
        assert 'hx-trigger="load delay:1s"' in _panel_root(html)
        # Turning it off again from the panel: first the question, then the change.
        _settle(app)
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "shared"}, **HTMX)
        assert 'data-testid="disable-confirm"' in response.content.decode()
        app.refresh_from_db()
        assert app.egress_type == "dedicated"
        response = client.post(reverse("portal:app_egress", args=[app.pk]), {"type": "shared", "confirm": "on"}, **HTMX)
        assert 'data-status="releasing"' in response.content.decode()
        app.refresh_from_db()
        assert app.egress_type == "shared"

    def test_bad_type_is_an_error_not_a_crash(self, alice, infra, make_app):
        app = make_app(alice)
        response = _client(alice).post(reverse("portal:app_egress", args=[app.pk]), {"type": "both"}, **HTMX)
        assert response.status_code == 200
        assert 'data-testid="egress-error"' in response.content.decode()
        app.refresh_from_db()
        assert app.egress_status == EgressStatus.DISABLED


class TestErrors:
    def test_pool_exhaustion_is_shown_and_nothing_allocated(self, alice, bob, region, make_gateway, make_app):
        make_gateway("gw-1"), make_gateway("gw-2")
        services.pool_create(region=region, name="tiny", cidr="203.0.113.0/30")  # 2 usable addresses
        first, second = make_app(bob, "takes-all"), make_app(alice, "too-late")
        services.egress_enable(app=first, actor=bob)
        client = _client(alice)
        url = reverse("portal:app_egress", args=[second.pk])
        # Told before clicking: the button is disabled, with the reason.
        page = client.get(reverse("portal:app_detail", args=[second.pk])).content.decode()
        assert re.search(r'data-action="enable"\s+disabled aria-describedby="enable-problem"', page)
        assert "run out of dedicated egress addresses" in page
        # And if the page was stale when clicked: an error in words, nothing half-done.
        response = client.post(url, {"type": "dedicated"}, **HTMX)
        html = response.content.decode()
        assert 'data-testid="egress-error"' in html
        assert "Not enough free egress addresses" in html and "Nothing was changed" in html
        response = client.post(url, {"type": "dedicated"}, follow=True)
        assert "Not enough free egress addresses" in response.content.decode()
        second.refresh_from_db()
        assert second.egress_type == "shared" and second.egress_status == EgressStatus.DISABLED
        assert not EgressIP.objects.filter(app=second).exists()
        assert not HostSync.objects.filter(app=second).exists()

    def test_at_the_address_quota_the_page_and_the_dashboard_say_so_instead_of_offering_a_failing_toggle(
        self, alice, infra, make_app, settings
    ):
        settings.EGRESS_QUOTA_ADDRESSES = 2
        client = _client(alice)
        first, second = make_app(alice, "first"), make_app(alice, "second")
        assert 'data-testid="quota-reached"' not in client.get(reverse("portal:dashboard")).content.decode()
        services.egress_enable(app=first, actor=alice)  # both addresses of the quota
        page = client.get(reverse("portal:app_detail", args=[second.pk])).content.decode()
        assert re.search(r'data-action="enable"\s+disabled aria-describedby="enable-problem"', page)
        assert "Your dedicated address quota is used up: enabling this app needs 2 more addresses" in page
        assert "2 of your 2 are in use" in page
        dashboard = client.get(reverse("portal:dashboard")).content.decode()
        assert 'data-testid="quota-reached"' in dashboard and "2 of 2 addresses in use" in dashboard
        # The enable itself refuses the same (a stale page clicked): nothing allocated.
        html = client.post(reverse("portal:app_egress", args=[second.pk]), {"type": "dedicated"}, **HTMX).content.decode()
        assert "quota" in html and 'data-testid="egress-error"' in html
        assert not EgressIP.objects.filter(app=second).exists()
        # Addresses in quarantine still count, but an app of the same tenant takes them back without using
        # more of the quota: offered to both apps, and the enable goes through.
        services.egress_disable(app=first, actor=alice)
        services.egress_ips_release(app=first)
        for app in (first, second):
            page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
            assert 'data-testid="enable-problem"' not in page
        services.egress_enable(app=second, actor=alice)  # as offered
        assert "quota is used up" in client.get(reverse("portal:app_detail", args=[first.pk])).content.decode()
        # A raised quota: offered again, and the dashboard says nothing.
        services.tenant_quota_set(user=alice, max_addresses=4)
        assert 'data-testid="enable-problem"' not in client.get(
            reverse("portal:app_detail", args=[first.pk])).content.decode()
        assert 'data-testid="quota-reached"' not in client.get(reverse("portal:dashboard")).content.decode()

    def test_region_without_gateway_disables_the_button(self, alice, region, make_app):
        services.pool_create(region=region, name="p", cidr="203.0.113.0/28")
        app = make_app(alice)
        page = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert "no egress gateway yet" in page
        assert 'data-testid="enable-problem"' in page

    def test_where_it_runs_is_shown_read_only(self, alice, infra, make_app):
        placed, nowhere = make_app(alice, "placed"), make_app(alice, "nowhere", cidrs=[])
        client = _client(alice)
        page = client.get(reverse("portal:app_detail", args=[placed.pk])).content.decode()
        assert 'data-testid="placement" data-node="node-a"' in page and "Where it runs" in page
        assert "<input" not in page.split('data-testid="placements"')[1].split("</section>")[0]
        page = client.get(reverse("portal:app_detail", args=[nowhere.pk])).content.decode()
        assert "Not running on any node right now" in page
        # An app running nowhere yet may still get its addresses (for allow-lists ahead of the deploy).
        client.post(reverse("portal:app_egress", args=[nowhere.pk]), {"type": "dedicated"}, follow=True)
        assert EgressIP.objects.filter(app=nowhere).count() == 2

    def test_the_portal_takes_no_source_addresses(self, alice, infra, make_app):
        app = make_app(alice, "mine")
        client = _client(alice)
        before = list(Placement.objects.values_list("node_id", "app_id", "cidr"))
        for field in ("source_cidrs", "placements", "addresses"):
            response = client.post(
                reverse("portal:app_egress", args=[app.pk]), {"type": "dedicated", field: "198.18.129.0/28"}
            )
            assert response.status_code == 400 and "platform reports" in response.content.decode()
        assert list(Placement.objects.values_list("node_id", "app_id", "cidr")) == before
        assert not EgressIP.objects.exclude(status="free").exists()

    def test_own_quarantined_addresses_do_not_block_re_enabling(self, alice, region, make_gateway, make_app):
        make_gateway("gw-1"), make_gateway("gw-2")
        services.pool_create(region=region, name="tiny", cidr="203.0.113.0/30")
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        services.egress_ips_release(app=app)  # the addresses are in quarantine, the pool looks full
        page = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'data-testid="enable-problem"' not in page

    def test_reduced_redundancy_hint(self, alice, region, make_gateway, make_app, settings):
        settings.EGRESS_IPS_PER_APP = 2
        make_gateway("only-one")
        services.pool_create(region=region, name="p", cidr="203.0.113.0/28")
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        _settle(app)
        assert app.egress_status == EgressStatus.ASSIGNED
        page = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        # Not the green "Assigned": the badge and the words say redundancy is reduced.
        assert 'data-view="reduced"' in page and "Assigned · reduced redundancy" in page
        assert "1 of the 2 addresses" in page


class TestLiveStatus:
    def test_fragment_polls_while_assigning_with_back_off(self, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        client = _client(alice)
        url = reverse("portal:app_egress_panel", args=[app.pk])
        delays = []
        for n in range(7):
            root = _panel_root(client.get(url, {"n": n}, **HTMX).content.decode())
            delays.append(int(re.search(r'hx-trigger="load delay:(\d+)s"', root).group(1)))
            assert f"?n={n + 1}" in root
        # Assigning usually lands within a second or two: no back-off that would show "assigned" late.
        assert delays == [1, 1, 1, 1, 1, 1, 1]
        root = _panel_root(client.get(url, {"n": 200}, **HTMX).content.decode())
        assert 'hx-trigger="load delay:3s"' in root  # a change that takes minutes is polled more slowly
        # The full page polls too, while pending.
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'hx-trigger="load delay:1s"' in page
        assert 'id="egress-panel" aria-live="polite"' in page

    def test_fragment_stops_polling_when_settled(self, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        _settle(app)
        assert app.egress_status == EgressStatus.ASSIGNED
        client = _client(alice)
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), {"n": 3}, **HTMX).content.decode()
        assert "hx-trigger" not in html
        assert 'data-status="assigned"' in html
        assert html.count('data-ip-status="live"') == 2
        assert "egress.assigned" in html  # latest events travel with the status
        for snippet in ["/32", "ip saddr {", "iptables -A INPUT", "authorize-security-group-ingress"]:
            assert snippet in html
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert "hx-trigger" not in page

    def test_degraded_keeps_watching_until_the_gateway_is_back(self, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        _settle(app)
        App.objects.filter(pk=app.pk).update(egress_status=EgressStatus.DEGRADED, egress_message="Gateway gw-a is down.")
        client = _client(alice)
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert 'hx-trigger="load delay:2s"' in _panel_root(html)  # it changes by itself: the page follows
        assert 'class="spinner"' not in html  # nothing of the user's is in flight
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'hx-trigger="load delay:2s"' in page
        App.objects.filter(pk=app.pk).update(egress_status=EgressStatus.ASSIGNED, egress_message="")
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), {"n": 4}, **HTMX).content.decode()
        assert "hx-trigger" not in html

    def test_disabled_app_does_not_poll(self, alice, infra, make_app):
        app = make_app(alice)
        html = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        assert 'hx-trigger="load' not in html

    def test_failed_and_retrying_keeps_polling(self, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        App.objects.filter(pk=app.pk).update(
            egress_status=EgressStatus.FAILED, egress_message="Gateway gw-a could not be configured. Retrying."
        )
        client = _client(alice)
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert 'hx-trigger="load delay:2s"' in _panel_root(html)  # retrying: backing off
        assert "could not be configured" in html and 'data-testid="egress-retry"' in html
        assert 'data-view="retrying"' in html and ">Retrying<" in html and "retry on their own" in html
        HostSync.objects.filter(app=app).delete()  # nothing owed any more: no retry is running
        html = client.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode()
        assert "hx-trigger" not in html

    def test_fragment_without_htmx_goes_to_the_page(self, alice, infra, make_app):
        app = make_app(alice)
        response = _client(alice).get(reverse("portal:app_egress_panel", args=[app.pk]))
        assert response.status_code == 302 and response["Location"] == reverse("portal:app_detail", args=[app.pk])


class TestTimeline:
    def test_newest_first_and_show_more(self, alice, make_app):
        app = make_app(alice)
        for i in range(45):
            services.event_record(kind="test.step", message=f"step {i:02d}", actor=alice, app=app)
        client = _client(alice)
        page = client.get(reverse("portal:app_detail", args=[app.pk])).content.decode()
        timeline = page[page.index('data-testid="timeline"'):]
        assert timeline.index("step 44") < timeline.index("step 43")
        assert "step 25" in timeline and "step 24" not in timeline
        assert 'data-testid="events-more"' in timeline
        more = client.get(reverse("portal:app_events", args=[app.pk]), {"page": 2}, **HTMX)
        html = more.content.decode()
        assert "<html" not in html and "step 24" in html and "step 05" in html and "step 04" not in html
        assert "?page=3" in html
        assert "HX-Request" in more["Vary"]
        last = client.get(reverse("portal:app_events", args=[app.pk]), {"page": 3}, **HTMX).content.decode()
        assert "step 00" in last and "events-more" not in last
        # Without JavaScript the same link is a full page.
        full = client.get(reverse("portal:app_events", args=[app.pk]), {"page": 2}).content.decode()
        assert "<html" in full and "step 24" in full and "Older" in full


class TestPageHygiene:
    """A strict CSP comes later: nothing inline in what the portal renders."""

    def test_no_inline_script_style_or_handlers(self, alice, staff, infra, make_app, client):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        pages = [client.get(reverse("login")).content.decode()]
        user = _client(alice)
        pages += [
            user.get(reverse("portal:dashboard")).content.decode(),
            user.get(reverse("portal:app_detail", args=[app.pk])).content.decode(),
            user.get(reverse("portal:app_events", args=[app.pk])).content.decode(),
            user.get(reverse("portal:app_egress_panel", args=[app.pk]), **HTMX).content.decode(),
        ]
        for html in pages:
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
            assert not re.search(r"\son[a-z]+=", html)
            assert " style=" not in html and "<style" not in html
            assert "//cdn" not in html and "unpkg.com" not in html


class TestAdmin:
    def test_admin_index_shows_the_egress_overview(self, staff, alice, infra, make_app):
        app = make_app(alice)
        services.egress_enable(app=app, actor=alice)
        App.objects.filter(pk=app.pk).update(egress_status=EgressStatus.FAILED)
        client = _client(staff)
        page = client.get(reverse("admin:index")).content.decode()
        assert "Egress at a glance" in page
        assert "pool-a" in page and "14%" in page and "12 of 14" in page  # 2 of 14 assigned
        assert "gw-a" in page and "Unknown" in page
        assert f'href="{reverse("portal:dashboard")}"' in page
        link = re.search(r'href="([^"]*egress_status__in=[^"]*)"', page).group(1)
        response = client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200 and app.name in response.content.decode()

    def test_admin_is_for_staff_only(self, alice):
        response = _client(alice).get(reverse("admin:index"))
        assert response.status_code == 302
