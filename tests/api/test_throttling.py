"""API throttles (egressportal/api/throttling.py): a sliding window counted in constant space, so a busy
client's every request costs the same few bytes of cache, whatever the rate."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from egressportal.api.throttling import UserThrottle, sliding_count


def test_the_sliding_count_weighs_the_previous_window_by_its_overlap():
    assert sliding_count(10, 1, 0.0) == 11
    assert sliding_count(10, 1, 0.5) == 6
    assert sliding_count(10, 1, 1.0) == 1
    assert sliding_count(0, 0, 0.3) == 0


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_020.0]  # 20 s into a minute (1,000,020 // 60 = 16,667 windows)
    monkeypatch.setattr(UserThrottle, "timer", lambda self: now[0])
    return now


def _rate(limit: str):
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK,
                                             "DEFAULT_THROTTLE_RATES": {"anon": "1000/min", "user": limit}})


def test_a_burst_at_the_end_of_a_window_still_counts_at_the_start_of_the_next(alice_api, clock):
    """A fixed window would let 2x the rate through around a boundary; the sliding one does not."""
    with _rate("10/min"):
        clock[0] = 16_667 * 60 + 50.0  # 50 s into a window
        assert [alice_api.get("/api/v1/apps/").status_code for _ in range(11)] == [200] * 10 + [429]
        clock[0] = 16_668 * 60 + 1.0  # 1 s into the next: the last 60 s still hold those 10
        assert alice_api.get("/api/v1/apps/").status_code == 429
        clock[0] = 16_668 * 60 + 55.0  # 55 s in: they weigh 10 x 5/60 now
        assert alice_api.get("/api/v1/apps/").status_code == 200


def test_refused_requests_do_not_count(alice_api, clock):
    with _rate("3/min"):
        clock[0] = 16_667 * 60 + 5.0
        codes = [alice_api.get("/api/v1/apps/").status_code for _ in range(20)]
        assert codes == [200] * 3 + [429] * 17
        clock[0] = 16_668 * 60 + 30.0  # half way into the next window: the 3 that passed weigh 1.5
        assert [alice_api.get("/api/v1/apps/").status_code for _ in range(2)] == [200, 429]


def test_what_a_busy_client_leaves_in_the_cache_does_not_grow_with_its_requests(alice_api, clock):
    with _rate("100000/min"):
        for i in range(300):
            clock[0] = 16_667 * 60 + i * 0.1
            assert alice_api.get("/api/v1/apps/").status_code == 200
    # locmem in tests: every key stored, by its full name (":<version>:<key>")
    stored = {key: cache.get(key.split(":", 2)[2]) for key in cache._cache}
    counts = [value for value in stored.values() if isinstance(value, int)]
    assert 300 in counts, stored
    assert not [value for value in stored.values() if isinstance(value, list)], "no per-request history"
