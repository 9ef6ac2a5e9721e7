"""Per-tenant quotas on apps and on dedicated addresses.

Defaults come from settings (EGRESS_QUOTA_APPS, EGRESS_QUOTA_ADDRESSES); staff override them per user
(TenantQuota). Addresses in quarantine count against the tenant that released them until their
quarantine ends: otherwise one tenant could take a pool, release it, and keep everyone else out of it
for the whole quarantine while taking it again.

The checks run inside the caller's transaction with the owner's row locked, so two concurrent requests
of one tenant cannot both pass at the last free place; a refusal raises QuotaExceeded (409) and the
caller's transaction rolls back whatever it had allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Func, IntegerField, Q, Subquery
from django.utils import timezone

from ..capacity import quarantine_cutoff
from ..errors import QuotaExceeded
from ..models import App, EgressIP, EgressIPStatus, TenantQuota
from .events import event_record

__all__ = [
    "Quota",
    "quota_check_addresses",
    "quota_check_apps",
    "quota_lock_owner",
    "quota_room",
    "quota_usage",
    "tenant_quota_set",
]


@dataclass(frozen=True)
class Quota:
    max_apps: int
    max_addresses: int
    apps: int
    addresses: int


def _limits(user_id: int) -> tuple[int, int]:
    override = TenantQuota.objects.filter(user_id=user_id).values_list("max_apps", "max_addresses").first()
    max_apps, max_addresses = override or (None, None)
    return (
        settings.EGRESS_QUOTA_APPS if max_apps is None else max_apps,
        settings.EGRESS_QUOTA_ADDRESSES if max_addresses is None else max_addresses,
    )


def _counted(user_id: int) -> Q:
    """The addresses counted against a tenant: assigned to its apps, plus released by it and still in
    quarantine."""
    return Q(status=EgressIPStatus.ASSIGNED, app__owner_id=user_id) | Q(
        status=EgressIPStatus.QUARANTINED, last_owner_id=user_id, released_at__gte=quarantine_cutoff()
    )


def _addresses_used(user_id: int) -> int:
    return EgressIP.objects.filter(_counted(user_id)).count()


def _address_figures(user_id: int) -> tuple[int, int]:
    """(the tenant's address quota, the addresses it uses): ``_limits`` and ``_addresses_used`` in one query,
    for the enable path, which asks both on every request."""
    override = TenantQuota.objects.filter(user_id=user_id).values("max_addresses")[:1]
    used = (
        EgressIP.objects.filter(_counted(user_id)).order_by()
        .annotate(n=Func(F("id"), function="COUNT")).values("n")
    )
    row = (
        get_user_model().objects.filter(pk=user_id)
        .values_list(Subquery(override, output_field=IntegerField()), Subquery(used, output_field=IntegerField()))
        .first()
    )
    max_addresses, count = row if row is not None else (None, 0)
    return (settings.EGRESS_QUOTA_ADDRESSES if max_addresses is None else max_addresses), count


def quota_usage(user: Any) -> Quota:
    user_id = getattr(user, "pk", user)
    max_apps, max_addresses = _limits(user_id)
    return Quota(
        max_apps=max_apps,
        max_addresses=max_addresses,
        apps=App.objects.filter(owner_id=user_id).count(),
        addresses=_addresses_used(user_id),
    )


def _lock_owner(user_id: int) -> None:
    # Serialises one tenant's quota-bound writes; other tenants never wait on it.
    get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True).first()


def quota_check_apps(*, owner: Any) -> None:
    """Before creating an app for ``owner`` (inside the creating transaction)."""
    user_id = getattr(owner, "pk", owner)
    _lock_owner(user_id)
    max_apps, _ = _limits(user_id)
    count = App.objects.filter(owner_id=user_id).count()
    if count >= max_apps:
        raise QuotaExceeded(
            f"App quota reached: {count} of {max_apps} apps. Delete an app you no longer need, "
            "or ask a platform admin to raise your quota."
        )


def quota_check_addresses(*, owner: Any) -> None:
    """After allocating addresses for one of ``owner``'s apps (inside the allocating transaction): more
    than the quota refuses the whole request, and the caller's rollback un-allocates."""
    user_id = getattr(owner, "pk", owner)
    max_addresses, used = _address_figures(user_id)
    if used > max_addresses:
        raise QuotaExceeded(
            f"Dedicated address quota reached: this needs {used} addresses but your quota is {max_addresses} "
            "(addresses you released count until their quarantine ends). Nothing was allocated. Disable dedicated "
            "egress on an app you no longer need, or ask a platform admin to raise your quota."
        )


def quota_room(*, owner: Any) -> int:
    """How many more addresses ``owner`` may take now (0 when at or over the quota)."""
    max_addresses, used = _address_figures(getattr(owner, "pk", owner))
    return max(0, max_addresses - used)


def quota_lock_owner(*, owner: Any) -> None:
    _lock_owner(getattr(owner, "pk", owner))


def tenant_quota_set(
    *, user: Any, max_apps: int | None = None, max_addresses: int | None = None, actor: Any = None
) -> TenantQuota | None:
    """Override a user's quotas (None: the default); both None removes the override. Audited."""
    for name, value in (("max_apps", max_apps), ("max_addresses", max_addresses)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValidationError({name: "Give a whole number of at least 0, or leave it empty for the default."})
    with transaction.atomic():
        current = TenantQuota.objects.select_for_update().filter(user=user).first()
        before = {"max_apps": current.max_apps, "max_addresses": current.max_addresses} if current else {}
        after = {"max_apps": max_apps, "max_addresses": max_addresses}
        if max_apps is None and max_addresses is None:
            if current is not None:
                current.delete()
            quota = None
        else:
            quota, _ = TenantQuota.objects.update_or_create(user=user, defaults=after)
        event_record(
            kind="quota.updated",
            message=f"Quotas of {user.get_username()}: apps {_shown(max_apps, settings.EGRESS_QUOTA_APPS)}, "
            f"dedicated addresses {_shown(max_addresses, settings.EGRESS_QUOTA_ADDRESSES)}.",
            actor=actor,
            subject=user.get_username(),
            data={"before": before, "after": after, "at": timezone.now().isoformat()},
        )
    return quota


def _shown(value: int | None, default: int) -> str:
    return f"{default} (default)" if value is None else str(value)
