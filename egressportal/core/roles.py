"""Who may do what (docs/ARCHITECTURE.md, "Trust model").

- Tenants (app owners) see and change only their own apps, and never say where an app runs.
- The platform: service accounts, members of the Django group ``platform`` (created by a migration,
  with the model permissions it needs); it reports placements and may create apps for any owner.
- Staff (platform admins) manage infrastructure; Django model permissions are honoured.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PLATFORM_GROUP", "acts_for_others", "can_report_placements", "can_view_placements", "is_platform"]

PLATFORM_GROUP = "platform"


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
