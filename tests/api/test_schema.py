"""The OpenAPI schema and the interactive docs (assets served locally, no CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import reverse
from rest_framework.test import APIClient


def test_schema_documents_the_api(db):
    assert reverse("api:schema") == "/api/v1/schema/"
    response = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in (
        "/api/v1/apps/",
        "/api/v1/apps/{id}/",
        "/api/v1/apps/{id}/egress/",
        "/api/v1/apps/{id}/events/",
        "/api/v1/regions/",
        "/api/v1/regions/{slug}/",
        "/api/v1/pools/",
        "/api/v1/pools/{id}/",
        "/api/v1/gateways/",
        "/api/v1/gateways/{id}/",
        "/api/v1/gateways/{id}/accept-host-key/",
        "/api/v1/nodes/",
        "/api/v1/nodes/{id}/",
    ):
        assert path in paths, path
    put = paths["/api/v1/apps/{id}/egress/"]["put"]["responses"]
    assert {"200", "202", "400", "401", "403", "404", "409"} <= set(put)
    assert put["409"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    delete = paths["/api/v1/apps/{id}/"]["delete"]["responses"]
    assert {"202", "204", "404"} <= set(delete)
    assert "put" not in paths["/api/v1/apps/{id}/"]
    assert {"409"} <= set(paths["/api/v1/pools/{id}/"]["delete"]["responses"])
    params = {p["name"] for p in paths["/api/v1/apps/"]["get"]["parameters"]}
    assert {"limit", "offset", "region", "status", "name", "search", "ordering"} <= params
    assert "fields" in schema["components"]["schemas"]["ErrorDetail"]["properties"]
    utilization = schema["components"]["schemas"]["Pool"]["properties"]["utilization"]
    assert utilization["readOnly"] is True
    gateway = schema["components"]["schemas"]["Gateway"]["properties"]
    assert gateway["slot"]["readOnly"] is True and gateway["health"]["readOnly"] is True
    assert "host_key" in schema["components"]["schemas"]["GatewayRequest"]["required"]
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_docs_are_served_without_a_cdn(db):
    client = APIClient()
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn" not in html.lower() and "jsdelivr" not in html and "unpkg" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [a for a in assets if a.startswith("/static/drf_spectacular_sidecar/")]
    assert local, assets
    assert {a.rsplit(".", 1)[-1] for a in local} >= {"css", "js"}, local
    for asset in local:
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        # The packaged file itself, byte for byte: not an empty answer, nor an HTML page served with a 200.
        source = finders.find(asset.removeprefix(settings.STATIC_URL))
        assert source, asset
        assert body == Path(source).read_bytes() and body, asset
        kind = {"css": "text/css", "js": "javascript", "png": "image/png"}[asset.rsplit(".", 1)[-1]]
        assert kind in response["Content-Type"], (asset, response["Content-Type"])
    # The page's own start-up script (served by the docs view, not from a CDN) points at our schema.
    script = client.get("/api/v1/docs/", {"script": ""})
    assert script.status_code == 200 and "javascript" in script["Content-Type"]
    assert "/api/v1/schema/" in script.content.decode()
