"""The whole product end to end against the lab with a real worker:
through the REST API alone, and through a real browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from egressportal.core.models import App
from tests.conftest import api_token_for
from tests.integration.worker_fixtures import wait_for
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401 - the fixture
from workers.lab_register import lab_place

pytestmark = [pytest.mark.lab, pytest.mark.worker]

NODE1_IP = "203.0.113.21"


def test_life_of_an_app_through_the_api_alone(lab, worker):
    alice = get_user_model().objects.get(username="alice")
    token = api_token_for(alice)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    created = api.post("/api/v1/apps/", {"name": "api-e2e", "region": "lab"}, format="json")
    assert created.status_code == 201, created.content
    app_id = created.json()["id"]
    # The platform deploys it on node1 and reports where it runs.
    instance = lab_place(lab, name="api-e2e", node="node1")
    assert api.get(f"/api/v1/apps/{app_id}/").json()["placements"] == [
        {"node": "node1", "addresses": [instance.cidr, instance.cidr6]}  # the lab is dual-stack
    ]
    assert lab.seen_ip("api-e2e") == NODE1_IP

    put = api.put(f"/api/v1/apps/{app_id}/egress/", {"type": "dedicated"}, format="json")
    assert put.status_code == 202, put.content
    addresses = {ip["address"] for ip in put.json()["ips"]}
    assert len(addresses) == 2

    def egress() -> dict:
        return api.get(f"/api/v1/apps/{app_id}/egress/").json()

    wait_for(lambda: egress()["status"] == "assigned", timeout=30, interval=0.05, what="assigned via the API")
    body = egress()
    active = next(ip["address"] for ip in body["ips"] if ip["role"] == "active")
    assert {ip["status"] for ip in body["ips"]} == {"live"}
    assert lab.seen_ip("api-e2e") == active and active in addresses
    # Idempotent: asking again changes nothing.
    assert api.put(f"/api/v1/apps/{app_id}/egress/", {"type": "dedicated"}, format="json").status_code == 200
    events = api.get(f"/api/v1/apps/{app_id}/events/").json()
    assert "egress.assigned" in {e["kind"] for e in events["results"]}

    assert api.put(f"/api/v1/apps/{app_id}/egress/", {"type": "shared"}, format="json").status_code == 202
    wait_for(lambda: egress()["status"] == "disabled", timeout=30, interval=0.05, what="disabled via the API")
    assert lab.seen_ip("api-e2e") == NODE1_IP
    assert api.delete(f"/api/v1/apps/{app_id}/").status_code == 204


def test_browser_enables_a_lab_app_and_sees_it_live(lab, worker, browser, live_server, settings):  # noqa: F811
    from playwright.sync_api import expect

    settings.EGRESS_LAB_PREFIX = lab.config.prefix
    alice = get_user_model().objects.get(username="alice")
    alice.set_password("browser-test-pass")
    alice.save()
    shop = App.objects.get(name="shop-api")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "browser-test-pass")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/apps/{shop.pk}/")
    page.evaluate("window.__noReload = 'still here'")

    page.click("[data-testid=check-egress]")
    expect(page.locator("[data-testid=check-egress-result]")).to_contain_text(NODE1_IP)

    started = time.monotonic()
    page.click("[data-testid=egress-toggle][data-action=enable]")
    expect(page.locator("[data-testid=egress-status]")).to_have_attribute("data-status", "assigned", timeout=30000)
    print(f"browser: enable to 'assigned' on screen in {time.monotonic() - started:.2f}s")
    assert page.evaluate("window.__noReload") == "still here"  # live update, no reload
    ips = page.locator("[data-testid=egress-ip]")
    expect(ips).to_have_count(2)
    shown = {ips.nth(i).get_attribute("data-address") for i in range(2)}
    shop.refresh_from_db()
    active = shop.egress_ips.get(role="active").address
    assert active in shown

    page.click("[data-testid=check-egress]")
    expect(page.locator("[data-testid=check-egress-result]")).to_have_attribute("data-seen", active)
    Path(ARTIFACTS).mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / "lab-app-assigned.png"), full_page=True)
