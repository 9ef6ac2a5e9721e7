"""IPv6 where people see addresses (issue 20): the portal's panel and "my addresses", the exports, the API's
egress object and address list, the allow-list snippets, Check egress and the admin."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.test import Client
from django.urls import reverse

from egressportal.core import labcheck, services
from egressportal.core.models import EgressIP, HostSync
from egressportal.core.services.hostsync import app_settle
from egressportal.portal.allowlist import allowlist_snippets
from tests.conftest import api_token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def dual(infra):
    services.pool_create(region=infra["region"], name="pool6", cidr="2001:db8:0:2::/64")
    return infra


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _assigned(owner, make_app, name):
    app = make_app(owner, name)
    services.egress_enable(app=app, actor=owner)
    EgressIP.objects.filter(app=app).update(programmed=True)
    HostSync.objects.filter(app=app).delete()
    app_settle(app_id=app.pk)
    app.refresh_from_db()
    return app


def _pairs(app) -> dict[str, str]:
    return dict(EgressIP.objects.filter(app=app).values_list("address", "address6"))


def test_panel_shows_each_address_with_its_ipv6_partner_and_both_in_the_allow_list(alice, dual, make_app):
    app = _assigned(alice, make_app, "shop")
    pairs = _pairs(app)
    html = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
    assert set(re.findall(r'data-testid="egress-ip6" data-address6="([^"]+)"', html)) == set(pairs.values())
    assert 'data-testid="ipv6-unavailable"' not in html
    plain = re.search(r'<pre id="snippet-plain"[^>]*><code>(.*?)</code></pre>', html, re.S).group(1).split()
    assert set(plain) == set(pairs) | set(pairs.values())


def test_a_region_without_ipv6_says_it_is_ipv4_only(alice, infra, make_app):
    app = _assigned(alice, make_app, "shop")
    html = _client(alice).get(reverse("portal:app_detail", args=[app.pk])).content.decode()
    assert 'data-testid="ipv6-unavailable"' in html and "IPv4 only" in html
    assert 'data-testid="egress-ip6"' not in html
    token = api_token_for(alice)
    egress = Client().get(f"/api/v1/apps/{app.pk}/", HTTP_AUTHORIZATION=f"Token {token}").json()["egress"]
    assert egress["ipv6_available"] is False and {ip["address6"] for ip in egress["ips"]} == {None}


def test_api_egress_object_and_address_list_carry_both_families(alice, dual, make_app):
    app = _assigned(alice, make_app, "shop")
    pairs = _pairs(app)
    token = api_token_for(alice)
    egress = Client().get(f"/api/v1/apps/{app.pk}/", HTTP_AUTHORIZATION=f"Token {token}").json()["egress"]
    assert egress["ipv6_available"] is True
    assert {ip["address"]: ip["address6"] for ip in egress["ips"]} == pairs
    listed = Client().get("/api/v1/addresses/", HTTP_AUTHORIZATION=f"Token {token}").json()["results"]
    assert {r["address"]: r["address6"] for r in listed} == pairs
    schema = Client().get("/api/v1/schema/", HTTP_AUTHORIZATION=f"Token {token}").content.decode()
    assert "address6" in schema and "ipv6_available" in schema


def test_my_addresses_page_and_exports_show_reserved_ipv6_too(alice, dual, make_app):
    app = _assigned(alice, make_app, "shop")
    pairs = _pairs(app)
    services.egress_disable(app=app, actor=alice)
    services.egress_ips_release(app=app)
    client = _client(alice)
    page = client.get(reverse("portal:addresses")).content.decode()
    assert set(re.findall(r'<code data-testid="address6">([^<]+)</code>', page)) == set(pairs.values())
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("portal:addresses_csv")).content.decode())))
    assert {r["address"]: r["address6"] for r in rows} == pairs and {r["state"] for r in rows} == {"reserved"}
    data = client.get(reverse("portal:addresses_json")).json()["addresses"]
    assert {r["address"]: r["address6"] for r in data} == pairs


def test_snippets_for_both_families():
    snippets = {s.key: s.text for s in allowlist_snippets(
        app_name="shop", addresses=["203.0.113.1", "2001:db8:0:2::1", "203.0.113.2", "2001:db8:0:2::2"]
    )}
    assert snippets["cidr"].split() == ["203.0.113.1/32", "203.0.113.2/32", "2001:db8:0:2::1/128", "2001:db8:0:2::2/128"]
    assert "ip saddr { 203.0.113.1, 203.0.113.2 } tcp dport 443 accept" in snippets["nftables"]
    assert "ip6 saddr { 2001:db8:0:2::1, 2001:db8:0:2::2 } tcp dport 443 accept" in snippets["nftables"]
    assert "ip6tables -A INPUT -s 2001:db8:0:2::1/128" in snippets["iptables"]
    assert "iptables -A INPUT -s 203.0.113.1/32" in snippets["iptables"]
    assert "Ipv6Ranges=[{CidrIpv6=2001:db8:0:2::1/128" in snippets["aws"]
    v4_only = {s.key: s.text for s in allowlist_snippets(app_name="shop", addresses=["203.0.113.1"])}
    assert "ip6" not in v4_only["nftables"] and "Ipv6Ranges" not in v4_only["aws"]


class _Lab:
    """A stand-in for workers.lab.Lab's read-only answers (the real one is exercised by the lab tests)."""

    def __init__(self, seen: str, seen6: str | None) -> None:
        self.apps = {"shop": object()}
        self._seen, self._seen6 = seen, seen6

    def seen_ip(self, name: str, *, timeout: float) -> str:
        return self._seen

    def seen_ip6(self, name: str, *, timeout: float) -> str | None:
        return self._seen6


def test_check_egress_checks_both_families(alice, dual, make_app, monkeypatch):
    app = _assigned(alice, make_app, "shop")
    active = EgressIP.objects.get(app=app, role="active")
    monkeypatch.setattr(labcheck, "lab_for_portal", lambda: _Lab(active.address, active.address6))
    check = labcheck.egress_check(app)
    assert check.all_match and check.active6 == active.address6
    assert "this app's dedicated IPv6 address" in check.summary
    monkeypatch.setattr(labcheck, "lab_for_portal", lambda: _Lab(active.address, "2001:db8:10:1::1"))
    check = labcheck.egress_check(app)
    assert check.matches and not check.all_match
    assert f"not the dedicated IPv6 address {active.address6}" in check.summary
    html = _client(alice).post(reverse("portal:app_check_egress", args=[app.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-seen6="2001:db8:10:1::1"' in html and "is-warn" in html


def test_admin_lists_families_and_ipv6_partners(staff, dual, alice, make_app):
    app = _assigned(alice, make_app, "shop")
    client = _client(staff)
    pools = client.get("/admin/core/ippool/").content.decode()
    assert "2001:db8:0:2::/64" in pools and "IPv6" in pools
    ips = client.get("/admin/core/egressip/").content.decode()
    assert all(v6 in ips for v6 in _pairs(app).values())
