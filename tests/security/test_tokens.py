"""API tokens (django-rest-knox): hashed at rest, expiring, several named ones per user, revocable; made, seen
once, named and revoked in the portal (CSRF, each user only their own); retired old-style tokens get a 401
that says what to do; a revoked token stops at once, a guessed one counts against the anonymous rate, and no
token ever reaches the logs, the events or the admin."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from egressportal.core.models import Event
from egressportal.tokens.models import ApiToken
from egressportal.tokens.services import api_token_create
from tests.api.conftest import assert_error
from tests.conftest import api_token_for

pytestmark = pytest.mark.django_db

TOKEN_SHAPE = re.compile(r"egp_[0-9a-f]{64}")


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _portal(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csrf(client: Client) -> str:
    client.get("/tokens/")
    return client.cookies["csrftoken"].value


def test_tokens_are_stored_hashed_never_in_clear(alice):
    token, secret = api_token_create(user=alice, name="terraform", days=30)
    assert TOKEN_SHAPE.fullmatch(secret)
    row = ApiToken.objects.get(pk=token.pk)
    assert row.digest == hashlib.sha512(secret.encode()).hexdigest()
    # Nowhere in the table: not the token, not anything but its first characters (knox's lookup key).
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 - a fixed table name
        dump = repr(cursor.fetchall())
    assert secret not in dump and secret[len("egp_") + 11:] not in dump
    assert _client(secret).get("/api/v1/apps/").status_code == 200


def test_tokens_expire(alice):
    token, secret = api_token_create(user=alice, name="short", days=1)
    assert token.expiry - timezone.now() < dt.timedelta(days=1, minutes=1)
    assert _client(secret).get("/api/v1/apps/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    assert_error(_client(secret).get("/api/v1/apps/"), 401, "authentication_failed")


def test_lifetime_and_name_are_checked(alice, settings):
    from django.core.exceptions import ValidationError

    for bad in (0, settings.EGRESS_API_TOKEN_MAX_DAYS + 1):
        with pytest.raises(ValidationError):
            api_token_create(user=alice, name="x", days=bad)
    with pytest.raises(ValidationError):
        api_token_create(user=alice, name="  ", days=30)
    api_token_create(user=alice, name="ci", days=30)
    with pytest.raises(ValidationError, match="already have a token named 'ci'"):
        api_token_create(user=alice, name="ci", days=30)
    settings.EGRESS_API_TOKENS_PER_USER = 2
    api_token_create(user=alice, name="two", days=30)
    with pytest.raises(ValidationError, match="the most allowed"):
        api_token_create(user=alice, name="three", days=30)


def test_several_named_tokens_each_revocable_alone(alice):
    (first, one), (second, two) = (api_token_create(user=alice, name=n, days=30) for n in ("ci", "laptop"))
    listed = _client(one).get("/api/v1/tokens/").json()
    assert [(t["name"], t["current"]) for t in listed["results"]] == [("laptop", False), ("ci", True)]
    assert set(listed["results"][0]) == {"id", "name", "created", "expiry", "last_used_at", "current"}
    assert _client(one).delete(f"/api/v1/tokens/{second.pk}/").status_code == 204
    assert_error(_client(two).get("/api/v1/apps/"), 401)
    assert _client(one).get("/api/v1/apps/").status_code == 200
    revoked = Event.objects.get(kind="token.revoked")
    assert revoked.actor == alice and "laptop" in revoked.message


def test_a_token_cannot_see_or_revoke_someone_elses(alice, bob):
    theirs, _ = api_token_create(user=bob, name="bobs", days=30)
    mine = api_token_for(alice)
    assert_error(_client(mine).get(f"/api/v1/tokens/{theirs.pk}/"), 404, "not_found")
    assert_error(_client(mine).delete(f"/api/v1/tokens/{theirs.pk}/"), 404, "not_found")
    assert ApiToken.objects.filter(pk=theirs.pk).exists()
    assert all(t["name"] != "bobs" for t in _client(mine).get("/api/v1/tokens/").json()["results"])


def test_a_token_cannot_make_tokens(alice):
    response = _client(api_token_for(alice)).post("/api/v1/tokens/", {"name": "more", "days": 365}, format="json")
    assert response.status_code == 405
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_portal_makes_a_token_shows_it_once_and_revokes_it(alice):
    client = _portal(alice)
    csrf = _csrf(client)
    response = client.post("/tokens/", {"name": "terraform", "days": "30", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    secret = TOKEN_SHAPE.search(page).group(0)
    assert "shown only this once" in page
    assert _client(secret).get("/api/v1/apps/").status_code == 200
    # Never again: the list shows its name, not the token.
    again = client.get("/tokens/").content.decode()
    assert "terraform" in again and secret not in again and not TOKEN_SHAPE.search(again)
    token = ApiToken.objects.get(user=alice, name="terraform")
    assert token.last_used_at is not None
    response = client.post(f"/tokens/{token.pk}/revoke/", {"csrfmiddlewaretoken": csrf})
    assert response.status_code == 302
    assert_error(_client(secret).get("/api/v1/apps/"), 401)
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_portal_token_forms_need_csrf_and_a_login(alice):
    client = _portal(alice)
    assert client.post("/tokens/", {"name": "x", "days": "30"}).status_code == 403
    token, _ = api_token_create(user=alice, name="keep", days=30)
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.filter(user=alice).count() == 1
    anonymous = Client()
    assert anonymous.get("/tokens/").status_code == 302
    assert anonymous.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_portal_is_tenant_scoped(alice, bob):
    theirs, _ = api_token_create(user=bob, name="bobs-token", days=30)
    client = _portal(alice)
    csrf = _csrf(client)
    assert "bobs-token" not in client.get("/tokens/").content.decode()
    assert client.post(f"/tokens/{theirs.pk}/revoke/", {"csrfmiddlewaretoken": csrf}).status_code == 404
    assert ApiToken.objects.filter(pk=theirs.pk).exists()


def test_portal_form_errors_are_clear_and_create_nothing(alice):
    client = _portal(alice)
    csrf = _csrf(client)
    api_token_create(user=alice, name="ci", days=30)
    response = client.post("/tokens/", {"name": "ci", "days": "30", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 400 and "already have a token named" in response.content.decode()
    response = client.post("/tokens/", {"name": "x", "days": "9999", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 400
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_a_platform_service_account_gets_its_token_the_same_way(django_user_model):
    from django.contrib.auth.models import Group

    robot = django_user_model.objects.create_user(username="deployer", password="pw-for-tests-only")
    robot.groups.add(Group.objects.get_or_create(name="platform")[0])
    client = _portal(robot)
    csrf = _csrf(client)
    page = client.post("/tokens/", {"name": "scheduler", "days": "365", "csrfmiddlewaretoken": csrf}).content.decode()
    secret = TOKEN_SHAPE.search(page).group(0)
    assert _client(secret).get("/api/v1/apps/").status_code == 200


def test_an_old_style_token_is_told_what_to_do():
    error = assert_error(_client("9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b").get("/api/v1/apps/"), 401)
    assert "old kind" in error["message"] and "/tokens/" in error["message"]
    # Anything else is just not valid.
    error = assert_error(_client("egp_" + "0" * 64).get("/api/v1/apps/"), 401, "authentication_failed")
    assert "old kind" not in error["message"]


def test_a_token_that_is_not_text_is_a_401_not_a_500():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token egp_\xff\xfe")  # bytes 0xff 0xfe: not UTF-8
    assert_error(client.get("/api/v1/apps/"), 401)


def test_no_token_table_but_ours():
    tables = connection.introspection.table_names()
    assert "authtoken_token" not in tables  # the retired tokens, stored in clear
    assert "knox_authtoken" not in tables  # knox's stock model, replaced by ours
    assert ApiToken._meta.db_table in tables


def test_staff_see_who_holds_tokens_but_never_a_token(alice, staff):
    token, secret = api_token_create(user=alice, name="terraform", days=30)
    client = Client()
    client.force_login(staff)
    for url in ("/admin/tokens/apitoken/", f"/admin/tokens/apitoken/{token.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 200
        body = response.content.decode()
        assert "terraform" in body and secret not in body and token.digest not in body
    assert client.get("/admin/tokens/apitoken/add/").status_code == 403
    # Staff may revoke (delete) a token; it is audited.
    response = client.post(f"/admin/tokens/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not ApiToken.objects.filter(pk=token.pk).exists()
    assert Event.objects.get(kind="token.revoked").actor == staff


def test_tokens_never_reach_the_logs_or_events(alice, caplog):
    with caplog.at_level(logging.DEBUG):
        _, secret = api_token_create(user=alice, name="logged", days=30)
        guessed = "egp_" + "1" * 64
        for key in (secret, guessed):
            client = _client(key)
            client.get("/api/v1/apps/")
            client.post("/api/v1/apps/", {"name": "x", "region": "nope"}, format="json")
    text = "\n".join(r.getMessage() + str(getattr(r, "__dict__", "")) for r in caplog.records)
    assert secret not in text and guessed not in text
    events = repr(list(Event.objects.values()))
    assert secret not in events


def test_guessed_tokens_are_throttled_as_anonymous(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min", "user": "1000/min"}}
    cache.clear()
    statuses = [_client(f"egp_{i:064d}").get("/api/v1/apps/").status_code for i in range(5)]
    assert 429 in statuses, statuses
