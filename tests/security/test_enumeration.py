"""A tenant learns no other user's name, nor whether one exists: JSON only (no browsable API rendering a
select of users), the owner field answers the same for existing and unknown users, and the timeline names
other people as "platform staff". Request bodies are JSON only, in the parser and in the schema."""

from __future__ import annotations

import pytest
from django.test import Client

from egressportal.core import services

pytestmark = pytest.mark.django_db


def test_api_answers_json_only_even_to_a_browser(alice_api, bob, make_app):
    make_app(bob, "bobs-app")
    for accept in ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"):
        response = alice_api.get("/api/v1/apps/", HTTP_ACCEPT=accept)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/json")
    # The browsable API is not there to ask for.
    response = alice_api.get("/api/v1/apps/?format=api")
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    assert "bob" not in response.content.decode()
    response = alice_api.get("/api/v1/apps/", HTTP_ACCEPT="text/html")
    assert response.status_code == 406 and b"<html" not in response.content.lower()


def test_owner_field_never_tells_existing_users_from_unknown_ones(alice_api, bob, region):
    existing = alice_api.post("/api/v1/apps/", {"name": "a1", "region": region.slug, "owner": bob.username})
    unknown = alice_api.post("/api/v1/apps/", {"name": "a1", "region": region.slug, "owner": "no-such-user-xyz"})
    assert existing.status_code == unknown.status_code == 400
    assert existing.json() == unknown.json()
    assert "bob" not in existing.content.decode()
    # Naming yourself is fine.
    assert alice_api.post("/api/v1/apps/", {"name": "a1", "region": region.slug, "owner": "alice"}).status_code == 201


def test_options_and_schema_list_no_users(alice_api, bob, region):
    body = alice_api.client.options("/api/v1/apps/").content.decode()
    assert "bob" not in body
    schema = alice_api.get("/api/v1/schema/?format=json").content.decode()
    assert "bob" not in schema


def test_staff_may_set_owners_and_hear_about_unknown_ones(staff_api, bob, region):
    from tests.api.conftest import assert_error

    assert staff_api.post("/api/v1/apps/", {"name": "s1", "region": region.slug, "owner": "bob"}).status_code == 201
    error = assert_error(staff_api.post("/api/v1/apps/", {"name": "s2", "region": region.slug, "owner": "ghost"}), 400)
    assert "ghost" in error["message"]


def test_timeline_names_other_people_platform_staff(alice, staff, alice_api, make_app, infra):
    app = make_app(alice)
    services.egress_enable(app=app, actor=staff)  # a staff member acts on alice's app
    alice_api.patch(f"/api/v1/apps/{app.pk}/", {"name": "renamed"})
    actors = {e["kind"]: e["actor"] for e in alice_api.get(f"/api/v1/apps/{app.pk}/events/").json()["results"]}
    assert actors["egress.enable_requested"] == "platform staff"
    assert actors["app.updated"] == "alice"
    client = Client()
    client.force_login(alice)
    page = client.get(f"/apps/{app.pk}/events/").content.decode()
    assert "platform staff" in page and staff.username not in page.replace("admin-link", "")
    # Staff see the name.
    staff_client = Client()
    staff_client.force_login(staff)
    assert f"· {staff.username}<" in staff_client.get(f"/apps/{app.pk}/events/").content.decode()


def test_a_deleted_users_name_is_not_shown_to_tenants(alice, make_user, alice_api, make_app, infra):
    former = make_user("former-staff", staff=True)
    app = make_app(alice)
    services.egress_enable(app=app, actor=former)
    former.delete()
    actors = [e["actor"] for e in alice_api.get(f"/api/v1/apps/{app.pk}/events/").json()["results"]]
    assert "former-staff" not in actors and "platform staff" in actors


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/x-www-form-urlencoded", "type=dedicated"),
        (
            "multipart/form-data; boundary=xx",
            '--xx\r\nContent-Disposition: form-data; name="type"\r\n\r\ndedicated\r\n--xx--\r\n',
        ),
        ("text/plain", '{"type": "dedicated"}'),
    ],
)
def test_request_bodies_are_json_only(alice_api, alice, make_app, infra, content_type, body):
    from tests.api.conftest import assert_error

    app = make_app(alice)
    response = alice_api.client.generic("PUT", f"/api/v1/apps/{app.pk}/egress/", body, content_type=content_type)
    error = assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    app.refresh_from_db()
    assert app.egress_type == "shared"


def test_schema_advertises_json_request_bodies_only(anon):
    schema = anon.get("/api/v1/schema/?format=json").json()
    types = {
        content_type
        for path in schema["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "requestBody" in operation
        for content_type in operation["requestBody"]["content"]
    }
    assert types == {"application/json"}
