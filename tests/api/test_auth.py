"""Authentication, authorization boundaries, CSRF and throttling."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from .conftest import assert_error

USER_ENDPOINTS = ["/api/v1/apps/"]
STAFF_ENDPOINTS = ["/api/v1/regions/", "/api/v1/pools/", "/api/v1/gateways/", "/api/v1/nodes/"]


@pytest.mark.parametrize("url", USER_ENDPOINTS + STAFF_ENDPOINTS)
def test_anonymous_gets_401_everywhere(anon, url):
    error = assert_error(anon.get(url), 401, "not_authenticated")
    assert "Token" in error["message"]
    assert_error(anon.post(url, {}), 401, "not_authenticated")


def test_anonymous_gets_401_on_app_details(anon, alice, make_app):
    app = make_app(alice)
    for url in (f"/api/v1/apps/{app.pk}/", f"/api/v1/apps/{app.pk}/egress/", f"/api/v1/apps/{app.pk}/events/"):
        assert_error(anon.get(url), 401)
    assert_error(anon.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"}), 401)
    assert_error(anon.delete(f"/api/v1/apps/{app.pk}/"), 401)


def test_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(client.get("/api/v1/apps/"), 401, "authentication_failed")


@pytest.mark.parametrize("url", STAFF_ENDPOINTS)
def test_non_staff_gets_403_on_admin_resources(alice_api, url):
    assert_error(alice_api.get(url), 403, "permission_denied")
    assert_error(alice_api.post(url, {"name": "x"}), 403, "permission_denied")


@pytest.mark.parametrize("url", STAFF_ENDPOINTS)
def test_non_staff_gets_403_on_admin_details(alice_api, infra, url):
    obj = {
        "/api/v1/regions/": infra["region"].slug,
        "/api/v1/pools/": infra["pool"].pk,
        "/api/v1/gateways/": infra["gateways"][0].pk,
        "/api/v1/nodes/": infra["nodes"][0].pk,
    }[url]
    assert_error(alice_api.get(f"{url}{obj}/"), 403)
    assert_error(alice_api.patch(f"{url}{obj}/", {"description": "x"}), 403)
    assert_error(alice_api.delete(f"{url}{obj}/"), 403)


def test_non_staff_cannot_accept_host_keys(alice_api, infra):
    gw = infra["gateways"][0]
    assert_error(alice_api.post(f"/api/v1/gateways/{gw.pk}/accept-host-key/"), 403)


@pytest.mark.parametrize("url", STAFF_ENDPOINTS)
def test_staff_can_list_admin_resources(staff_api, infra, url):
    response = staff_api.get(url)
    assert response.status_code == 200
    assert response.json()["count"] >= 1


def test_session_auth_enforces_csrf_on_unsafe_methods(alice, region, make_app):
    app = make_app(alice)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    # Safe methods work with the session alone.
    assert client.get("/api/v1/apps/").status_code == 200
    # Unsafe ones need the CSRF token.
    assert_error(client.post("/api/v1/apps/", {"name": "x", "region": region.slug}, format="json"), 403)
    assert_error(client.patch(f"/api/v1/apps/{app.pk}/", {"name": "y"}, format="json"), 403)
    assert_error(client.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"}, format="json"), 403)
    error = assert_error(client.delete(f"/api/v1/apps/{app.pk}/"), 403)
    assert "CSRF" in error["message"]


def test_session_auth_with_csrf_token_works(alice, region):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/accounts/login/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post("/api/v1/apps/", {"name": "via-session", "region": region.slug}, format="json",
                           HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201, response.content


def test_low_rate_gives_429(alice_api):
    rest = {**settings.REST_FRAMEWORK}
    rest["DEFAULT_THROTTLE_RATES"] = {"anon": "2/min", "user": "3/min"}
    with override_settings(REST_FRAMEWORK=rest):
        codes = [alice_api.get("/api/v1/apps/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        response = alice_api.get("/api/v1/apps/")
        error = assert_error(response, 429, "throttled")
        assert "Try again" in error["message"]
        assert int(response["Retry-After"]) > 0
        anon = APIClient()
        anon_codes = [anon.get("/api/v1/apps/").status_code for _ in range(3)]
        assert anon_codes == [401, 401, 429]
        # A guessed token counts as anonymous: it is throttled too.
        anon.credentials(HTTP_AUTHORIZATION="Token guessed")
        assert_error(anon.get("/api/v1/apps/"), 429)
