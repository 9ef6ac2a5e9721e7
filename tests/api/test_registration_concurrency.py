"""Registering a fleet the way Terraform does (many hosts at once, through the API) never fails
spuriously: every gateway gets its own slot in the region, every request succeeds. PostgreSQL, real
concurrent connections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from rest_framework.test import APIClient

from egressportal.core.models import Gateway, Node
from tests.conftest import TEST_HOST_KEY, api_token_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GATEWAYS = 20
NODES = 40
THREADS = 20


def _body(kind: str, n: int, region) -> dict:
    body = {
        "name": f"{kind}-{n:02d}",
        "region": region.slug,
        "mgmt_address": f"198.18.{240 if kind == 'gw' else 242}.{n + 1}",
        "host_key": TEST_HOST_KEY,
        "transit_address": f"198.18.{241 if kind == 'gw' else 243}.{n + 1}",
    }
    if kind == "gw":
        body["public_interface"] = "eth1"
    else:
        body["pod_cidrs"] = [f"198.19.{n}.0/24"]
    return body


def test_twenty_gateways_and_forty_nodes_registered_at_once_all_succeed(staff, region):
    token = api_token_for(staff)
    requests = [("gateways", _body("gw", i, region)) for i in range(GATEWAYS)]
    requests += [("nodes", _body("node", i, region)) for i in range(NODES)]
    requests.sort(key=lambda r: r[1]["name"][-2:])  # gateways and nodes interleaved

    def register(request: tuple[str, dict]) -> tuple[int, bytes]:
        kind, body = request
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
            response = client.post(f"/api/v1/{kind}/", body, format="json")
            return response.status_code, response.content[:300]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(register, requests))
    failures = [(r[1]["name"], o) for r, o in zip(requests, outcomes, strict=True) if o[0] != 201]
    assert not failures, failures
    slots = list(Gateway.objects.filter(region=region).values_list("slot", flat=True))
    assert sorted(slots) == list(range(1, GATEWAYS + 1))
    assert Node.objects.filter(region=region).count() == NODES
