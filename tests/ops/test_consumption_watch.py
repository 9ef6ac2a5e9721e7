"""The stuck-consumer rule (egressportal/ops/liveness.py ConsumptionWatch) on plain values."""

from __future__ import annotations

from egressportal.ops.liveness import ConsumptionWatch


def test_messages_waiting_with_a_free_slot_and_nothing_received_is_stuck_after_the_limit():
    w = ConsumptionWatch(10, now=0)
    assert not w.observe(waiting=5, free_slots=2, now=1)
    assert not w.observe(waiting=6, free_slots=2, now=10.5)  # waiting since 1: 9.5 s
    assert w.observe(waiting=7, free_slots=2, now=11.5)


def test_a_worker_that_receives_is_not_stuck_however_long_the_queue():
    w = ConsumptionWatch(10, now=0)
    for t in range(1, 60):
        w.received(now=t - 0.5)
        assert not w.observe(waiting=500, free_slots=1, now=t)


def test_an_empty_queue_a_busy_worker_or_an_unreadable_queue_is_no_verdict():
    w = ConsumptionWatch(10, now=0)
    assert not w.observe(waiting=0, free_slots=2, now=100)
    assert not w.observe(waiting=9, free_slots=0, now=200)  # every slot busy: it is consuming
    assert not w.observe(waiting=None, free_slots=2, now=300)  # Redis down
    # The clock restarts when messages start waiting again.
    assert not w.observe(waiting=3, free_slots=2, now=301)
    assert w.observe(waiting=3, free_slots=2, now=311)
