"""Words for values people read, one place for each: the name of an egress
status (the same on the dashboard, the app page, the filters and the admin)
and durations ("15 minutes", never "PT15M" or 0.1410806369999591). Pure."""

from __future__ import annotations

from .models import EgressStatus

__all__ = ["STATUS_LABELS", "status_label", "duration_words"]

# The one name of each state. "disabled" is what the database calls the state
# of an app on shared egress; people call it shared.
STATUS_LABELS = {
    EgressStatus.DISABLED: "Shared",
    EgressStatus.ASSIGNING: "Assigning",
    EgressStatus.ASSIGNED: "Assigned",
    EgressStatus.DEGRADED: "Degraded",
    EgressStatus.RELEASING: "Releasing",
    EgressStatus.FAILED: "Failed",
}


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.capitalize())


def duration_words(seconds: float) -> str:
    """'141 ms', '1.2 seconds', '45 seconds', '15 minutes', '2 hours 5 minutes', '30 days': never ISO 8601."""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        value = round(seconds, 1)
        return f"{value:g} second{'' if value == 1 else 's'}"
    if seconds < 90:
        return f"{round(seconds)} seconds"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} minute{'' if minutes == 1 else 's'}"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        rest = f" {minutes} minute{'' if minutes == 1 else 's'}" if minutes else ""
        return f"{hours} hour{'' if hours == 1 else 's'}{rest}"
    days = round(seconds / 86400)
    return f"{days} days"
