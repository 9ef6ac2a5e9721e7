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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q

from .. import ipam, ipam6
from ..errors import ConflictError, PoolExhausted
from ..models import App, EgressIP, EgressIPStatus, IPFamily, IPPool, Region
from .events import event_record

__all__ = [
    "egress_ips6_attach",
    "pool6_create",
    "pool6_delete",
    "pool6_excluded_clean",
    "pool6_in_use",
    "region_has_ipv6",
]


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


def _take6(pool: IPPool) -> ipam6.IPv6Address | None:
    """The pool's next never-used address; the caller holds the pool's lock."""
    net = pool.network
    assert isinstance(net, ipam6.IPv6Network)  # noqa: S101 - only IPv6 pools come here
    rows = EgressIP.objects.filter(pool6=pool)
    stats = rows.aggregate(top=Max("address6_hex"), n=Count("id"))
    top = int(stats["top"], 16) if stats["top"] else None
    used = None
    if top is not None and top >= int(net.broadcast_address) and stats["n"] < pool.size:
        # The top is taken but some address never was (a small pool): find the gap.
        used = [int(k, 16) for k in rows.values_list("address6_hex", flat=True)]
    return ipam6.next_free6(net, top=top, used=used, excluded=pool.excluded_addresses)  # type: ignore[arg-type]


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
    for ip in missing:
        for pool in pools:
            _lock(pool)
            addr = _take6(pool)
            if addr is None:
                continue
            fields = {"pool6": pool, "address6": str(addr), "address6_hex": ipam6.hex_key(addr)}
            if not EgressIP.objects.filter(pk=ip.pk, address6__isnull=True).update(**fields):
                raise IntegrityError(f"{ip.address} got an IPv6 partner concurrently")
            for key, value in fields.items():
                setattr(ip, key, value)
            break
        else:
            raise PoolExhausted(_exhausted6(app.region, len(missing)))
    return list(ips)
