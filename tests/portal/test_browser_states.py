"""Real Chromium against the live server, off the happy path: a stale tab (CSRF
token rotated by a log-in elsewhere) and an ended session say so and offer a
reload or a log-in; disabling asks first and the reserved addresses stay on the
page; the main pages pass axe-core (no serious or critical violation) and fit
phone widths with every snippet open. Screenshots go to test-artifacts/.

The workers' part is played in the database here; tests/integration/test_portal_lab.py
walks the same pages against the lab and a real worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway, HostSync
from egressportal.core.services.hostsync import app_settle
from egressportal.notifications import services as notifications
from tests.portal.test_browser import ARTIFACTS, PASSWORD, browser  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE_BLOCKING = {"serious", "critical"}


def _settle(app: App) -> None:
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)


def _login(page, base_url: str, username: str = "alice") -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def axe_violations(page) -> list[str]:
    """axe-core (bundled with axe-playwright-python: no network) over the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in AXE_BLOCKING
    ]


@pytest.fixture
def context(browser, live_server):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def test_stale_tab_and_ended_session_say_so(context, live_server, alice, infra, make_app):
    from playwright.sync_api import expect

    app = make_app(alice, "shop-api")
    stale = context.new_page()
    _login(stale, live_server.url)
    stale.goto(f"{live_server.url}/apps/{app.pk}/")

    # Elsewhere (another tab of the same browser) the user logs out and in again: the CSRF token changes.
    other = context.new_page()
    other.goto(f"{live_server.url}/")
    other.get_by_role("button", name="Log out").click()
    _login(other, live_server.url)

    stale.bring_to_front()
    stale.get_by_test_id("egress-toggle").click()  # its form carries the token of before
    banner = stale.get_by_test_id("problem-banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-problem", "csrf")
    expect(banner).to_contain_text("This page is out of date")
    expect(stale.get_by_test_id("problem-reload")).to_be_focused()
    _shot(stale, "portal-stale-tab")
    assert App.objects.get(pk=app.pk).egress_type == "shared"  # nothing changed
    stale.get_by_test_id("problem-reload").click()
    expect(stale.get_by_test_id("problem-banner")).to_be_hidden()
    stale.get_by_test_id("egress-toggle").click()  # the reloaded page works
    expect(stale.get_by_test_id("egress-status")).to_have_attribute("data-status", "assigning")

    # Logged out elsewhere: the next request says the session ended and offers to log in again.
    other.get_by_role("button", name="Log out").click()
    stale.bring_to_front()
    stale.evaluate("htmx.ajax('GET', window.location.pathname + 'egress/panel/', '#egress-panel')")
    expect(banner).to_have_attribute("data-problem", "session-expired")
    login = stale.get_by_test_id("problem-login")
    expect(login).to_be_visible()
    expect(login).to_have_attribute("href", f"/accounts/login/?next=%2Fapps%2F{app.pk}%2F")
    _shot(stale, "portal-session-ended")
    login.click()
    stale.wait_for_url("**/accounts/login/?next=*")


def test_disable_asks_first_and_reserved_addresses_stay(context, live_server, alice, infra, make_app):
    from playwright.sync_api import expect

    app = make_app(alice, "shop-api")
    services.egress_enable(app=app, actor=alice)
    _settle(app)
    addresses = sorted(EgressIP.objects.filter(app=app).values_list("address", flat=True))
    page = context.new_page()
    _login(page, live_server.url)
    page.goto(f"{live_server.url}/apps/{app.pk}/")
    page.get_by_test_id("egress-toggle").click()
    confirm = page.get_by_test_id("disable-confirm")
    expect(confirm).to_be_visible()
    for address in addresses:
        expect(confirm).to_contain_text(address)
    expect(page.get_by_test_id("confirm-reserved")).to_contain_text("reserved for this app for 30 days, until")
    expect(page.locator("#disable-confirm-heading")).to_be_focused()
    _shot(page, "portal-disable-confirm")
    page.get_by_test_id("cancel-disable").click()
    expect(page.get_by_test_id("egress-status")).to_have_attribute("data-status", "assigned")
    assert App.objects.get(pk=app.pk).egress_type == "dedicated"

    page.get_by_test_id("egress-toggle").click()
    page.get_by_test_id("confirm-disable").click()
    expect(page.get_by_test_id("egress-status")).to_have_attribute("data-status", "releasing")
    _settle(App.objects.get(pk=app.pk))
    expect(page.get_by_test_id("egress-status")).to_have_attribute("data-status", "disabled", timeout=15_000)
    reserved = page.get_by_test_id("reserved-ip")
    expect(reserved).to_have_count(2)
    assert sorted(reserved.nth(i).get_attribute("data-address") for i in range(2)) == addresses
    expect(page.get_by_test_id("egress-status")).to_contain_text("Shared")
    _shot(page, "portal-reserved-after-disable")
    page.get_by_test_id("egress-toggle").click()  # "Enable again"
    expect(page.get_by_test_id("egress-status")).to_have_attribute("data-status", "assigning")
    ips = page.get_by_test_id("egress-ip")
    expect(ips).to_have_count(2)
    assert sorted(ips.nth(i).get_attribute("data-address") for i in range(2)) == addresses


def _states_world(alice, infra, make_app) -> dict[str, App]:
    """One app in each state worth looking at."""
    apps = {name: make_app(alice, name) for name in ("shop-api", "checkout", "billing", "search", "crawler")}
    for name in ("shop-api", "checkout", "billing", "search"):
        services.egress_enable(app=apps[name], actor=alice)
    for name in ("shop-api", "billing", "search"):
        _settle(apps[name])
    # billing: its standby withdrawn by a drain (reduced redundancy); search: back to shared, addresses reserved.
    ip = EgressIP.objects.get(app=apps["billing"], role="standby")
    EgressIP.objects.filter(pk=ip.pk).update(status="quarantined", released_at=timezone.now(), last_app=apps["billing"],
                                             last_owner=alice, app=None, gateway=None, role="", programmed=False)
    app_settle(app_id=apps["billing"].pk)
    services.egress_disable(app=apps["search"], actor=alice)
    _settle(apps["search"])
    for i in range(3):
        services.event_record(kind="note", message=f"Deployed version 1.{i}.", actor="platform", app=apps["shop-api"])
    return {name: App.objects.get(pk=app.pk) for name, app in apps.items()}


def test_main_pages_pass_axe(context, live_server, alice, staff, infra, make_app, settings):
    """No serious or critical axe-core violation on the pages people use."""
    settings.EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK = True
    apps = _states_world(alice, infra, make_app)
    hook = notifications.webhook_create(owner=alice, url="https://hooks.example.com/egress",
                                        events=["egress.assigned"])
    notifications.webhook_send_test(endpoint=hook)
    Gateway.objects.filter(pk=infra["gateways"][0].pk).update(health="unhealthy")
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    found = {"login": axe_violations(page)}
    _login(page, live_server.url)
    urls = {
        "dashboard": "/",
        "app-assigned": f"/apps/{apps['shop-api'].pk}/",
        "app-assigning": f"/apps/{apps['checkout'].pk}/",
        "app-reduced": f"/apps/{apps['billing'].pk}/",
        "app-shared-reserved": f"/apps/{apps['search'].pk}/",
        "app-shared": f"/apps/{apps['crawler'].pk}/",
        "disable-confirm": f"/apps/{apps['shop-api'].pk}/egress/disable/",
        "events": f"/apps/{apps['shop-api'].pk}/events/",
        "addresses": "/addresses/",
        "notifications": "/notifications/",
        "webhook": f"/notifications/webhooks/{hook.pk}/",
        "not-found": "/no/such/page/",
        "admin-for-non-staff": "/admin/",
    }
    for name, url in urls.items():
        page.goto(f"{live_server.url}{url}")
        page.wait_for_timeout(150)
        found[name] = axe_violations(page)
        if name.startswith("app-") or name in ("addresses", "notifications", "webhook", "not-found",
                                               "admin-for-non-staff", "disable-confirm"):
            _shot(page, f"portal-{name}")
    # The disable confirmation in place (htmx) and the problem banner are checked as shown, too.
    page.goto(f"{live_server.url}{urls['app-assigned']}")
    page.get_by_test_id("egress-toggle").click()
    page.get_by_test_id("disable-confirm").wait_for()
    found["confirm-in-panel"] = axe_violations(page)
    page.evaluate("document.getElementById('problem-banner').hidden = false")
    found["problem-banner"] = axe_violations(page)
    blocking = {name: v for name, v in found.items() if v}
    assert not blocking, blocking
    # The check itself sees a serious problem when there is one: a button without a name.
    page.evaluate("document.getElementById('main').appendChild(document.createElement('button'))")
    assert any(v.startswith("button-name") for v in axe_violations(page))


@pytest.mark.parametrize("width", [360, 390])
def test_phone_widths_never_scroll_sideways_snippets_open(context, browser, live_server, alice, infra, make_app,  # noqa: F811
                                                          width):
    apps = _states_world(alice, infra, make_app)
    phone = browser.new_context(viewport={"width": width, "height": 800})
    page = phone.new_page()
    _login(page, live_server.url)
    for name, url in [
        ("app", f"/apps/{apps['shop-api'].pk}/"),
        ("app-reduced", f"/apps/{apps['billing'].pk}/"),
        ("app-shared-reserved", f"/apps/{apps['search'].pk}/"),
        ("addresses", "/addresses/"),
        ("notifications", "/notifications/"),
        ("dashboard", "/"),
    ]:
        page.goto(f"{live_server.url}{url}")
        # Every snippet open: the longest lines (AWS CLI, iptables) must scroll inside their box, not the page.
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        page.wait_for_timeout(100)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
        _shot(page, f"portal-mobile-{name}-{width}")
    phone.close()


def test_shared_state_has_one_name_and_reduced_is_not_green(context, live_server, alice, infra, make_app):
    from playwright.sync_api import expect

    _states_world(alice, infra, make_app)
    page = context.new_page()
    _login(page, live_server.url)
    rows = page.get_by_test_id("app-row")
    expect(rows).to_have_count(5)
    badge = page.locator("[data-testid=app-row]", has_text="crawler").get_by_test_id("status-badge")
    expect(badge).to_have_text("Shared")
    reduced = page.locator("[data-testid=app-row]", has_text="billing").get_by_test_id("status-badge")
    expect(reduced).to_have_text("Assigned · reduced redundancy")
    colour = reduced.evaluate("el => getComputedStyle(el).backgroundColor")
    green = page.locator("[data-testid=app-row]", has_text="shop-api").get_by_test_id("status-badge").evaluate(
        "el => getComputedStyle(el).backgroundColor")
    assert colour != green
    _shot(page, "portal-dashboard-states")
    assert Path(ARTIFACTS / "portal-dashboard-states.png").exists()
