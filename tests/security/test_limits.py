"""Every list and body a user sends is bounded, and going over says so clearly (4xx, nothing changed)."""

from __future__ import annotations

import json

import pytest

from egressportal.core import limits
from egressportal.core.models import App, IPPool, Node
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(alice_api, region, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"name": "big", "region": region.slug, "padding": "x" * 5000})
    response = alice_api.client.generic("POST", "/api/v1/apps/", body, content_type="application/json")
    error = assert_error(response, 413, "too_large")
    assert "4096 bytes" in error["message"]
    assert not App.objects.filter(name="big").exists()


def test_the_default_body_limit_is_small(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 256 * 1024


def test_long_lists_are_refused_with_the_cap_named(staff_api, infra, region):
    too_many = [f"203.0.113.{i % 250}" for i in range(limits.MAX_EXCLUDED_ADDRESSES + 1)]
    error = assert_error(
        staff_api.post("/api/v1/pools/", {"name": "p9", "region": region.slug, "cidr": "203.0.113.128/25",
                                          "excluded": too_many}), 400, "invalid")
    assert f"At most {limits.MAX_EXCLUDED_ADDRESSES}" in error["fields"]["excluded"][0]
    assert not IPPool.objects.filter(name="p9").exists()
    pods = [f"198.18.{i}.0/24" for i in range(limits.MAX_POD_CIDRS + 1)]
    node = infra["nodes"][0]
    error = assert_error(staff_api.patch(f"/api/v1/nodes/{node.pk}/", {"pod_cidrs": pods}), 400, "invalid")
    assert "pod_cidrs" in error["fields"]
    assert Node.objects.get(pk=node.pk).pod_cidrs != pods


def test_long_text_fields_and_query_values_are_refused(staff_api, alice_api, region):
    error = assert_error(staff_api.patch(f"/api/v1/regions/{region.slug}/", {"description": "d" * 5000}), 400)
    assert "description" in error["fields"]
    error = assert_error(alice_api.get("/api/v1/apps/", {"search": "s" * 1000}), 400, "invalid")
    assert "256 characters" in error["message"]
