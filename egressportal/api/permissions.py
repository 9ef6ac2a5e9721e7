"""Who may do what through the API: the same rules as the admin site.

Staff endpoints need an active staff account *and* the Django model permission for what the request does
(view, add, change, delete), exactly as the admin checks them; a staff user without permissions gets 403
here just as in the admin. Actions that change a host (drain, undrain, accept a host key) need that model's
change permission; the audit log needs ``core.view_event``.

Placements are the platform's (egressportal/core/roles.py): its service accounts and staff, each with the
placement permission; tenants never say where an app runs.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from egressportal.core import roles

__all__ = ["PlacementsPermission", "StaffModelPermission", "StaffOrPlatformReadOnly", "model_permission_codenames"]

# What each HTTP method needs, by model permission action (the admin's four).
_METHOD_ACTION = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def model_permission_codenames(model: Any, method: str, *, action: str | None = None) -> list[list[str]]:
    """The permissions a request needs, as alternatives (any inner list suffices), e.g.
    ``[["core.view_gateway"], ["core.change_gateway"]]`` for a read: like the admin, change implies view.

    ``action`` overrides the method's own action (a POST that drains a gateway *changes* it)."""
    meta = model._meta
    needed = action or ("view" if method in SAFE_METHODS else _METHOD_ACTION.get(method, "change"))
    name = f"{meta.app_label}.{needed}_{meta.model_name}"
    if needed == "view":
        return [[name], [f"{meta.app_label}.change_{meta.model_name}"]]
    return [[name]]


class StaffModelPermission(BasePermission):
    """Active staff with the model permission the request needs.

    The view names its model with ``permission_model`` (else its queryset's model) and may map an action
    name to the permission action it needs in ``permission_actions`` (e.g. ``{"drain": "change"}``)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        model = getattr(view, "permission_model", None)
        if model is None:
            model = view.get_queryset().model
        action = getattr(view, "permission_actions", {}).get(getattr(view, "action", None))
        alternatives = model_permission_codenames(model, request.method, action=action)
        if any(user.has_perms(perms) for perms in alternatives):
            return True
        self.message = (
            f"Your staff account lacks the permission {alternatives[0][0]!r}; ask an administrator to grant it "
            "(the admin site's user page)."
        )
        return False


class PlacementsPermission(BasePermission):
    """Reading a node's placements needs view_placement, reporting them change_placement, and either
    way the caller is the platform or staff. Tenants get 403: they never say where an app runs."""

    message = (
        "Only the platform reports placements (which addresses on which node are an app's); "
        "app owners cannot read or change them here."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return roles.can_view_placements(request.user)
        return roles.can_report_placements(request.user)


class StaffOrPlatformReadOnly(StaffModelPermission):
    """Staff manage nodes (with the model permissions); the platform may read them: it reports
    placements by node id."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS and roles.can_view_placements(request.user) and roles.is_platform(request.user):
            return True
        return super().has_permission(request, view)
