"""Writing the timeline and the audit log."""

from __future__ import annotations

from typing import Any

from ..models import App, Event, EventLevel, Gateway, Node

__all__ = ["event_build", "event_record", "actor_name_of", "WORKER", "SYSTEM"]

WORKER = "worker"
SYSTEM = "system"

# Keys whose values never reach the audit log, whatever a caller passes.
_SECRET_KEYS = {"password", "private_key", "token", "secret", "ssh_private_key", "credential"}


def actor_name_of(actor: Any) -> str:
    if actor is None:
        return SYSTEM
    if isinstance(actor, str):
        return actor
    return getattr(actor, "get_username", lambda: str(actor))()


def _scrub(data: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if any(s in key.lower() for s in _SECRET_KEYS):
            clean[key] = "********"
        elif isinstance(value, dict):
            clean[key] = _scrub(value)
        else:
            clean[key] = value
    return clean


def event_record(
    *,
    kind: str,
    message: str,
    actor: Any = None,
    app: App | None = None,
    gateway: Gateway | None = None,
    node: Node | None = None,
    level: str = EventLevel.INFO,
    subject: str = "",
    data: dict[str, Any] | None = None,
) -> Event:
    """Append one event. ``actor`` is a user, a name ('worker') or None (system)."""
    event = event_build(kind=kind, message=message, actor=actor, app=app, gateway=gateway, node=node, level=level,
                        subject=subject, data=data)
    event.save()
    return event


def event_build(
    *,
    kind: str,
    message: str,
    actor: Any = None,
    app: App | None = None,
    gateway: Gateway | None = None,
    node: Node | None = None,
    level: str = EventLevel.INFO,
    subject: str = "",
    data: dict[str, Any] | None = None,
) -> Event:
    """The event ``event_record`` would append, unsaved (for a bulk insert of many)."""
    user = actor if getattr(actor, "pk", None) is not None and hasattr(actor, "get_username") else None
    if not subject:
        subject = str(app or gateway or node or "")
    return Event(
        kind=kind,
        level=level,
        message=message,
        actor=user,
        actor_name=actor_name_of(actor),
        app=app,
        gateway=gateway,
        node=node,
        subject=subject[:200],
        data=_scrub(data or {}),
    )
