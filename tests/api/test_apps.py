"""Apps: CRUD, tenant scoping, filters, ordering, pagination, events and hostile input."""

from __future__ import annotations

import pytest

from egressportal.core import selectors, services
from egressportal.core.models import App, Event

from .conftest import assert_error


def test_create_and_get_app(alice_api, region):
    response = alice_api.post("/api/v1/apps/", {"name": "shop", "region": region.slug})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "shop"
    assert body["region"] == region.slug
    assert body["owner"] == "alice"
    assert body["placements"] == []
    assert body["egress"]["type"] == "shared" and body["egress"]["status"] == "disabled" and body["egress"]["ips"] == []
    assert set(body) == {"id", "name", "region", "placements", "owner", "egress", "created_at"}
    got = alice_api.get(f"/api/v1/apps/{body['id']}/")
    assert got.status_code == 200 and got.json() == body


def test_create_validation_errors_name_fields(alice_api, region, make_app, alice):
    make_app(alice, "taken")
    cases = [
        ({"name": "Bad Name!", "region": region.slug}, "name"),
        ({"name": "taken", "region": region.slug}, "name"),
        ({"name": "ok", "region": "nowhere"}, "region"),
        ({"region": region.slug}, "name"),
    ]
    for payload, field in cases:
        error = assert_error(alice_api.post("/api/v1/apps/", payload), 400, "invalid")
        assert field in error["fields"], (payload, error)


@pytest.mark.parametrize("field", ["source_cidrs", "placements", "source_addresses", "addresses", "cidrs"])
def test_no_app_endpoint_takes_source_addresses_from_anyone(
    api_as, alice, staff, platform_user, region, make_app, make_node, field
):
    """Whoever could name source addresses could make another app's traffic leave from their IP: the
    platform reports placements per node, and app writes refuse them, whoever sends them."""
    make_node("node-x", pod_cidrs=["198.18.64.0/24"])
    app = make_app(alice, "mine", cidrs=["198.18.64.16/28"])
    own = make_app(platform_user, "platforms-own", cidrs=[])
    claim = {field: ["198.18.64.32/28"]}
    for caller, target in ((api_as(alice), app), (api_as(staff), app), (api_as(platform_user), own)):
        error = assert_error(caller.post("/api/v1/apps/", {"name": "new", "region": region.slug, **claim}), 400)
        assert field in error["fields"] and "platform reports" in error["message"]
        error = assert_error(caller.patch(f"/api/v1/apps/{target.pk}/", claim), 400)
        assert "platform reports" in error["message"]
    # The platform creates apps for owners, but others' apps are not its to change.
    assert_error(api_as(platform_user).patch(f"/api/v1/apps/{app.pk}/", {"name": "taken-over"}), 404)
    assert not App.objects.filter(name="new").exists()
    assert selectors.app_placements(App.objects.get(pk=app.pk)) == [{"node": "node-x", "addresses": ["198.18.64.16/28"]}]


def test_the_platform_creates_apps_for_owners(api_as, platform_user, alice, region):
    scheduler = api_as(platform_user)
    response = scheduler.post("/api/v1/apps/", {"name": "deployed", "region": region.slug, "owner": "alice"})
    assert response.status_code == 201, response.content
    assert response.json()["owner"] == "alice" and App.objects.get(name="deployed").owner == alice


def test_owner_settable_by_staff_only(alice_api, staff_api, alice, bob, region):
    error = assert_error(alice_api.post("/api/v1/apps/", {"name": "x", "region": region.slug, "owner": "bob"}), 400)
    assert "owner" in error["fields"]
    assert not App.objects.filter(name="x").exists()
    # Naming oneself is harmless.
    assert alice_api.post("/api/v1/apps/", {"name": "x", "region": region.slug, "owner": "alice"}).status_code == 201
    response = staff_api.post("/api/v1/apps/", {"name": "for-bob", "region": region.slug, "owner": "bob"})
    assert response.status_code == 201 and response.json()["owner"] == "bob"
    assert App.objects.get(name="for-bob").owner == bob
    # Staff without owner: the app is theirs.
    assert staff_api.post("/api/v1/apps/", {"name": "mine", "region": region.slug}).json()["owner"] == "admin"
    assert_error(staff_api.post("/api/v1/apps/", {"name": "y", "region": region.slug, "owner": "nobody"}), 400)


def test_tenant_scoping(alice_api, bob_api, staff_api, alice, bob, make_app):
    mine, theirs = make_app(alice, "mine"), make_app(bob, "theirs")
    assert [a["name"] for a in alice_api.get("/api/v1/apps/").json()["results"]] == ["mine"]
    assert sorted(a["name"] for a in staff_api.get("/api/v1/apps/").json()["results"]) == ["mine", "theirs"]
    base = f"/api/v1/apps/{theirs.pk}/"
    assert_error(alice_api.get(base), 404, "not_found")
    assert_error(alice_api.patch(base, {"name": "stolen"}), 404, "not_found")
    assert_error(alice_api.delete(base), 404, "not_found")
    assert_error(alice_api.get(base + "egress/"), 404, "not_found")
    assert_error(alice_api.put(base + "egress/", {"type": "dedicated"}), 404, "not_found")
    assert_error(alice_api.get(base + "events/"), 404, "not_found")
    # A missing app looks exactly the same.
    missing = alice_api.get("/api/v1/apps/987654/")
    assert missing.json() == alice_api.get(base).json()
    # Nothing changed.
    theirs.refresh_from_db()
    assert theirs.name == "theirs" and theirs.egress_type == "shared"
    assert staff_api.get(base).status_code == 200
    assert bob_api.get(f"/api/v1/apps/{mine.pk}/").status_code == 404


def test_patch_app(alice_api, alice, make_app, region):
    app = make_app(alice, "before")
    response = alice_api.patch(f"/api/v1/apps/{app.pk}/", {"name": "after"})
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "after"
    # Region and owner are fixed; sending the same value is fine.
    assert alice_api.patch(f"/api/v1/apps/{app.pk}/", {"region": region.slug}).status_code == 200
    other = services.region_create(slug="other-1")
    assert "region" in assert_error(alice_api.patch(f"/api/v1/apps/{app.pk}/", {"region": other.slug}), 400)["fields"]
    assert_error(alice_api.put(f"/api/v1/apps/{app.pk}/", {"name": "x"}), 405)


def test_delete_app_without_egress_is_204(alice_api, alice, make_app):
    app = make_app(alice)
    assert alice_api.delete(f"/api/v1/apps/{app.pk}/").status_code == 204
    assert not App.objects.filter(pk=app.pk).exists()
    assert_error(alice_api.get(f"/api/v1/apps/{app.pk}/"), 404)


def test_delete_app_with_dedicated_egress_is_202(alice_api, alice, make_app, infra):
    app = make_app(alice)
    assert alice_api.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"}).status_code == 202
    response = alice_api.delete(f"/api/v1/apps/{app.pk}/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] == app.pk and body["egress"]["status"] == "releasing"
    app.refresh_from_db()
    assert app.delete_requested
    # While the deletion is pending, egress cannot be turned back on.
    assert_error(alice_api.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"}), 409, "conflict")


def test_filters_search_and_ordering(alice_api, alice, make_app, infra):
    other = services.region_create(slug="zz-region")
    for name in ("bravo", "alpha", "charlie"):
        make_app(alice, name)
    make_app(alice, "delta", reg=other)
    enabled = App.objects.get(name="charlie")
    services.egress_enable(app=enabled, actor=alice)

    def names(**params):
        response = alice_api.get("/api/v1/apps/", params)
        assert response.status_code == 200, response.content
        return [a["name"] for a in response.json()["results"]]

    assert names() == ["alpha", "bravo", "charlie", "delta"]
    assert names(region="zz-region") == ["delta"]
    assert names(status="assigning") == ["charlie"]
    assert names(status="disabled", region=infra["region"].slug) == ["alpha", "bravo"]
    assert names(name="bravo") == ["bravo"]
    assert names(search="ar") == ["charlie"]
    assert names(ordering="-name") == ["delta", "charlie", "bravo", "alpha"]
    assert names(ordering="region,-name") == ["charlie", "bravo", "alpha", "delta"]
    assert names(ordering="-created_at")[0] == "delta"
    error = assert_error(alice_api.get("/api/v1/apps/", {"ordering": "owner__password"}), 400)
    assert "ordering" in error["fields"] and "name" in error["message"]
    assert "status" in assert_error(alice_api.get("/api/v1/apps/", {"status": "bogus"}), 400)["fields"]


def test_pagination(alice_api, alice, make_app):
    for i in range(7):
        make_app(alice, f"app-{i:02d}")
    page = alice_api.get("/api/v1/apps/", {"limit": 3, "offset": 3}).json()
    assert page["count"] == 7
    assert [a["name"] for a in page["results"]] == ["app-03", "app-04", "app-05"]
    assert "offset=6" in page["next"] and page["previous"]
    assert alice_api.get("/api/v1/apps/", {"limit": 3, "offset": 99999999999999999999999}).json()["results"] == []
    assert len(alice_api.get("/api/v1/apps/", {"limit": 10**30}).json()["results"]) == 7
    assert alice_api.get("/api/v1/apps/", {"limit": "lots", "offset": "-4"}).status_code == 200


def test_events_timeline(alice_api, bob_api, alice, bob, make_app, infra):
    app = make_app(alice)
    other = make_app(bob)
    alice_api.patch(f"/api/v1/apps/{app.pk}/", {"name": "renamed"})
    alice_api.put(f"/api/v1/apps/{app.pk}/egress/", {"type": "dedicated"})
    response = alice_api.get(f"/api/v1/apps/{app.pk}/events/")
    assert response.status_code == 200
    body = response.json()
    kinds = [e["kind"] for e in body["results"]]
    # The platform's report of where it runs is on the app's timeline too.
    assert kinds == ["egress.enable_requested", "app.updated", "app.placement_changed", "app.created"]
    assert body["count"] == 4
    first = body["results"][0]
    assert set(first) == {"id", "created_at", "kind", "level", "message", "actor", "gateway", "node", "data"}
    assert first["actor"] == "alice"
    # Only this app's events: never another tenant's.
    assert Event.objects.filter(app=other).exists()
    assert all(e["id"] not in set(Event.objects.filter(app=other).values_list("id", flat=True)) for e in body["results"])
    assert bob_api.get(f"/api/v1/apps/{other.pk}/events/").json()["count"] == 2
    page = alice_api.get(f"/api/v1/apps/{app.pk}/events/", {"limit": 1, "offset": 1}).json()
    assert [e["kind"] for e in page["results"]] == ["app.updated"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/apps/99999999999999999999/",
        "/api/v1/apps/99999999999999999999/egress/",
        "/api/v1/apps/99999999999999999999/events/",
        "/api/v1/apps/-1/",
        "/api/v1/apps/abc/",
        "/api/v1/apps/%00/",
        "/api/v1/apps/1e9/",
        "/api/v1/nothing-here/",
    ],
)
def test_odd_ids_and_paths_are_404(alice_api, path):
    assert_error(alice_api.get(path), 404, "not_found")


def test_huge_id_on_writes_is_404(alice_api, staff_api):
    huge = "99999999999999999999"
    assert_error(alice_api.patch(f"/api/v1/apps/{huge}/", {"name": "x"}), 404)
    assert_error(alice_api.delete(f"/api/v1/apps/{huge}/"), 404)
    assert_error(alice_api.put(f"/api/v1/apps/{huge}/egress/", {"type": "shared"}), 404)
    for kind in ("pools", "gateways", "nodes"):
        assert_error(staff_api.get(f"/api/v1/{kind}/{huge}/"), 404)
        assert_error(staff_api.delete(f"/api/v1/{kind}/{huge}/"), 404)
    assert_error(staff_api.get("/api/v1/regions/%00/"), 404)


HOSTILE_VALUES = [
    None,
    True,
    10**40,
    -(10**40),
    1.5e308,
    "",
    " ",
    "x" * 10000,
    "\x00",
    "a\x00b",
    "\ud800",
    "名前",
    "🙂",
    "'; DROP TABLE core_app; --",
    "\" OR 1=1 --",
    "$(reboot)",
    "`id`",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    [],
    [None],
    [10**40],
    ["\x00"],
    {},
    {"a": "b"},
]


@pytest.mark.parametrize("field", ["name", "region", "placements", "owner"])
def test_hostile_values_never_500(alice_api, staff_api, alice, region, make_app, field):
    app = make_app(alice, "target")
    for value in HOSTILE_VALUES:
        for caller in (alice_api, staff_api):
            payload = {"name": "fine", "region": region.slug, field: value}
            response = caller.post("/api/v1/apps/", payload)
            assert response.status_code in (201, 400), (field, value, response.status_code, response.content[:300])
            if response.status_code == 201:
                App.objects.filter(pk=response.json()["id"]).delete()
            else:
                assert_error(response, 400)
        response = alice_api.patch(f"/api/v1/apps/{app.pk}/", {field: value})
        assert response.status_code in (200, 400), (field, value, response.status_code, response.content[:300])
        response = alice_api.put(f"/api/v1/apps/{app.pk}/egress/", {"type": value})
        assert_error(response, 400)


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"NaN", "application/json"),
        (b'{"name": NaN}', "application/json"),
        (b"[" * 100000 + b"]" * 100000, "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"name=x&region=y", "text/plain"),
    ],
)
def test_garbage_bodies_are_4xx_json(alice_api, alice, make_app, body, content_type):
    app = make_app(alice)
    for method, url in (
        ("post", "/api/v1/apps/"),
        ("patch", f"/api/v1/apps/{app.pk}/"),
        ("put", f"/api/v1/apps/{app.pk}/egress/"),
    ):
        response = alice_api.client.generic(method.upper(), url, body, content_type=content_type)
        if method == "patch" and body == b"":
            assert response.status_code == 200  # an empty PATCH changes nothing
            continue
        assert 400 <= response.status_code < 500, (method, body[:40], response.status_code, response.content[:300])
        assert "error" in response.json()


@pytest.mark.parametrize("param", ["search", "name", "region", "status", "ordering", "limit", "offset"])
def test_hostile_query_params_never_500(alice_api, alice, make_app, param):
    make_app(alice)
    for value in ["\x00", "x" * 5000, "' OR 1=1 --", "名前", "-", ",", "99999999999999999999999", "%", "_"]:
        response = alice_api.get("/api/v1/apps/", {param: value})
        assert response.status_code in (200, 400), (param, value, response.status_code, response.content[:300])


def test_unknown_paths_answer_json_404_for_every_method(alice_api):
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = alice_api.client.generic(method, "/api/v1/regions/has.dot/", "{}", content_type="application/json")
        assert_error(response, 404, "not_found")


def test_options_does_not_reveal_other_tenants_apps(alice_api, bob, make_app):
    theirs = make_app(bob)
    for app_id in (theirs.pk, 424242):
        response = alice_api.client.options(f"/api/v1/apps/{app_id}/egress/")
        assert response.status_code == 200 and "actions" not in response.json()
