"""The API tokens page in a real headless Chromium: reach it from the menu, make a token, copy it with the
button, use it against the live API, see it never again, revoke it; the page fits a phone's width."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from tests.portal.test_browser import ARTIFACTS, _login, browser  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _api_status(base_url: str, token: str) -> int:
    request = urllib.request.Request(f"{base_url}/api/v1/apps/", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("width", [1280, 390])
def test_make_copy_use_and_revoke_a_token_in_the_browser(browser, live_server, alice, width):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    _login(page, live_server.url, "alice")
    page.get_by_test_id("tokens-link").click()
    page.wait_for_url(f"{live_server.url}/tokens/")
    page.get_by_label("Name").fill("terraform")
    page.get_by_label("Expires after").select_option("30")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("new-token-value").inner_text().strip()
    assert re.fullmatch(r"egp_[0-9a-f]{64}", secret)
    page.get_by_role("button", name=re.compile("Copy")).first.click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the tokens page scrolls sideways by {overflow}px at {width}px"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"portal-tokens-{width}.png"), full_page=True)
    assert _api_status(live_server.url, secret) == 200

    page.goto(f"{live_server.url}/tokens/")
    assert secret not in page.content()
    row = page.get_by_test_id("token-row").filter(has_text="terraform")
    assert row.count() == 1
    row.get_by_test_id("revoke-token").click()
    page.wait_for_url(f"{live_server.url}/tokens/")
    assert "revoked" in page.get_by_role("status").first.inner_text()
    assert page.get_by_test_id("token-row").count() == 0
    assert _api_status(live_server.url, secret) == 401
    context.close()
