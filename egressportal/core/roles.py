"""Who may do what (docs/ARCHITECTURE.md, "Trust model").

- Tenants (app owners) see and change only their own apps, and never say where an app runs.
- The platform: service accounts, members of the Django group ``platform`` (created by a migration,
  with the model permissions it needs); it reports placements and may create apps for any owner.
- Staff (platform admins) manage infrastructure; Django model permissions are honoured.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PLATFORM_GROUP",
    "SOURCE_ADDRESS_FIELDS",
    "SOURCE_ADDRESS_REFUSAL",
    "acts_for_others",
    "can_report_placements",
    "can_view_placements",
    "is_platform",
    "platform_group_ensure",
    "source_address_fields_in",
]

PLATFORM_GROUP = "platform"

# Names under which a client might try to say which source addresses are an app's. The app endpoints and
# the portal refuse every one of them, from anyone: placements come only through the node report.
SOURCE_ADDRESS_FIELDS = ("source_cidrs", "placements", "source_addresses", "addresses", "cidrs")
SOURCE_ADDRESS_REFUSAL = (
    "Apps do not take source addresses: the platform reports where each app runs (its placements), "
    "so nobody can claim another app's traffic. This field is read-only."
)


def source_address_fields_in(data: Any) -> list[str]:
    """The source-address fields a request body tries to set."""
    try:
        return [name for name in SOURCE_ADDRESS_FIELDS if name in data]
    except TypeError:
        return []


# What the platform's service accounts may do (Django model permissions of the group).
PLATFORM_PERMISSIONS = (
    "view_placement",
    "add_placement",
    "change_placement",
    "delete_placement",
    "add_app",
    "view_app",
    "view_node",
)


def platform_group_ensure(**_: Any) -> None:
    """The group and its permissions exist (after every migrate and every test-database flush: a
    post_migrate receiver, see apps.py; migration 0006 creates them the first time)."""
    # Imported here: this module is imported by models-free code at start-up, before the app registry.
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=PLATFORM_GROUP)
    perms = Permission.objects.filter(content_type__app_label="core", codename__in=PLATFORM_PERMISSIONS)
    group.permissions.add(*perms)


def is_platform(user: Any) -> bool:
    """A member of the platform group (a service account of the scheduler or deploy system)."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    cached = getattr(user, "_egress_is_platform", None)
    if cached is None:
        cached = user.groups.filter(name=PLATFORM_GROUP).exists()
        user._egress_is_platform = cached
    return cached


def _platform_or_staff(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or is_platform(user)))


def can_view_placements(user: Any) -> bool:
    return _platform_or_staff(user) and user.has_perm("core.view_placement")


def can_report_placements(user: Any) -> bool:
    """Only the platform (or staff holding the permission) says which addresses are an app's."""
    return _platform_or_staff(user) and user.has_perm("core.change_placement")


def acts_for_others(user: Any) -> bool:
    """May create apps for another owner."""
    return _platform_or_staff(user) and user.has_perm("core.add_app")
