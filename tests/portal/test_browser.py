"""A real headless Chromium against the live server: log in, open an app,
enable dedicated egress and watch the status go live without a page reload.

No worker runs here: the test plays the worker's part by settling the app in
the database (the lead's lab test does it for real, on the same page hooks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from egressportal.core.models import App, EgressIP, HostSync
from egressportal.core.services.hostsync import app_settle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "pw-for-tests-only"  # the conftest make_user default


@pytest.fixture
def browser(monkeypatch):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{CHROMIUM} is missing on CI; install it with 'apt-get install -y chromium'.")
        pytest.skip(f"{CHROMIUM} is missing (install it with 'apt-get install -y chromium')")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # below are ordinary blocking calls from the test, not from async code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _settle_like_the_worker(app: App) -> None:
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)


def test_enable_and_watch_it_go_live_without_reload(browser, live_server, alice, infra, make_app):
    from playwright.sync_api import expect

    app = make_app(alice, "shop-api")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    panel_requests: list[str] = []
    page.on("request", lambda req: panel_requests.append(req.url) if "/egress/panel/" in req.url else None)

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="My apps")).to_be_visible()
    page.get_by_role("link", name="shop-api").click()
    expect(page.get_by_test_id("app-name")).to_have_text("shop-api")

    status = page.get_by_test_id("egress-status")
    expect(status).to_have_attribute("data-status", "disabled")
    page.evaluate("window.__noReloadMarker = 'still-here'")

    toggle = page.get_by_test_id("egress-toggle")
    expect(toggle).to_have_text("Enable dedicated egress")
    toggle.click()

    expect(status).to_have_attribute("data-status", "assigning")
    expect(status).to_contain_text("Assigning")
    ips = page.get_by_test_id("egress-ip")
    expect(ips).to_have_count(2)
    expect(status).to_be_focused()  # the clicked button is gone; focus stays in the panel
    expect(ips.first).to_contain_text("203.0.113.")
    expect(ips.first).to_contain_text("Being configured")
    assert page.evaluate("window.__noReloadMarker") == "still-here"

    # The worker's part: hosts configured, app settled.
    _settle_like_the_worker(App.objects.get(pk=app.pk))

    expect(status).to_have_attribute("data-status", "assigned", timeout=15_000)
    expect(status).to_contain_text("Assigned")
    expect(ips).to_have_count(2)
    # The tags say where traffic goes: the active address carries it, the standby is ready.
    expect(ips.nth(0)).to_contain_text("Carrying traffic")
    expect(ips.nth(1)).to_contain_text("Ready for failover")
    expect(page.get_by_test_id("egress-toggle")).to_have_text("Disable dedicated egress…")
    # The timeline below the panel was refreshed along with it.
    expect(page.get_by_test_id("timeline")).to_contain_text("Dedicated egress is live")
    assert page.evaluate("window.__noReloadMarker") == "still-here", "the page was reloaded"

    # Settled: nothing asks for the panel any more.
    expect(page.locator("[data-polling]")).to_have_count(0)
    polls = len(panel_requests)
    assert polls >= 1
    page.wait_for_timeout(2_000)
    assert len(panel_requests) == polls, "still polling after the status settled"

    # Copy buttons appear with JavaScript and say what they did.
    copy = ips.first.locator("button.copy")
    expect(copy).to_be_visible()
    copy.click()
    expect(copy).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == ips.first.get_attribute("data-address")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal-assigned.png"), full_page=True)
    assert not problems, problems
    context.close()


def _login(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")


@pytest.mark.parametrize(("label", "width"), [("desktop", 1280), ("390", 390), ("360", 360)])
def test_pages_fit_every_width(browser, live_server, alice, infra, make_app, label, width):
    """Dashboard and app page at desktop and phone widths: nothing wider than
    the screen, and screenshots to look at (test-artifacts/portal-*.png)."""
    from egressportal.core import services

    names = ["billing-worker", "checkout", "image-resizer", "shop-api", "search-indexer-with-a-long-name"]
    apps = {name: make_app(alice, name) for name in names}
    services.egress_enable(app=apps["shop-api"], actor=alice)
    _settle_like_the_worker(apps["shop-api"])
    services.egress_enable(app=apps["checkout"], actor=alice)
    for i in range(3):
        services.event_record(kind="note", message=f"Deployed version 1.{i}.", actor="platform", app=apps["shop-api"])

    context = browser.new_context(viewport={"width": width, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    _login(page, live_server.url, "alice")
    ARTIFACTS.mkdir(exist_ok=True)
    for name, url in [
        ("dashboard", f"{live_server.url}/"),
        ("app", f"{live_server.url}/apps/{apps['shop-api'].pk}/"),
        ("app-pending", f"{live_server.url}/apps/{apps['checkout'].pk}/"),
    ]:
        page.goto(url)
        page.wait_for_load_state("networkidle") if name != "app-pending" else page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
        page.screenshot(path=str(ARTIFACTS / f"portal-{name}-{label}.png"), full_page=True)
    context.close()
