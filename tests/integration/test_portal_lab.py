"""The portal walked in a real Chromium against the lab and a real worker, as an
owner and an admin would: enable and watch it go live (a stale "Check egress"
answer cleared), a webhook received by a small HTTP receiver on loopback with a
valid signature, a gateway failover (tags say where traffic goes), a drain from
the admin with its confirmation (the allow-list keeps the withdrawn address),
a stale tab, disabling with its confirmation, the reserved addresses after it,
and enabling again getting them back. Screenshots: test-artifacts/lab-*.png."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth import get_user_model

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway, HostSync
from egressportal.notifications import signing
from tests.integration.worker_fixtures import wait_for
from tests.notifications.receiver import Receiver
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401 - the fixture
from workers.lab import HOST_PLAN

pytestmark = [pytest.mark.lab, pytest.mark.worker, pytest.mark.browser]

NODE1_IP = "203.0.113.21"
NODE1_IP6 = str(HOST_PLAN["node1"].public6)
PASSWORD = "browser-lab-pass"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"lab-{name}.png"), full_page=True)


def _login(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def _status(app: App) -> str:
    return App.objects.get(pk=app.pk).egress_status


def _events(receiver: Receiver, event: str) -> list:
    return [r for r in receiver.requests if r.headers.get("X-Egress-Event") == event]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_walk_every_state_in_the_browser(lab, start_worker, browser, live_server, settings, receiver):  # noqa: F811
    from playwright.sync_api import expect

    settings.EGRESS_LAB_PREFIX = lab.config.prefix
    settings.EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK = True  # the receiver is on this machine's loopback
    start_worker(EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK="true", EGRESS_WEBHOOK_TIMEOUT="3")
    users = get_user_model().objects
    alice = users.get(username="alice")
    alice.set_password(PASSWORD)
    alice.save()
    users.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)
    shop = App.objects.get(name="shop-api")

    owner = browser.new_context(viewport={"width": 1280, "height": 900})
    owner.set_default_timeout(15_000)
    page = owner.new_page()
    _login(page, live_server.url, "alice")

    # A webhook through the notifications page; the secret is what the page shows.
    page.goto(f"{live_server.url}/notifications/")
    page.fill("input[name=url]", receiver.url)
    page.get_by_test_id("webhook-add").click()
    secret = page.get_by_test_id("webhook-secret").text_content().strip()
    page.get_by_test_id("webhook-test").click()
    wait_for(lambda: _events(receiver, "test"), timeout=20, what="the test event at the receiver")
    page.reload()
    expect(page.get_by_test_id("delivery-row").first).to_have_attribute("data-status", "succeeded")
    _shot(page, "webhook-delivered")

    # Enable and watch it go live; the old "Check egress" answer goes when the status changes.
    page.goto(f"{live_server.url}/apps/{shop.pk}/")
    page.click("[data-testid=check-egress]")
    expect(page.get_by_test_id("check-egress-result")).to_contain_text(NODE1_IP)
    # The lab is dual-stack: Check egress asks the echo server over IPv6 as well.
    expect(page.get_by_test_id("check-egress-result")).to_have_attribute("data-seen6", NODE1_IP6)
    started = time.monotonic()
    page.click("[data-testid=egress-toggle][data-action=enable]")
    status = page.get_by_test_id("egress-status")
    expect(status).to_have_attribute("data-status", "assigned", timeout=30_000)
    print(f"browser: enable to 'assigned' on screen in {time.monotonic() - started:.2f}s")
    expect(page.get_by_test_id("check-egress-result")).to_have_count(0)
    expect(status).to_have_attribute("data-view", "assigned")
    active = EgressIP.objects.select_related("gateway").get(app=shop, role="active")
    standby = EgressIP.objects.select_related("gateway").get(app=shop, role="standby")
    assert active.address6 and standby.address6, "the lab's region has an IPv6 pool"
    page.click("[data-testid=check-egress]")
    expect(page.get_by_test_id("check-egress-result")).to_have_attribute("data-seen", active.address)
    expect(page.get_by_test_id("check-egress-result")).to_have_attribute("data-seen6", active.address6)
    expect(page.get_by_test_id("check-egress-result")).to_contain_text("this app's dedicated IPv6 address")
    expect(page.locator("[data-testid=event][data-kind='egress.assigned']")).to_have_count(1)
    expect(page.locator("[data-testid=event][data-kind^='egress.node_configured']")).to_have_count(0)
    _shot(page, "assigned")

    # The webhook got "assigned", signed with the secret the page showed.
    [assigned] = wait_for(lambda: _events(receiver, "egress.assigned"), timeout=20, what="egress.assigned webhook")
    assert signing.verify(secret, assigned.headers["X-Egress-Signature"], assigned.body, now=int(time.time()))
    body = json.loads(assigned.body)
    assert body["app"]["name"] == "shop-api" and body["app"]["egress"]["status"] == "assigned"

    # Failover: the active gateway dies; the tags say where traffic goes now.
    wait_for(lambda: Gateway.objects.filter(health="healthy").count() == 2, timeout=15, what="gateways healthy")
    lab.cut_gateway(active.gateway.name)
    try:
        wait_for(lambda: _status(shop) == "degraded", timeout=20, what="degraded")
        wait_for(lambda: lab.seen_ip("shop-api") == standby.address, timeout=10, what="traffic on the standby")
        page.reload()
        expect(status).to_have_attribute("data-view", "degraded")
        expect(page.locator(f"[data-testid=egress-ip][data-address='{active.address}']")).to_have_attribute(
            "data-state", "gateway_down")
        expect(page.locator(f"[data-testid=egress-ip][data-address='{standby.address}']")).to_have_attribute(
            "data-state", "in_use")
        page.click("[data-testid=check-egress]")
        expect(page.get_by_test_id("check-egress-result")).to_have_attribute("data-seen", standby.address)
        expect(page.get_by_test_id("check-egress-result")).to_have_attribute("data-seen6", standby.address6)
        _shot(page, "failover")
        degraded = wait_for(lambda: _events(receiver, "egress.degraded"), timeout=20, what="egress.degraded webhook")
        assert signing.verify(secret, degraded[0].headers["X-Egress-Signature"], degraded[0].body,
                              now=int(time.time()))
    finally:
        lab.restore_gateway(active.gateway.name)
    wait_for(lambda: _status(shop) == "assigned", timeout=30, what="assigned again after failback")

    # Drain from the admin: it asks first, naming the apps; the allow-list keeps the withdrawn address.
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    admin.set_default_timeout(15_000)
    staff = admin.new_page()
    _login(staff, live_server.url, "admin")
    staff.goto(f"{live_server.url}/admin/core/gateway/")
    staff.check(f"input[name=_selected_action][value='{active.gateway_id}']")
    staff.select_option("select[name=action]", "drain")
    staff.click("button[name=index]")
    expect(staff.get_by_test_id("drain-confirmation")).to_contain_text("shop-api")
    _shot(staff, "admin-drain-confirmation")
    staff.get_by_test_id("drain-confirm").click()
    expect(staff.locator("ul.messagelist")).to_contain_text("moved to")
    expect(staff.locator("td.field-service_state", has_text="Draining")).to_have_count(1)
    _shot(staff, "admin-draining")
    wait_for(lambda: not HostSync.objects.exists() and not EgressIP.objects.filter(gateway=active.gateway).exists(),
             timeout=40, what="drain settled")
    page.reload()
    expect(status).to_have_attribute("data-view", "reduced")
    expect(status).to_contain_text("reduced redundancy")
    plain = page.locator("#snippet-plain").text_content().split()
    # The lab is dual-stack: each address comes with its IPv6 partner, and the allow-list keeps both.
    assert active.address6 and standby.address6
    assert set(plain) == {active.address, active.address6, standby.address, standby.address6}, plain
    expect(page.get_by_test_id("reserved-ip")).to_have_count(1)
    _shot(page, "drained-reduced")
    services.gateway_undrain(gateway=Gateway.objects.get(pk=active.gateway_id), actor="test")
    wait_for(lambda: not HostSync.objects.exists() and _status(shop) == "assigned"
             and EgressIP.objects.filter(app=shop).count() == 2, timeout=40, what="undrain settled")
    admin.close()

    # A stale tab: logged out and in again elsewhere; its forms carry an old token.
    page.reload()
    other = owner.new_page()
    other.goto(f"{live_server.url}/")
    other.get_by_role("button", name="Log out").click()
    _login(other, live_server.url, "alice")
    other.close()
    page.bring_to_front()
    page.click("[data-testid=check-egress]")
    expect(page.get_by_test_id("problem-banner")).to_have_attribute("data-problem", "csrf")
    _shot(page, "stale-tab")
    page.get_by_test_id("problem-reload").click()

    # Disable: the confirmation names the addresses and how long they stay reserved.
    addresses = sorted(EgressIP.objects.filter(app=shop).values_list("address", flat=True))
    page.click("[data-testid=egress-toggle][data-action=disable]")
    confirm = page.get_by_test_id("disable-confirm")
    for address in addresses:
        expect(confirm).to_contain_text(address)
    expect(confirm).to_contain_text("30 days")
    _shot(page, "disable-confirm")
    page.get_by_test_id("confirm-disable").click()
    expect(status).to_have_attribute("data-status", "disabled", timeout=30_000)
    reserved = page.get_by_test_id("reserved-ip")
    expect(reserved).to_have_count(2)
    assert sorted(reserved.nth(i).get_attribute("data-address") for i in range(2)) == addresses
    assert lab.seen_ip("shop-api") == NODE1_IP
    _shot(page, "reserved-after-disable")

    # Enabling again brings the very same addresses back.
    page.click("[data-testid=egress-toggle][data-action=enable]")
    expect(status).to_have_attribute("data-status", "assigned", timeout=30_000)
    assert sorted(EgressIP.objects.filter(app=shop).values_list("address", flat=True)) == addresses
    wait_for(lambda: len(_events(receiver, "egress.assigned")) >= 3, timeout=20, what="assigned again, notified")
    for request in receiver.requests:
        assert signing.verify(secret, request.headers["X-Egress-Signature"], request.body, now=int(time.time()))
    owner.close()


def test_an_unreachable_gateway_shows_retrying_with_the_next_attempt(lab, start_worker, browser, live_server,  # noqa: F811
                                                                     settings):
    """Finding 4: "usually takes about a second" for 11 s, then a red "Failed" while the workers retried."""
    from playwright.sync_api import expect

    start_worker()
    alice = get_user_model().objects.get(username="alice")
    alice.set_password(PASSWORD)
    alice.save()
    billing = App.objects.get(name="billing")
    wait_for(lambda: Gateway.objects.filter(health="healthy").count() == 2, timeout=15, what="gateways healthy")
    # Every link of gw2 goes dark (a stopped sshd alone keeps a gateway in service: the prober's policy).
    lab.power_off("gw2")
    try:
        wait_for(lambda: Gateway.objects.get(name="gw2").health == "unhealthy", timeout=15, what="gw2 unhealthy")
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        _login(page, live_server.url, "alice")
        page.goto(f"{live_server.url}/apps/{billing.pk}/")
        expect(page.get_by_test_id("enable-warning")).to_contain_text("gw2 is not reachable")
        page.click("[data-testid=egress-toggle][data-action=enable]")
        hint = page.get_by_test_id("egress-hint")
        expect(hint).to_contain_text("Waiting for gateway gw2", timeout=20_000)
        expect(hint).to_contain_text("Next attempt", timeout=20_000)
        expect(hint).not_to_contain_text("about a second")
        status = page.get_by_test_id("egress-status")
        expect(status).not_to_have_attribute("data-view", "failed")
        gw2 = EgressIP.objects.get(app=billing, gateway__name="gw2").address
        expect(page.locator(f"[data-testid=egress-ip][data-address='{gw2}']")).to_have_attribute(
            "data-state", "gateway_down")
        _shot(page, "unreachable-gateway-retrying")
    finally:
        lab.power_on("gw2", empty=False)
    expect(status).to_have_attribute("data-status", "assigned", timeout=60_000)
    _shot(page, "unreachable-gateway-recovered")
    context.close()
