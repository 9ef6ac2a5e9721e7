"""The state each host held when a reconcile last verified it, shared by every worker through Redis.

A reconcile starts from it instead of reading the host first, so in the steady state a reconcile is one
remote exec: apply the difference and read back, in the same script. It is only ever a starting point:
the read-back is compared with the desired state, and on any mismatch (someone changed the host by hand,
it rebooted, a worker died half-way) the reconcile plans again from what the host reported. Losing it
(Redis restarted, an entry expired) costs one extra read, nothing else.

A prefork child keeps the last entry it decoded per host, keyed by the entry's digest, so a sweep of
unchanged hosts fetches a few bytes per host rather than the whole state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading

import redis
from django.conf import settings

from egressportal import dataplane as dp
from egressportal.core.models import Gateway, Node
from egressportal.ops.store import redis_client

__all__ = ["verified_forget", "verified_recall", "verified_remember"]

logger = logging.getLogger(__name__)

_TTL_SECONDS = 24 * 3600
_decoded: dict[str, tuple[bytes, dp.GatewayState | dp.NodeState]] = {}
_decoded_lock = threading.Lock()


def _key(host: Gateway | Node) -> str:
    # The address is part of the key: a host row pointed at another machine starts from nothing.
    return f"egress:verified:{host.kind}:{host.pk}:{host.mgmt_address}:{host.ssh_port}"


def _client() -> redis.Redis:
    return redis_client(settings.REDIS_URL, timeout=1.0)


def verified_recall(host: Gateway | Node) -> dp.GatewayState | dp.NodeState | None:
    """The state ``host`` held when last verified, or None when unknown (then the reconcile reads first)."""
    key = _key(host)
    try:
        digest = _client().hget(key, "digest")
        if digest is None:
            return None
        with _decoded_lock:
            memo = _decoded.get(key)
        if memo is not None and memo[0] == digest:
            return memo[1]
        raw = _client().hget(key, "state")
        if raw is None:
            return None
        state = dp.state_from_doc(json.loads(raw))
    except (redis.RedisError, ValueError) as exc:  # DataplaneValueError and JSON errors are ValueErrors
        logger.info("no verified state for %s: %s", key, exc)
        return None
    with _decoded_lock:
        _decoded[key] = (digest, state)
    return state


def _encode(state: dp.GatewayState | dp.NodeState) -> bytes:
    return json.dumps(dp.state_to_doc(state), sort_keys=True, separators=(",", ":")).encode()


def verified_remember(host: Gateway | Node, state: dp.GatewayState | dp.NodeState) -> None:
    """Record that ``host`` was just verified to hold ``state``."""
    key = _key(host)
    with _decoded_lock:
        memo = _decoded.get(key)
    raw = None
    if memo is not None and memo[1] == state:
        digest = memo[0]  # the same state as last time (the steady case): no need to encode it again
    else:
        try:
            raw = _encode(state)
        except TypeError as exc:
            logger.warning("cannot keep the verified state of %s: %s", key, exc)
            verified_forget(host)
            return
        digest = hashlib.sha256(raw).hexdigest().encode()
    with _decoded_lock:
        _decoded[key] = (digest, state)
    try:
        client = _client()
        if memo is not None and memo[0] == digest and client.hget(key, "digest") == digest:
            client.expire(key, _TTL_SECONDS)
            return
        if raw is None:
            raw = _encode(state)
        pipe = client.pipeline()
        pipe.hset(key, mapping={"digest": digest, "state": raw})
        pipe.expire(key, _TTL_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        logger.info("cannot keep the verified state of %s: %s", key, exc)


def verified_forget(host: Gateway | Node) -> None:
    """The host may hold anything now (a failure, a lost lease): the next reconcile reads it first."""
    key = _key(host)
    with _decoded_lock:
        _decoded.pop(key, None)
    try:
        _client().delete(key)
    except redis.RedisError as exc:
        # A stale entry is still only a starting point: the read-back catches it.
        logger.info("cannot forget the verified state of %s: %s", key, exc)
