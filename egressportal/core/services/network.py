"""Regions, pools and the allocation of egress addresses.

Every address a pool can hand out gets a row before it is needed (status free; pool_create makes the
first POOL_ROWS_CHUNK, and the allocator makes the next chunk when a pool's free rows run out). An
allocation claims one free row with SELECT ... FOR UPDATE SKIP LOCKED: concurrent allocations from one
pool each take a different row without waiting for each other, and no pool-wide lock is held on the
common path (SQLite has one writer anyway; there the clause is left out). The claim itself is a
conditional UPDATE (only a row still free / still in the state it was read in), the last guard: a lost
race raises IntegrityError and the whole allocation is retried. The pool's row is locked only on the slow
path: to add the next chunk of rows, or to take an address whose quarantine has ended.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField, Case, CharField, Count, F, Q, Value, When
from django.utils import timezone

from .. import ipam, ipam6
from ..capacity import addresses_reusable_by, addresses_takeable
from ..errors import ConflictError, NoGatewaysAvailable, PoolExhausted
from ..models import (
    App,
    EgressIP,
    EgressIPRole,
    EgressIPStatus,
    Gateway,
    HealthStatus,
    IPFamily,
    IPPool,
    Region,
)
from .egress6 import (
    egress6_backfill,
    egress_ips6_attach,
    partners6_supply,
    partners6_write,
    pool6_create,
    pool6_delete,
    pool6_excluded_clean,
    pool6_in_use,
)
from .events import event_record
from .reconcile import reconcile_request

__all__ = [
    "region_create",
    "region_update",
    "region_delete",
    "pool_create",
    "pool_update",
    "pool_delete",
    "egress_ips_allocate",
    "egress_ips_allocate_many",
    "egress_ips_release",
    "egress_ips_release_many",
    "pool_rows_extend",
]

ALLOCATION_ATTEMPTS = 5
# Rows made at once for a pool: a /20 gets all its rows when it is created, a /16 (65,534 addresses,
# the largest pool) gets 4,096 then and 4,096 more each time they run out (one locked extension per
# 4,096 allocations), so creating a big pool stays quick and its table never holds rows nobody needed.
POOL_ROWS_CHUNK = 4096
# The row lock of the claim (SKIP LOCKED). Tests switch it off to show the conditional claim guards alone.
ROW_LOCKS = True


def region_create(*, slug: str, name: str = "", description: str = "", actor: Any = None) -> Region:
    region = Region(slug=slug, name=name or slug, description=description)
    region.full_clean()
    region.save()
    event_record(
        kind="region.created",
        message=f"Region {region.slug} created.",
        actor=actor,
        subject=region.slug,
        data={"after": {"slug": region.slug, "name": region.name, "description": region.description}},
    )
    return region


def region_update(*, region: Region, name: str | None = None, description: str | None = None, actor: Any = None) -> Region:
    """The slug is the region's identity (the API and other rows refer to it); name and description may change."""
    before = {"name": region.name, "description": region.description}
    if name is not None:
        region.name = name
    if description is not None:
        region.description = description
    after = {"name": region.name, "description": region.description}
    if after == before:
        return region
    region.full_clean()
    region.save(update_fields=["name", "description"])
    event_record(
        kind="region.updated",
        message=f"Region {region.slug} updated.",
        actor=actor,
        subject=region.slug,
        data={"before": before, "after": after},
    )
    return region


def region_delete(*, region: Region, actor: Any = None) -> None:
    """Only an empty region can go: apps, pools, gateways and nodes refer to it."""
    in_use = [
        what
        for what, qs in (
            ("apps", region.apps),
            ("pools", region.pools),
            ("gateways", region.gateways),
            ("nodes", region.nodes),
        )
        if qs.exists()
    ]
    if in_use:
        raise ConflictError(f"Region {region.slug} still has {', '.join(in_use)}; remove them first.")
    slug = region.slug
    before = {"slug": slug, "name": region.name, "description": region.description}
    region.delete()
    event_record(kind="region.deleted", message=f"Region {slug} deleted.", actor=actor, subject=slug,
                 data={"before": before})


def _clean_excluded(net: ipam.IPv4Network, excluded: Iterable[str]) -> list[str]:
    out: list[str] = []
    errors: list[str] = []
    for raw in excluded:
        try:
            addr = ipam.parse_address(raw)
        except ipam.IPAMError as exc:
            errors.append(str(exc))
            continue
        if addr not in net:
            errors.append(f"{addr} is not inside {net}.")
        elif str(addr) not in out:
            out.append(str(addr))
    if errors:
        raise ValidationError({"excluded": errors})
    return sorted(out, key=lambda a: int(ipam.parse_address(a)))


def _check_pool_overlap(net: ipam.IPv4Network, *, exclude_pk: int | None = None) -> None:
    first, last = ipam.network_bounds(net)
    clash = IPPool.objects.filter(first_int__lte=last, last_int__gte=first)
    if exclude_pk:
        clash = clash.exclude(pk=exclude_pk)
    other = clash.first()
    if other is not None:
        raise ValidationError({"cidr": f"{net} overlaps pool {other.name} ({other.cidr}); pools never overlap."})


def _region_gateways_reconcile(region_id: int) -> None:
    """A gateway holds every pool of its region (rules/desired.py): a pool created, deleted, or with a
    changed exclusion list changes what each enabled gateway of the region must hold."""
    reconcile_request(gateways=Gateway.objects.filter(region_id=region_id, enabled=True).values_list("pk", flat=True))


def pool_create(
    *,
    region: Region,
    name: str,
    cidr: str,
    excluded: Sequence[str] = (),
    description: str = "",
    actor: Any = None,
) -> IPPool:
    if ipam6.is_ipv6_text(cidr):
        pool = pool6_create(region=region, name=name, cidr=cidr, excluded=excluded, description=description, actor=actor)
        _region_gateways_reconcile(region.pk)
        return pool
    try:
        net = ipam.parse_network(cidr, what="pool CIDR")
    except ipam.IPAMError as exc:
        raise ValidationError({"cidr": str(exc)}) from None
    if net.prefixlen < ipam.MAX_POOL_PREFIXLEN:
        raise ValidationError({"cidr": f"Pools can be at most a /{ipam.MAX_POOL_PREFIXLEN}; split {net} into smaller pools."})
    pool = IPPool(region=region, name=name, cidr=str(net), excluded=_clean_excluded(net, excluded), description=description)
    pool.first_int, pool.last_int = ipam.network_bounds(net)
    pool.full_clean()
    try:
        with transaction.atomic():
            _check_pool_overlap(net)
            pool.save()
            pool_rows_extend(pool=pool)
    except IntegrityError:
        # The exclusion constraint caught a concurrent overlapping insert.
        raise ValidationError({"cidr": f"{net} overlaps another pool; pools never overlap."}) from None
    event_record(
        kind="pool.created",
        message=f"Pool {pool.name} ({pool.cidr}) created in {region.slug}.",
        actor=actor,
        subject=pool.name,
        data={"after": {"cidr": pool.cidr, "excluded": pool.excluded, "region": region.slug}},
    )
    _region_gateways_reconcile(region.pk)
    return pool


def pool_update(
    *, pool: IPPool, excluded: Sequence[str] | None = None, description: str | None = None, actor: Any = None
) -> IPPool:
    """Pools keep their CIDR for life (addresses may be allow-listed by third
    parties); what can change is the exclusion list and the description."""
    before = {"excluded": list(pool.excluded), "description": pool.description}
    if excluded is not None and pool.is_ipv6:
        new_excluded = pool6_excluded_clean(pool.network, excluded)  # type: ignore[arg-type]
        in_use = set(pool6_in_use(pool, new_excluded))
    elif excluded is not None:
        new_excluded = _clean_excluded(pool.network, excluded)  # type: ignore[arg-type]
        in_use = set(
            EgressIP.objects.filter(pool=pool, address__in=new_excluded)
            .exclude(status=EgressIPStatus.FREE)
            .values_list("address", flat=True)
        )
    if excluded is not None:
        if in_use:
            raise ValidationError({"excluded": f"In use, release first: {', '.join(sorted(in_use))}."})
        pool.excluded = new_excluded
    if description is not None:
        pool.description = description
    pool.full_clean()
    with transaction.atomic():
        pool.save()
        if excluded is not None and not pool.is_ipv6:
            # An excluded address has no row (so nothing can claim it); one excluded no more gets its row back.
            EgressIP.objects.filter(pool=pool, address__in=pool.excluded, status=EgressIPStatus.FREE).delete()
            back = set(before["excluded"]) - set(pool.excluded)
            if back:
                _rows_create(pool, [int(ipam.parse_address(a)) for a in back])
    event_record(
        kind="pool.updated",
        message=f"Pool {pool.name} updated.",
        actor=actor,
        subject=pool.name,
        data={"before": before, "after": {"excluded": pool.excluded, "description": pool.description}},
    )
    if pool.excluded != before["excluded"]:
        _region_gateways_reconcile(pool.region_id)
    if pool.is_ipv6:
        # Addresses excluded no more may serve apps that were left IPv4-only when the pools ran out.
        pool.backfill6 = egress6_backfill(region=pool.region, actor=actor)  # type: ignore[attr-defined]
    return pool


def pool_delete(*, pool: IPPool, actor: Any = None) -> None:
    region_id = pool.region_id
    if pool.is_ipv6:
        pool6_delete(pool=pool, actor=actor)
    else:
        _pool4_delete(pool=pool, actor=actor)
    _region_gateways_reconcile(region_id)


def _pool4_delete(*, pool: IPPool, actor: Any = None) -> None:
    if pool.addresses.exclude(status=EgressIPStatus.FREE).exists():
        raise ConflictError(f"Pool {pool.name} still has assigned or quarantined addresses.")
    name, cidr = pool.name, pool.cidr
    before = {"name": name, "cidr": cidr, "region": pool.region.slug, "excluded": list(pool.excluded),
              "description": pool.description}
    with transaction.atomic():
        pool.addresses.all().delete()
        pool.delete()
    event_record(kind="pool.deleted", message=f"Pool {name} ({cidr}) deleted.", actor=actor, subject=name,
                 data={"before": before})


_HEALTH_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.UNKNOWN: 1, HealthStatus.UNHEALTHY: 2}


def _candidate_gateways(region: Region) -> list[Gateway]:
    """Gateways that may take new addresses, best first: healthy before
    unknown before unhealthy, then the least loaded (this is what rebalances
    new allocations onto a freshly added gateway)."""
    gateways = list(
        Gateway.objects.filter(region=region, enabled=True, draining=False).annotate(
            load=Count("egress_ips", filter=Q(egress_ips__status=EgressIPStatus.ASSIGNED))
        )
    )
    gateways.sort(key=lambda g: (_HEALTH_RANK.get(g.health, 1), g.load, g.slot))
    return gateways


def _rows_create(pool: IPPool, values: Iterable[int]) -> int:
    rows = [EgressIP(pool=pool, address=str(ipam.IPv4Address(v)), address_int=v) for v in values]
    # A row that exists already (made by a concurrent extension) is left as it is.
    EgressIP.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)


def pool_rows_extend(*, pool: IPPool, limit: int | None = None) -> int:
    """Make free rows for the next ``limit`` (default POOL_ROWS_CHUNK) addresses of ``pool`` that have none,
    lowest first, never for an excluded one; returns how many. Called when the pool is created and by the
    allocator, with the pool's row locked, when its free rows ran out."""
    limit = POOL_ROWS_CHUNK if limit is None else limit
    used = set(EgressIP.objects.filter(pool=pool).values_list("address_int", flat=True))
    if len(used) >= pool.size:
        return 0
    fresh = []
    for addr in ipam.iter_available(pool.network, used, pool.excluded_addresses):
        fresh.append(int(addr))
        if len(fresh) >= limit:
            break
    return _rows_create(pool, fresh)


def _claimable(qs: Any) -> Any:
    """Row-lock what is read for a claim, skipping rows another allocation holds (PostgreSQL)."""
    return qs.select_for_update(skip_locked=True, of=("self",)) if ROW_LOCKS else qs


def _own_addresses(*, app: App, pool: IPPool, count: int) -> list[EgressIP]:
    """Addresses this app (then this owner) held before, so allow-lists keep working: up to ``count``."""
    return list(
        _claimable(EgressIP.objects.filter(pool=pool).filter(addresses_reusable_by(app)))
        .annotate(mine=Case(When(last_app=app, then=Value(0)), default=Value(1)))
        .order_by("mine", "released_at")[:count]
    )


def _free_addresses(pool: IPPool, count: int, *, taken: Sequence[EgressIP] = ()) -> list[EgressIP]:
    """The lowest free rows nobody else is claiming right now, but those this allocation has ``taken`` (it
    holds their row locks, which SKIP LOCKED does not skip, and has not claimed them yet): up to ``count``."""
    rows = EgressIP.objects.filter(pool=pool, status=EgressIPStatus.FREE)
    if taken:
        rows = rows.exclude(pk__in=[ip.pk for ip in taken])
    return list(_claimable(rows).order_by("address_int")[:count])


def _take_addresses(*, app: App, pool: IPPool, count: int, now: dt.datetime) -> list[EgressIP]:
    """Pick up to ``count`` addresses of ``pool`` for ``app`` (row-locked; the caller claims them), best first.

    Order of preference: addresses this app (then this owner) held before; then free rows, lowest first
    (rows are made ahead, so this is where never-used addresses are); then, with the pool's row locked:
    more rows when the pool has addresses without one, else the quarantines that ended longest ago.
    Another tenant's address in quarantine is never handed out. The same addresses, in the same order,
    as picking them one at a time (each claimed before the next is picked) gives, in a query per step
    rather than per address."""
    taken = _own_addresses(app=app, pool=pool, count=count)
    if len(taken) < count:
        taken += _free_addresses(pool, count - len(taken))
    if len(taken) == count:
        return taken
    # Slow path, once per POOL_ROWS_CHUNK allocations or when the pool is full: one extender at a time.
    _lock_pool(pool)
    # Another allocation may have extended the pool while this one waited.
    taken += _free_addresses(pool, count - len(taken), taken=taken)
    if len(taken) < count and pool_rows_extend(pool=pool):
        taken += _free_addresses(pool, count - len(taken), taken=taken)
    if len(taken) < count:
        # Out of quarantine (capacity.addresses_takeable says which), the one that ended longest ago first.
        ended = EgressIP.objects.filter(pool=pool).filter(addresses_takeable(now))
        if taken:
            ended = ended.exclude(pk__in=[ip.pk for ip in taken])
        taken += list(_claimable(ended).order_by("released_at")[: count - len(taken)])
    return taken


def _lock_pool(pool: IPPool) -> None:
    """The per-pool lock of the slow path (extending the rows, taking from quarantine): allocations that
    find free rows never wait here."""
    # No ordering (IPPool's default ordering joins the region, and FOR UPDATE
    # would then lock the region row: one lock for every pool of the region).
    IPPool.objects.select_for_update(of=("self",)).filter(pk=pool.pk).order_by().values_list("pk", flat=True).first()


def _claim(*, app: App, ips: Sequence[EgressIP], gateways: Sequence[Gateway], roles: Sequence[str],
           now: dt.datetime) -> None:
    """Assign ``ips[i]`` to ``app`` on ``gateways[i]`` as ``roles[i]``, in one UPDATE, only while every row
    is still as it was read (the last guard, with or without row locks): IntegrityError otherwise."""
    if not ips:
        return
    still = Q()
    for ip in ips:
        still |= Q(pk=ip.pk, status=ip.status)
    common = {
        "status": EgressIPStatus.ASSIGNED,
        "app": app,
        "programmed": False,
        "assigned_at": now,
        "released_at": None,
        "last_app": app,
        "last_owner_id": app.owner_id,
    }
    claimed = EgressIP.objects.filter(still, app__isnull=True).update(
        gateway_id=Case(
            *(When(pk=ip.pk, then=Value(g.pk)) for ip, g in zip(ips, gateways, strict=True)),
            output_field=BigIntegerField(),
        ),
        role=Case(
            *(When(pk=ip.pk, then=Value(r)) for ip, r in zip(ips, roles, strict=True)),
            output_field=CharField(),
        ),
        **common,
    )
    if claimed != len(ips):
        raise IntegrityError("lost the race for " + ", ".join(ip.address for ip in ips))
    for ip, gateway, role in zip(ips, gateways, roles, strict=True):
        for key, value in common.items():
            setattr(ip, key, value)
        ip.gateway, ip.role = gateway, role


def _exhausted_message(region: Region, wanted: int) -> str:
    pools = list(IPPool.objects.filter(region=region, family=IPFamily.IPV4))
    if not pools:
        return f"Region {region.slug} has no IP pool yet; ask a platform admin to add one."
    counts = EgressIP.objects.filter(pool__in=pools).aggregate(
        assigned=Count("id", filter=Q(status=EgressIPStatus.ASSIGNED)),
        quarantined=Count("id", filter=Q(status=EgressIPStatus.QUARANTINED)),
    )
    size = sum(p.size for p in pools)
    return (
        f"Not enough free egress addresses in region {region.slug}: {wanted} needed, "
        f"{size} in {len(pools)} pool(s), {counts['assigned']} assigned, {counts['quarantined']} in quarantine. "
        "Ask a platform admin to add a pool."
    )


def egress_ips_allocate(*, app: App, count: int | None = None, now: dt.datetime | None = None) -> list[EgressIP]:
    """Give ``app`` up to ``count`` addresses (default EGRESS_IPS_PER_APP), each
    on a different gateway of its region; keeps what it already holds.

    All or nothing: raises PoolExhausted (nothing allocated) when the pools
    cannot satisfy the request, NoGatewaysAvailable when the region has none."""
    wanted = count if count is not None else settings.EGRESS_IPS_PER_APP
    if wanted < 1:
        raise ValueError("count must be at least 1")
    now = now or timezone.now()
    for attempt in range(ALLOCATION_ATTEMPTS):
        try:
            with transaction.atomic():
                # Where the region has an IPv6 pool, each address gets its IPv6 partner (services/egress6.py).
                return egress_ips6_attach(app=app, ips=_allocate(app=app, wanted=wanted, now=now))
        except IntegrityError:
            # Another transaction took the same address between our read and
            # write (only without row locks, or a quarantined row read unlocked): retry.
            if attempt == ALLOCATION_ATTEMPTS - 1:
                raise ConflictError("Egress addresses are being allocated concurrently; try again.") from None
            time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def _allocate(*, app: App, wanted: int, now: dt.datetime) -> list[EgressIP]:
    held = list(EgressIP.objects.filter(app=app, status=EgressIPStatus.ASSIGNED).select_related("gateway"))
    gateways = _candidate_gateways(app.region)
    if not gateways and not held:
        raise NoGatewaysAvailable(
            f"Region {app.region.slug} has no gateway that can take new addresses; ask a platform admin to add one."
        )
    target = min(wanted, len({ip.gateway_id for ip in held} | {g.pk for g in gateways}))
    used_gateways = {ip.gateway_id for ip in held}
    free_gateways = [g for g in gateways if g.pk not in used_gateways]
    has_active = any(ip.role == EgressIPRole.ACTIVE for ip in held)
    chosen = free_gateways[: max(0, target - len(held))]
    new: list[EgressIP] = []
    if chosen:
        # Each pool in turn (lowest pk first) gives what it can of what is still missing.
        for pool in IPPool.objects.filter(region=app.region, family=IPFamily.IPV4).order_by("pk"):
            new += _take_addresses(app=app, pool=pool, count=len(chosen) - len(new), now=now)
            if len(new) == len(chosen):
                break
        if len(new) < len(chosen):
            raise PoolExhausted(_exhausted_message(app.region, target - len(held)))
        # The first address is the active one unless the app holds one already; the others are standbys.
        roles = [EgressIPRole.STANDBY if has_active or n else EgressIPRole.ACTIVE for n in range(len(new))]
        _claim(app=app, ips=new, gateways=chosen, roles=roles, now=now)
    if not held and not new:
        raise NoGatewaysAvailable(f"Region {app.region.slug} has no gateway that can take new addresses.")
    return held + new


def egress_ips_allocate_many(
    *, apps: Sequence[App], budget: dict[int, int] | None = None, now: dt.datetime | None = None
) -> dict[int, list[EgressIP]]:
    """Fresh addresses for many apps at once, in the caller's transaction: for apps that hold none and
    have none to take back (the caller made sure), by the rules of ``egress_ips_allocate`` (each address
    on a different gateway, the least loaded first, the lowest free row first). The free rows are
    row-locked in one query and claimed in a few bulk updates.

    ``budget``: addresses each owner may still take (quotas); an app that would go over it is not served.
    Where the region has IPv6 pools, the addresses get their IPv6 partners in bulk too (the caller holds
    the pools' locks: ``egress6.pools_lock_for_ipv6``).

    Returns {app pk: its addresses} for the apps served, in order; the others (no gateway, the rows made
    ahead ran out, the IPv6 pools ran out, or over budget) are left for ``egress_ips_allocate``, which
    makes more rows, takes from quarantine or says exactly why not."""
    now = now or timezone.now()
    served: dict[int, list[EgressIP]] = {}
    by_region: dict[int, list[App]] = {}
    for app in apps:
        by_region.setdefault(app.region_id, []).append(app)
    claims: list[EgressIP] = []
    partnered: list[EgressIP] = []
    for group in by_region.values():
        region = group[0].region
        gateways = _candidate_gateways(region)
        target = min(settings.EGRESS_IPS_PER_APP, len(gateways))
        if target < 1:
            continue
        need = target * len(group)
        rows: list[EgressIP] = []
        for pool in IPPool.objects.filter(region=region, family=IPFamily.IPV4).order_by("pk"):
            rows += _claimable(EgressIP.objects.filter(pool=pool, status=EgressIPStatus.FREE)).order_by(
                "address_int"
            )[: need - len(rows)]
            if len(rows) >= need or EgressIP.objects.filter(pool=pool).count() < pool.size:
                break  # enough, or this pool still has addresses to make rows for before the next is used
        rows.reverse()  # pop() hands out the lowest first
        # Where the region has IPv6 pools, each address gets its partner as egress_ips6_attach would give it
        # (the same addresses, in the same order); an app they cannot serve is left to egress_ips_allocate.
        pools6 = list(IPPool.objects.filter(region=region, family=IPFamily.IPV6).order_by("pk"))
        supply6 = partners6_supply(pools6, sum(1 for ip in rows if not ip.address6)) if pools6 else []
        load = {g.pk: g.load for g in gateways}
        for app in group:
            if len(rows) < target:
                break
            lacking6 = sum(1 for ip in rows[-target:] if not ip.address6) if pools6 else 0
            if lacking6 > len(supply6):
                continue
            if budget is not None:
                if budget.get(app.owner_id, 0) < target:
                    continue
                budget[app.owner_id] -= target
            chosen = sorted(gateways, key=lambda g: (_HEALTH_RANK.get(g.health, 1), load[g.pk], g.slot))[:target]
            ips = []
            for n, gateway in enumerate(chosen):
                ip = rows.pop()
                ip.status, ip.app, ip.gateway, ip.programmed = EgressIPStatus.ASSIGNED, app, gateway, False
                ip.role = EgressIPRole.ACTIVE if n == 0 else EgressIPRole.STANDBY
                ip.assigned_at, ip.released_at, ip.last_app, ip.last_owner_id = now, None, app, app.owner_id
                if pools6 and not ip.address6:
                    pool6, addr6 = supply6.pop(0)
                    ip.pool6, ip.address6, ip.address6_hex = pool6, str(addr6), ipam6.hex_key(addr6)
                    partnered.append(ip)
                load[gateway.pk] += 1
                ips.append(ip)
            served[app.pk] = ips
            claims += ips
    _claim_many(claims, now)
    partners6_write(partnered)
    return served


def _claim_many(ips: list[EgressIP], now: dt.datetime) -> None:
    """Claim rows read free, in bulk; like the single claim, only rows still free (the last guard). One
    parameterised UPDATE sent for all rows (executemany): a CASE per column costs seconds to build at 2,000."""
    if not ips:
        return
    table = connection.ops.quote_name(EgressIP._meta.db_table)
    sql = (
        f"UPDATE {table} SET status = %s, app_id = %s, gateway_id = %s, role = %s, programmed = %s, "  # noqa: S608
        "assigned_at = %s, released_at = NULL, last_app_id = %s, last_owner_id = %s "
        "WHERE id = %s AND status = %s AND app_id IS NULL"
    )
    assigned, free = EgressIPStatus.ASSIGNED.value, EgressIPStatus.FREE.value
    with connection.cursor() as cursor:
        cursor.executemany(sql, [
            (assigned, ip.app_id, ip.gateway_id, ip.role, False, now, ip.app_id, ip.last_owner_id, ip.pk, free)
            for ip in ips
        ])
    expected = {ip.pk: ip.app_id for ip in ips}
    for start in range(0, len(ips), 1000):
        batch = [ip.pk for ip in ips[start:start + 1000]]
        got = dict(EgressIP.objects.filter(pk__in=batch).values_list("pk", "app_id"))
        if any(got.get(pk) != expected[pk] for pk in batch):
            raise IntegrityError("lost the race for a free address")


def egress_ips_release(*, app: App, now: dt.datetime | None = None) -> list[str]:
    """Put every address of ``app`` into quarantine. The addresses must already
    be off the gateways (the reconciler calls this after removing them)."""
    return egress_ips_release_many(apps=[app], now=now).get(app.pk, [])


def egress_ips_release_many(*, apps: Sequence[App], now: dt.datetime | None = None) -> dict[int, list[str]]:
    """``egress_ips_release`` for many apps in a few queries (one update per owner); returns each app's
    released addresses, in address order."""
    if not apps:
        return {}
    now = now or timezone.now()
    ids = [app.pk for app in apps]
    released: dict[int, list[str]] = {}
    with transaction.atomic():
        rows = EgressIP.objects.select_for_update().filter(app_id__in=ids).order_by("address_int")
        for app_id, address in rows.values_list("app_id", "address"):
            released.setdefault(app_id, []).append(address)
        by_owner: dict[int, list[int]] = {}
        for app in apps:
            by_owner.setdefault(app.owner_id, []).append(app.pk)
        for owner_id, app_ids in by_owner.items():
            EgressIP.objects.filter(app_id__in=app_ids).update(
                status=EgressIPStatus.QUARANTINED, released_at=now, last_app=F("app"), last_owner_id=owner_id,
                app=None, gateway=None, role="", programmed=False,
            )
        # Addresses withdrawn during a drain were the app's until now: their quarantine starts now too.
        EgressIP.objects.filter(last_app_id__in=ids, app__isnull=True, status=EgressIPStatus.QUARANTINED).update(
            released_at=now
        )
    return released
