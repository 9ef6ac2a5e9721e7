"""IPv6 pools and the IPv6 partners of egress addresses.

An IPv6 pool (a /64 typically: 2**64 addresses) is never listed row by row. An app's IPv6 egress address
is the partner of one of its IPv4 addresses (``EgressIP.address6``, see the model): when an IPv4 row is
assigned in a region that has an IPv6 pool and the row has no partner yet, the next never-used address of
the pool is taken for it (the one after the highest ever taken, ``ipam6.next_free6``). The pool's row is
locked meanwhile (concurrent allocations from one pool queue up), and the unique constraint on
``address6`` is the last guard: a lost race raises IntegrityError, which the allocation retries as a
whole. A partner stays with its row for good, through release, quarantine and reuse, exactly like the
IPv4 address: so quarantine and quotas are the IPv4 ones (a partner never counts as an address of its
own against the tenant's address quota: it comes one for one with an IPv4 address that does).

A region without an IPv6 pool stays IPv4-only (``region_has_ipv6``); an exhausted IPv6 pool refuses the
allocation like an exhausted IPv4 one (PoolExhausted, nothing allocated).

Apps enabled before their region had an IPv6 pool get their partners when one is created or grows
(``egress6_backfill``, called by the pool services): in batches, every address of an app or none of them,
the gateways and nodes asked to reconcile; apps the pools cannot serve stay IPv4-only and are named.

Lock order, as on the enable path: apps (by pk), owners, IPv4 pools, IPv6 pools (by pk).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from .. import ipam, ipam6
from ..errors import ConflictError, DomainError, PoolExhausted
from ..models import (
    App,
    EgressIP,
    EgressIPStatus,
    EgressStatus,
    EgressType,
    Event,
    EventLevel,
    HostSync,
    IPFamily,
    IPPool,
    Placement,
    Region,
)
from .events import event_build, event_record
from .reconcile import host_syncs_renew, reconcile_request

__all__ = [
    "Backfill6",
    "egress6_backfill",
    "egress_ips6_attach",
    "partners6_supply",
    "partners6_write",
    "pools_lock_for_ipv6",
    "pool6_create",
    "pool6_delete",
    "pool6_excluded_clean",
    "pool6_in_use",
    "region_has_ipv6",
]


logger = logging.getLogger(__name__)
# Apps backfilled per transaction: each batch's locks are short, its queries do not grow with the batch.
BACKFILL_BATCH = 500


def region_has_ipv6(region_id: int) -> bool:
    return IPPool.objects.filter(region_id=region_id, family=IPFamily.IPV6).exists()


def pool6_excluded_clean(net: ipam6.IPv6Network, excluded: Iterable[str]) -> list[str]:
    out: dict[int, str] = {}
    errors: list[str] = []
    for raw in excluded:
        try:
            addr = ipam6.parse_address6(raw, what="excluded IPv6 address")
        except ipam.IPAMError as exc:
            errors.append(str(exc))
            continue
        if addr not in net:
            errors.append(f"{addr} is not inside {net}.")
        else:
            out[int(addr)] = str(addr)
    if errors:
        raise ValidationError({"excluded": errors})
    return [out[k] for k in sorted(out)]


def _check_overlap6(net: ipam6.IPv6Network) -> None:
    first, last = ipam6.network_keys(net)
    other = IPPool.objects.filter(family=IPFamily.IPV6, first_hex__lte=last, last_hex__gte=first).first()
    if other is not None:
        raise ValidationError({"cidr": f"{net} overlaps pool {other.name} ({other.cidr}); pools never overlap."})


def pool6_create(
    *, region: Region, name: str, cidr: str, excluded: Sequence[str] = (), description: str = "", actor: Any = None
) -> IPPool:
    """An IPv6 pool: at most a /MAX_POOL_PREFIXLEN6, never overlapping another pool."""
    try:
        net = ipam6.parse_network6(cidr, what="IPv6 pool CIDR")
    except ipam.IPAMError as exc:
        raise ValidationError({"cidr": str(exc)}) from None
    if net.prefixlen < ipam6.MAX_POOL_PREFIXLEN6:
        raise ValidationError(
            {"cidr": f"IPv6 pools can be at most a /{ipam6.MAX_POOL_PREFIXLEN6}; {net} is wider."}
        )
    pool = IPPool(
        region=region, name=name, cidr=str(net), excluded=pool6_excluded_clean(net, excluded), description=description
    )
    pool.family = IPFamily.IPV6
    pool.first_hex, pool.last_hex = ipam6.network_keys(net)
    pool.full_clean()
    try:
        with transaction.atomic():
            _check_overlap6(net)
            pool.save()
    except IntegrityError:
        # The exclusion constraint caught a concurrent overlapping insert.
        raise ValidationError({"cidr": f"{net} overlaps another pool; pools never overlap."}) from None
    event_record(
        kind="pool.created",
        message=f"Pool {pool.name} ({pool.cidr}) created in {region.slug}.",
        actor=actor,
        subject=pool.name,
        data={"after": {"cidr": pool.cidr, "excluded": pool.excluded, "region": region.slug, "family": 6}},
    )
    pool.backfill6 = egress6_backfill(region=region, actor=actor)  # type: ignore[attr-defined]
    return pool


def pool6_in_use(pool: IPPool, addresses: Iterable[str] | None = None) -> list[str]:
    """The pool's addresses held by an app or in quarantine (of ``addresses``, when given)."""
    rows = EgressIP.objects.filter(pool6=pool).exclude(status=EgressIPStatus.FREE)
    if addresses is not None:
        rows = rows.filter(address6__in=list(addresses))
    return sorted(rows.values_list("address6", flat=True))


def pool6_delete(*, pool: IPPool, actor: Any = None) -> None:
    """Only a pool none of whose addresses is assigned or in quarantine goes; free rows lose their partner."""
    if pool6_in_use(pool):
        raise ConflictError(f"Pool {pool.name} still has assigned or quarantined addresses.")
    name, cidr = pool.name, pool.cidr
    before = {"name": name, "cidr": cidr, "region": pool.region.slug, "excluded": list(pool.excluded),
              "description": pool.description}
    with transaction.atomic():
        EgressIP.objects.filter(pool6=pool).update(pool6=None, address6=None, address6_hex=None)
        pool.delete()
    event_record(kind="pool.deleted", message=f"Pool {name} ({cidr}) deleted.", actor=actor, subject=name,
                 data={"before": before})


def _lock(pool: IPPool) -> None:
    # No ordering: IPPool's default ordering joins the region, and FOR UPDATE would lock it too.
    IPPool.objects.select_for_update(of=("self",)).filter(pk=pool.pk).order_by().values_list("pk", flat=True).first()


def _take6(pool: IPPool, count: int) -> list[ipam6.IPv6Address]:
    """The pool's next ``count`` never-used addresses (fewer when it runs out); the caller holds its lock."""
    net = pool.network
    assert isinstance(net, ipam6.IPv6Network)  # noqa: S101 - only IPv6 pools come here
    rows = EgressIP.objects.filter(pool6=pool)
    stats = rows.aggregate(top=Max("address6_hex"), n=Count("id"))
    top = int(stats["top"], 16) if stats["top"] else None
    excluded = pool.excluded_addresses
    found = ipam6.next_free6_many(net, top=top, count=count, excluded=excluded)  # type: ignore[arg-type]
    if len(found) < count and stats["n"] < pool.size:
        # The top is taken but some address never was (a small pool): fill the gaps.
        used = [int(k, 16) for k in rows.values_list("address6_hex", flat=True)]
        found = ipam6.next_free6_many(net, top=top, count=count, used=used, excluded=excluded)  # type: ignore[arg-type]
    return found


def pools_lock_for_ipv6(region_ids: Iterable[int]) -> set[int]:
    """For the regions (of ``region_ids``) that have an IPv6 pool, lock all their pools in the enable path's
    order (region by region: IPv4 pools, then IPv6 pools, each by pk), so that a transaction allocating for
    many apps never waits for an IPv4 pool while holding an IPv6 one. Returns those regions."""
    regions = set(
        IPPool.objects.filter(region_id__in=set(region_ids), family=IPFamily.IPV6).values_list("region_id", flat=True)
    )
    if regions:
        list(
            IPPool.objects.select_for_update(of=("self",)).filter(region_id__in=regions)
            .order_by("region_id", "family", "pk").values_list("pk", flat=True)
        )
    return regions


def partners6_supply(pools: Sequence[IPPool], count: int) -> list[tuple[IPPool, ipam6.IPv6Address]]:
    """Up to ``count`` never-used addresses of ``pools`` (IPv6, in this order), exactly those that
    partnering one address at a time would take, in that order; each pool is locked before it is read
    (the caller's transaction keeps the locks)."""
    out: list[tuple[IPPool, ipam6.IPv6Address]] = []
    for pool in pools:
        if len(out) >= count:
            break
        _lock(pool)
        out += [(pool, addr) for addr in _take6(pool, count - len(out))]
    return out


def _partner(ip: EgressIP, pool: IPPool, addr: ipam6.IPv6Address) -> None:
    ip.pool6, ip.address6, ip.address6_hex = pool, str(addr), ipam6.hex_key(addr)


def partners6_write(ips: Sequence[EgressIP]) -> None:
    """Store the partners set on ``ips`` on rows that have none yet: one statement sent for all rows, then
    read back. A row that got a partner concurrently raises IntegrityError (the caller retries).

    A new partner is not programmed (``programmed6``) until its gateway's reconcile applied it: for a row
    that is live already (a backfill, or an app's held address partnered at its next allocation) the
    nodes must not steer IPv6 to a gateway that does not hold the partner yet."""
    if not ips:
        return
    table = connection.ops.quote_name(EgressIP._meta.db_table)
    sql = (
        f"UPDATE {table} SET pool6_id = %s, address6 = %s, address6_hex = %s, programmed6 = %s "  # noqa: S608
        "WHERE id = %s AND address6 IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(ip.pool6_id, ip.address6, ip.address6_hex, False, ip.pk) for ip in ips])
    for ip in ips:
        ip.programmed6 = False
    expected = {ip.pk: ip.address6 for ip in ips}
    for start in range(0, len(ips), 1000):
        batch = [ip.pk for ip in ips[start:start + 1000]]
        got = dict(EgressIP.objects.filter(pk__in=batch).values_list("pk", "address6"))
        if any(got.get(pk) != expected[pk] for pk in batch):
            raise IntegrityError("an address got an IPv6 partner concurrently")


def _exhausted6(region: Region, wanted: int) -> str:
    pools = list(IPPool.objects.filter(region=region, family=IPFamily.IPV6))
    counts = EgressIP.objects.filter(pool6__in=pools).aggregate(
        held=Count("id", filter=~Q(status=EgressIPStatus.FREE))
    )
    size = sum(p.size for p in pools)
    return (
        f"Not enough free IPv6 egress addresses in region {region.slug}: {wanted} needed, {size} in "
        f"{len(pools)} IPv6 pool(s), {counts['held']} held or in quarantine. Ask a platform admin to add a pool."
    )


def egress_ips6_attach(*, app: App, ips: Sequence[EgressIP]) -> list[EgressIP]:
    """Give each of ``ips`` (the app's assigned IPv4 rows) that has none an IPv6 partner from the region's
    IPv6 pools, inside the caller's transaction. A region without an IPv6 pool: nothing to do.

    Raises PoolExhausted when the IPv6 pools cannot partner them all (the caller's transaction then
    allocates nothing); IntegrityError on a lost race (the caller retries)."""
    missing = [ip for ip in ips if not ip.address6]
    if not missing:
        return list(ips)
    pools = list(IPPool.objects.filter(region_id=app.region_id, family=IPFamily.IPV6).order_by("pk"))
    if not pools:
        return list(ips)
    supply = partners6_supply(pools, len(missing))
    if len(supply) < len(missing):
        raise PoolExhausted(_exhausted6(app.region, len(missing)))
    for ip, (pool, addr) in zip(missing, supply, strict=False):
        _partner(ip, pool, addr)
    partners6_write(missing)
    return list(ips)


@dataclass(frozen=True)
class Backfill6:
    """What ``egress6_backfill`` did in a region."""

    region: str
    apps: int = 0  # apps that got their IPv6 addresses
    addresses: int = 0
    left: tuple[str, ...] = ()  # apps left IPv4-only (the IPv6 pools are exhausted), by name
    failed: str = ""  # why the backfill stopped early (nothing of a failed batch was written)

    @property
    def message(self) -> str:
        """For the admin and the audit log: what happened, and what to do about what did not."""
        text = (
            f"IPv6 for the apps of {self.region} enabled before it had IPv6 addresses: {self.apps} app(s) got "
            f"{self.addresses} IPv6 address(es); their gateways and nodes are being configured."
        )
        if self.left:
            names = ", ".join(self.left[:10]) + (f" and {len(self.left) - 10} more" if len(self.left) > 10 else "")
            text += (
                f" {len(self.left)} app(s) stay IPv4-only because the region's IPv6 pools are exhausted ({names}); "
                "their IPv4 egress is unchanged. Add an IPv6 pool (or un-exclude addresses) and they get theirs."
            )
        if self.failed:
            text += f" Stopped early: {self.failed}; saving the pool again retries."
        return text


def egress6_backfill(*, region: Region, actor: Any = None) -> Backfill6:
    """Give the dedicated apps of ``region`` whose addresses have no IPv6 partner (enabled before the region
    had an IPv6 pool, or left out when it ran out) their partners: every address of an app (active and
    standby) or none, so an app never has IPv6 on one gateway and not on the other. Their gateways, then
    their nodes, are asked to reconcile (sync rows, as an enable does); their status stays what it is
    (their IPv4 egress keeps working throughout). Apps the IPv6 pools cannot serve are named in an event
    on the app and in the result, and stay IPv4-only. Called by the pool services when an IPv6 pool is
    created or changes; in batches of BACKFILL_BATCH apps, each its own transaction."""
    result = Backfill6(region=region.slug)
    if not region_has_ipv6(region.pk):
        return result
    apps = addresses = 0
    left: list[str] = []
    failed = ""
    seen: set[int] = set()
    # A second look once the first is done: an enable that read the region's pools just before the new
    # one was committed, and committed itself after the first look, holds addresses without partners.
    for _ in range(2):
        app_ids = [
            pk for pk in EgressIP.objects.filter(
                status=EgressIPStatus.ASSIGNED, address6__isnull=True, app__region=region,
                app__egress_type=EgressType.DEDICATED,
            ).order_by("app_id").values_list("app_id", flat=True).distinct()
            if pk not in seen
        ]
        seen.update(app_ids)
        for start in range(0, len(app_ids), BACKFILL_BATCH):
            batch = app_ids[start:start + BACKFILL_BATCH]
            try:
                with transaction.atomic():
                    served, n, unserved = _backfill_batch(region=region, app_ids=batch, actor=actor)
            except (DatabaseError, DomainError) as exc:
                logger.exception("IPv6 backfill of region %s stopped", region.slug)
                failed = f"{type(exc).__name__}: {exc}"
                break
            apps, addresses, left = apps + served, addresses + n, left + unserved
        if failed or not app_ids:
            break
    result = Backfill6(region=region.slug, apps=apps, addresses=addresses, left=tuple(left), failed=failed)
    if seen:
        event_record(
            kind="region.ipv6_backfill",
            message=result.message,
            level=EventLevel.WARNING if left or failed else EventLevel.INFO,
            actor=actor,
            subject=region.slug,
            data={"apps": apps, "addresses": addresses, "left": left, "failed": failed},
        )
    return result


def _backfill_batch(*, region: Region, app_ids: Sequence[int], actor: Any) -> tuple[int, int, list[str]]:
    now = timezone.now()
    # The enable path's lock order: the apps first (by pk), then the IPv6 pools (partners6_supply).
    locked = {
        app.pk: app
        for app in App.objects.select_for_update(of=("self",)).filter(
            pk__in=app_ids, egress_type=EgressType.DEDICATED, delete_requested=False
        ).order_by("pk")
    }
    rows = list(
        EgressIP.objects.filter(app_id__in=list(locked), status=EgressIPStatus.ASSIGNED, address6__isnull=True)
        .select_related("gateway").order_by("app_id", "role", "address_int")  # active before standby
    )
    by_app: dict[int, list[EgressIP]] = {}
    for ip in rows:
        by_app.setdefault(ip.app_id, []).append(ip)
    pools = list(IPPool.objects.filter(region=region, family=IPFamily.IPV6).order_by("pk"))
    supply = partners6_supply(pools, len(rows))
    taken = 0
    served: list[int] = []
    unserved: list[int] = []
    written: list[EgressIP] = []
    for app_id, ips in by_app.items():
        if len(supply) - taken < len(ips):
            unserved.append(app_id)
            continue
        for ip in ips:
            _partner(ip, *supply[taken])
            taken += 1
        served.append(app_id)
        written += ips
    partners6_write(written)
    nodes: dict[int, set[int]] = {}
    for app_id, node_id in Placement.objects.filter(app_id__in=served, node__enabled=True).values_list(
        "app_id", "node_id"
    ):
        nodes.setdefault(app_id, set()).add(node_id)
    syncs = [HostSync(app_id=ip.app_id, gateway_id=ip.gateway_id) for ip in written]
    syncs += [HostSync(app_id=app_id, node_id=n) for app_id in served for n in sorted(nodes.get(app_id, ()))]
    host_syncs_renew(syncs)
    App.objects.filter(pk__in=served, egress_status=EgressStatus.ASSIGNED).update(
        egress_message="Adding IPv6 egress addresses on the gateways.", egress_updated_at=now
    )
    events = [
        event_build(
            kind="egress.ipv6_added",
            message="IPv6 egress added: "
            + ", ".join(f"{ip.address6} ({ip.role}, beside {ip.address})" for ip in by_app[app_id])
            + ". Configuring the gateways, then the nodes; IPv4 egress is unchanged meanwhile.",
            actor=actor,
            app=locked[app_id],
            data={"addresses6": [ip.address6 for ip in by_app[app_id]]},
        )
        for app_id in served
    ]
    events += [
        event_build(
            kind="egress.ipv6_unavailable",
            message=f"No IPv6 egress address for this app yet: region {region.slug}'s IPv6 pools are exhausted. "
            "Its IPv4 egress is unchanged; it gets IPv6 addresses once a platform admin adds some.",
            level=EventLevel.WARNING,
            actor=actor,
            app=locked[app_id],
        )
        for app_id in unserved
    ]
    Event.objects.bulk_create(events, batch_size=500)
    # Make before break: the gateways first; they ask the nodes once they hold the new addresses.
    reconcile_request(gateways=sorted({ip.gateway_id for ip in written}))
    return len(served), len(written), [locked[a].name for a in unserved]
