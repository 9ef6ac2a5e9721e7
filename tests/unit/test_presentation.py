"""What the portal calls each state and how it says durations: pure functions, no database."""

from __future__ import annotations

import datetime as dt

import pytest

from egressportal.core.selectors import AddressRow
from egressportal.core.wording import duration_words, status_label
from egressportal.portal.presentation import poll_delay, status_view

NOW = dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.UTC)


def row(address: str, role: str, state: str) -> AddressRow:
    return AddressRow(address=address, app_id=1, app_name="shop", region="r", role=role, state=state,
                      gateway="gw" if role else "", reserved_until=None)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.1410806369999591, "141 ms"), (0.04, "40 ms"), (1, "1 second"), (1.2, "1.2 seconds"), (45, "45 seconds"),
     (900, "15 minutes"), (60, "60 seconds"), (91, "2 minutes"), (3600, "1 hour"), (7500, "2 hours 5 minutes"),
     (30 * 86400, "30 days")],
)
def test_duration_words(seconds, words):
    assert duration_words(seconds) == words


def test_one_name_for_shared():
    assert status_label("disabled") == "Shared"


def test_polling_stays_fast_while_in_flight_and_backs_off_when_retrying():
    assert [poll_delay(status="assigning", attempt=n) for n in range(10)] == [1] * 10
    assert poll_delay(status="assigning", attempt=60) == 3
    assert [poll_delay(status="failed", attempt=n) for n in range(5)] == [2, 3, 5, 5, 5]


def _view(status, rows, **kw):
    return status_view(egress_type=kw.pop("egress_type", "dedicated"), status=status, rows=rows, wanted=2,
                       retrying=kw.pop("retrying", False), now=NOW, **kw)


def test_all_good_only_with_a_ready_standby():
    good = [row("203.0.113.1", "active", "in_use"), row("203.0.113.2", "standby", "standby")]
    assert _view("assigned", good).key == "assigned"
    down = [row("203.0.113.1", "active", "in_use"), row("203.0.113.2", "standby", "gateway_down")]
    assert _view("assigned", down).key == "reduced"
    withdrawn = [row("203.0.113.1", "active", "in_use"), row("203.0.113.2", "", "reserved")]
    view = _view("assigned", withdrawn)
    assert view.key == "reduced" and view.tone == "warn" and "203.0.113.2" in view.hint
    assert _view("assigned", good[:1]).key == "reduced"


def test_failed_only_when_nothing_retries():
    rows = [row("203.0.113.1", "active", "pending")]
    retrying = _view("failed", rows, retrying=True, next_attempt_at=NOW + dt.timedelta(seconds=8),
                     unreachable=["gw1"])
    assert retrying.key == "retrying" and retrying.label == "Retrying"
    assert "Waiting for gateway gw1" in retrying.hint and "Next attempt in about 8 seconds." in retrying.hint
    failed = _view("failed", rows)
    assert failed.key == "failed" and "does not use dedicated egress" in failed.hint


def test_assigning_says_why_it_takes_long():
    quick = _view("assigning", [])
    assert "about a second" in quick.hint
    slow = _view("assigning", [], unreachable=["gw1", "gw2"], next_attempt_at=NOW + dt.timedelta(seconds=30))
    assert "about a second" not in slow.hint and "gw1 and gw2" in slow.hint and "in about 30 seconds" in slow.hint


def test_degraded_names_the_address_in_use():
    rows = [row("203.0.113.1", "active", "gateway_down"), row("203.0.113.2", "standby", "in_use")]
    assert "Traffic leaves from 203.0.113.2" in _view("degraded", rows).hint


def test_degraded_on_the_standby_says_when_traffic_comes_back():
    failed_over = [row("203.0.113.1", "active", "gateway_down"), row("203.0.113.2", "standby", "in_use")]
    assert "goes back to the active address once its gateway is back and repaired" in _view("degraded", failed_over).hint
    # Still on the active address (a gateway cannot be configured): nothing to come back to.
    on_active = [row("203.0.113.1", "active", "in_use"), row("203.0.113.2", "standby", "gateway_down")]
    assert "goes back" not in _view("degraded", on_active).hint
    nothing = [row("203.0.113.1", "active", "gateway_down"), row("203.0.113.2", "standby", "gateway_down")]
    assert "updates by itself" in _view("degraded", nothing).hint


def test_relative_times_never_say_zero_minutes():
    from django.utils import timezone

    from egressportal.portal.templatetags.portal_tags import ago

    now = timezone.now()
    assert ago(now) == "just now"
    assert ago(now - dt.timedelta(seconds=40)) == "40 seconds ago"
    assert ago(now - dt.timedelta(minutes=3, seconds=5)) == "3\xa0minutes ago"
    # 45 days: a month and some, whatever the calendar month (30 days is "4 weeks" from a 31-day month).
    assert ago(now + dt.timedelta(days=45)) == "in 1\xa0month"
    assert ago(now + dt.timedelta(days=20)) == "in 2\xa0weeks"
