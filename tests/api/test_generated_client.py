"""A client generated from the live schema works: openapi-python-client (pinned in requirements.txt) builds a
Python client from /api/v1/schema/ of a running server, and a short scenario runs through it (create an app,
enable dedicated egress, poll, list, read the timeline, disable, list and revoke tokens, an error). Every
answer must parse into the generated models.

This is what automation does with the API. It broke once: with form and multipart bodies advertised next to
JSON, the generated client failed at import (``NameError: Unset`` in the union of three body types).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from egressportal.core.models import App
from egressportal.tokens.models import ApiToken
from tests.conftest import api_token_for
from tests.helpers import place

PACKAGE = "egress_api_client"


@pytest.fixture
def generated_client(live_server, tmp_path):
    """The client package, generated from the live server's schema; removed from sys.modules afterwards."""
    with urllib.request.urlopen(f"{live_server.url}/api/v1/schema/?format=json", timeout=30) as response:
        schema = json.load(response)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "schema.json",
         "--output-path", PACKAGE, "--meta", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "Skipping" not in output, output  # every operation and model generated
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _op(package: str, tag: str, operation: str):
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")


def test_generated_client_runs_a_scenario(generated_client, live_server, alice, infra):
    models = importlib.import_module(f"{PACKAGE}.models")
    secret = api_token_for(alice, "automation")
    spare = api_token_for(alice, "spare")
    client = generated_client.AuthenticatedClient(base_url=live_server.url, token=secret, prefix="Token",
                                                  raise_on_unexpected_status=True)
    region = infra["region"].slug

    created = _op(PACKAGE, "apps", "apps_create").sync_detailed(
        client=client, body=models.AppRequest(name="generated", region=region)
    )
    assert created.status_code == 201 and isinstance(created.parsed, models.App)
    app_id = created.parsed.id
    assert created.parsed.owner == "alice"
    # Where it runs is the platform's to say, not the client's.
    place(App.objects.get(pk=app_id), ["198.18.129.0/28"])  # the platform reports it on node-a
    got = _op(PACKAGE, "apps", "apps_retrieve").sync(app_id, client=client)
    assert [(p.node, p.addresses) for p in got.placements] == [("node-a", ["198.18.129.0/28"])]

    enabled = _op(PACKAGE, "apps", "apps_egress_update").sync_detailed(
        app_id, client=client, body=models.EgressRequestRequest(type_=models.TypeEnum.DEDICATED)
    )
    assert enabled.status_code == 202 and isinstance(enabled.parsed, models.Egress)
    assert enabled.parsed.status == models.EgressStatusEnum.ASSIGNING and len(enabled.parsed.ips) == 2

    polled = _op(PACKAGE, "apps", "apps_egress_retrieve").sync(app_id, client=client)
    assert isinstance(polled, models.Egress) and polled.type_ == models.TypeEnum.DEDICATED
    assert {ip.role for ip in polled.ips} == {models.RoleEnum.ACTIVE, models.RoleEnum.STANDBY}

    listed = _op(PACKAGE, "apps", "apps_list").sync(client=client, limit=10)
    assert isinstance(listed, models.PaginatedAppList) and [a.id for a in listed.results] == [app_id]

    events = _op(PACKAGE, "apps", "apps_events_list").sync(app_id, client=client)
    assert isinstance(events, models.PaginatedEventList)
    assert [e.kind for e in events.results][0] == "egress.enable_requested"
    assert events.results[-1].kind == "app.created" and events.results[-1].actor == "alice"

    disabled = _op(PACKAGE, "apps", "apps_egress_update").sync_detailed(
        app_id, client=client, body=models.EgressRequestRequest(type_=models.TypeEnum.SHARED)
    )
    assert disabled.status_code in (200, 202) and disabled.parsed.type_ == models.TypeEnum.SHARED
    assert App.objects.get(pk=app_id).egress_type == "shared"

    tokens = _op(PACKAGE, "tokens", "tokens_list").sync(client=client)
    assert isinstance(tokens, models.PaginatedApiTokenList)
    by_name = {t.name: t for t in tokens.results}
    assert by_name["automation"].current and not by_name["spare"].current
    revoked = _op(PACKAGE, "tokens", "tokens_destroy").sync_detailed(by_name["spare"].id, client=client)
    assert revoked.status_code == 204
    assert not ApiToken.objects.filter(name="spare").exists()
    spare_client = generated_client.AuthenticatedClient(base_url=live_server.url, token=spare, prefix="Token")
    refused = _op(PACKAGE, "apps", "apps_list").sync_detailed(client=spare_client)
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Error)

    # Errors parse into the documented error shape too.
    invalid = _op(PACKAGE, "apps", "apps_create").sync_detailed(
        client=client, body=models.AppRequest(name="Not A Name", region="nowhere")
    )
    assert invalid.status_code == 400 and isinstance(invalid.parsed, models.Error)
    assert invalid.parsed.error.code == "invalid" and "region" in invalid.parsed.error.fields.additional_properties
