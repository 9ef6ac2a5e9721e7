"""Issue 18: the UI and the API show the truth throughout a failover and a failback, walked in a real
Chromium against the lab, a real worker and a real prober. Before: the active address carries the traffic.
The active gateway loses every link (a power loss): the page says degraded, why, and that the standby address
is the one in use. The gateway comes back empty and is repaired: without a reload the page goes back to the
active address, not degraded, and the timeline says when. The API's egress object says the same at each step,
and the echo server sees the address both claim. Screenshots: test-artifacts/failover-*.png."""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.contrib.auth import get_user_model

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Gateway
from tests.conftest import api_token_for
from tests.integration.worker_fixtures import wait_for
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401 - the fixture

pytestmark = [pytest.mark.lab, pytest.mark.worker, pytest.mark.browser]

PASSWORD = "browser-failover-pass"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"failover-{name}.png"), full_page=True)


def _api_egress(base_url: str, token: str, app: App) -> dict:
    request = urllib.request.Request(
        f"{base_url}/api/v1/apps/{app.pk}/egress/", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _states(egress: dict) -> dict[str, str]:
    return {ip["address"]: ip["state"] for ip in egress["ips"]}


def test_failover_and_failback_shown_truthfully_in_the_browser_and_the_api(
    lab, start_worker, browser, live_server  # noqa: F811
):
    from playwright.sync_api import expect

    start_worker()
    alice = get_user_model().objects.get(username="alice")
    alice.set_password(PASSWORD)
    alice.save()
    token = api_token_for(alice)
    shop = App.objects.get(name="shop-api")
    services.egress_enable(app=shop)
    wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "assigned", timeout=30, what="assigned")
    wait_for(lambda: Gateway.objects.filter(health="healthy").count() == 2, timeout=15, what="gateways healthy")
    active = EgressIP.objects.select_related("gateway").get(app=shop, role="active")
    standby = EgressIP.objects.select_related("gateway").get(app=shop, role="standby")
    down = active.gateway.name

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/apps/{shop.pk}/")
    status = page.get_by_test_id("egress-status")
    hint = page.get_by_test_id("egress-hint")

    def row(address: str):
        return page.locator(f"[data-testid=egress-ip][data-address='{address}']")

    # Before: the active address carries the traffic, the standby is ready.
    expect(status).to_have_attribute("data-view", "assigned")
    expect(row(active.address)).to_have_attribute("data-state", "in_use")
    expect(row(standby.address)).to_have_attribute("data-state", "standby")
    egress = _api_egress(live_server.url, token, shop)
    assert egress["status"] == "assigned" and egress["message"] == ""
    assert _states(egress) == {active.address: "in_use", standby.address: "standby"}
    assert lab.seen_ip("shop-api") == active.address
    _shot(page, "before")

    # The active gateway loses every link: degraded, why, and the standby address in use.
    lab.power_off(down)
    try:
        wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "degraded", timeout=20, what="degraded")
        wait_for(lambda: lab.seen_ip("shop-api") == standby.address, timeout=10, what="traffic on the standby")
        page.reload()  # a settled page does not poll: a person opening it now
        expect(status).to_have_attribute("data-view", "degraded")
        expect(status).to_contain_text("Degraded")
        expect(hint).to_contain_text(f"Traffic leaves from {standby.address}")
        message = page.get_by_test_id("egress-message")
        expect(message).to_contain_text(f"Gateway {down} is down")
        expect(message).to_contain_text(standby.address)
        expect(row(active.address)).to_have_attribute("data-state", "gateway_down")
        expect(row(standby.address)).to_have_attribute("data-state", "in_use")
        egress = _api_egress(live_server.url, token, shop)
        assert egress["status"] == "degraded", egress
        assert f"Gateway {down} is down" in egress["message"] and standby.address in egress["message"], egress
        assert _states(egress) == {active.address: "gateway_down", standby.address: "in_use"}, egress
        _shot(page, "degraded")
    finally:
        # Back as after a reboot: nothing of ours on it. The prober repairs it before traffic returns.
        lab.power_on(down, empty=True)

    # Back and repaired: the page follows by itself, no reload.
    expect(status).to_have_attribute("data-view", "assigned", timeout=60_000)
    expect(row(active.address)).to_have_attribute("data-state", "in_use")
    expect(row(standby.address)).to_have_attribute("data-state", "standby")
    expect(page.get_by_test_id("egress-message")).to_have_count(0)
    expect(page.get_by_test_id("timeline")).to_contain_text("healthy again")
    assert lab.seen_ip("shop-api") == active.address
    egress = _api_egress(live_server.url, token, shop)
    assert egress["status"] == "assigned" and egress["message"] == "", egress
    assert _states(egress) == {active.address: "in_use", standby.address: "standby"}, egress
    _shot(page, "back")
    context.close()
