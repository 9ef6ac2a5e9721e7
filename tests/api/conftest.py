"""API test helpers, NetBox style: one object per caller holding a user, a token and the header."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.conftest import api_token_for


@dataclass
class ApiCaller:
    """A user with a token; ``get/post/put/patch/delete`` send ``Authorization: Token ...``."""

    user: Any
    token: str | None
    client: APIClient

    @property
    def header(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Token {self.token}"} if self.token else {}

    def get(self, url: str, data: Any = None, **kw: Any) -> Any:
        return self.client.get(url, data, **kw)

    def _send(self, method: str, url: str, data: Any, **kw: Any) -> Any:
        # json.dumps escapes what a JSON client may send but Python cannot encode (lone surrogates).
        body = "" if data is None else json.dumps(data)
        return self.client.generic(method, url, body, content_type="application/json", **kw)

    def post(self, url: str, data: Any = None, **kw: Any) -> Any:
        return self._send("POST", url, data, **kw)

    def put(self, url: str, data: Any = None, **kw: Any) -> Any:
        return self._send("PUT", url, data, **kw)

    def patch(self, url: str, data: Any = None, **kw: Any) -> Any:
        return self._send("PATCH", url, data, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.client.delete(url, **kw)


@pytest.fixture(autouse=True)
def _fresh_throttle_history():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_as(db):
    """``api_as(user)`` -> ApiCaller authenticated by token; ``api_as(None)`` -> anonymous."""

    def make(user: Any = None) -> ApiCaller:
        client = APIClient()
        key = None
        if user is not None:
            key = api_token_for(user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return ApiCaller(user=user, token=key, client=client)

    return make


@pytest.fixture
def anon(api_as) -> ApiCaller:
    return api_as(None)


@pytest.fixture
def alice_api(api_as, alice) -> ApiCaller:
    return api_as(alice)


@pytest.fixture
def bob_api(api_as, bob) -> ApiCaller:
    return api_as(bob)


@pytest.fixture
def staff_api(api_as, staff) -> ApiCaller:
    return api_as(staff)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", ["fields"]}}."""
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if "fields" in error:
        assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in error["fields"].values())
    if code is not None:
        assert error["code"] == code, error
    return error
