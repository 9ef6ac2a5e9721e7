"""How the portal names an app's egress state: one label for each state,
everywhere it is shown (dashboard, app page, filters, admin), and the words
that say what it means for the app's traffic. Pure functions over values the
selectors read; no database access here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone

from egressportal.core.models import EgressStatus, EgressType
from egressportal.core.selectors import AddressRow
from egressportal.core.wording import STATUS_LABELS, duration_words, status_label

__all__ = [
    "STATUS_LABELS",
    "StatusView",
    "status_label",
    "status_view",
    "poll_delay",
    "duration_words",
    "status_filter_choices",
]

REDUCED_LABEL = "Assigned · reduced redundancy"
RETRYING_LABEL = "Retrying"


def status_filter_choices() -> list[tuple[str, str]]:
    return [(value, status_label(value)) for value in EgressStatus.values]


@dataclass(frozen=True)
class StatusView:
    key: str  # a stable hook for styles and tests: shared, assigning, assigned, reduced, degraded, ...
    label: str
    tone: str  # ok | warn | error | progress | neutral
    hint: str


def _names(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _in(seconds: float) -> str:
    if seconds < 1.5:
        return "in a moment"
    return f"in about {duration_words(seconds)}"


def status_view(
    *,
    egress_type: str,
    status: str,
    rows: Sequence[AddressRow],
    wanted: int,
    retrying: bool,
    unreachable: Sequence[str] = (),
    next_attempt_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> StatusView:
    """What the app's egress state means for its traffic, told truthfully:
    a reduced redundancy is not "all good", and "failed" is said only when
    the workers have stopped trying."""
    assigned = [r for r in rows if r.state != "reserved"]
    reserved = [r for r in rows if r.state == "reserved"]
    waiting = f" Waiting for gateway {_names(unreachable)}, which does not answer." if unreachable else ""
    next_try = ""
    if next_attempt_at is not None:
        seconds = (next_attempt_at - (now or timezone.now())).total_seconds()
        next_try = f" Next attempt {_in(seconds)}." if seconds > 0 else " Trying again now."
    if status == EgressStatus.DISABLED:
        return StatusView("shared", status_label(status), "neutral",
                          "Outbound traffic leaves from the shared address of whichever node runs the app.")
    if status == EgressStatus.ASSIGNING:
        hint = (
            "Configuring gateways and nodes." + waiting + " The workers keep trying on their own." + next_try
            if unreachable or next_try
            else "Configuring gateways and nodes; this usually takes about a second."
        )
        return StatusView("assigning", status_label(status), "progress", hint)
    if status == EgressStatus.RELEASING:
        return StatusView("releasing", status_label(status), "progress",
                          "Going back to shared egress: removing steering from the nodes, then the addresses." + next_try)
    if status == EgressStatus.FAILED:
        if retrying:
            what = "dedicated egress" if egress_type == EgressType.DEDICATED else "shared egress"
            return StatusView(
                "retrying", RETRYING_LABEL, "warn",
                f"The last attempt to switch to {what} did not succeed.{waiting} The workers retry on their own;"
                f" this page updates by itself.{next_try}",
            )
        return StatusView("failed", status_label(status), "error",
                          "The change could not be applied and nothing is retrying it: "
                          "this app's traffic does not use dedicated egress. Retry, or ask a platform admin.")
    if status == EgressStatus.DEGRADED:
        in_use = [r for r in assigned if r.state == "in_use"]
        if in_use:
            hint = (f"Traffic leaves from {in_use[0].address}, but a gateway of this app is down or cannot be "
                    "configured: there is no failover left.")
            if in_use[0].role == "standby":
                hint += (" Traffic goes back to the active address once its gateway is back and repaired; "
                         "this page updates by itself.")
        else:
            hint = ("A gateway of this app is down and traffic cannot leave from a dedicated address until one "
                    "recovers; this page updates by itself.")
        return StatusView("degraded", status_label(status), "warn", hint + next_try)
    # assigned
    healthy_standby = [r for r in assigned if r.state == "standby"]
    reduced = len(assigned) < wanted or bool(reserved) or not healthy_standby and wanted > 1
    if reduced:
        if reserved:
            why = (f"{_names([r.address for r in reserved])} is reserved for this app but on no gateway right now "
                   "(a gateway is drained or was lost)")
        elif len(assigned) < wanted:
            why = f"this app has {len(assigned)} of the {wanted} addresses it should have"
        else:
            down = [r.address for r in assigned if r.state in ("gateway_down", "pending")]
            why = f"the standby address {_names(down)} is not ready" if down else "there is no standby address"
        return StatusView("reduced", REDUCED_LABEL, "warn",
                          f"Traffic leaves from its dedicated address, but redundancy is reduced: {why}. "
                          "If the active gateway fails now, there is nothing to fail over to.")
    return StatusView("assigned", status_label(status), "ok",
                      "All outbound traffic of this app leaves from its dedicated address; the standby is ready.")


# Poll delays in seconds. While a change is in flight it usually lands within
# a second or two: stay at 1 s so "assigned" shows as soon as it is true, and
# only slow down after a minute. Retrying after a failure backs off.
IN_FLIGHT_FAST_ATTEMPTS = 60
RETRY_DELAYS = (2, 3, 5)


def poll_delay(*, status: str, attempt: int) -> int:
    if status in (EgressStatus.ASSIGNING, EgressStatus.RELEASING):
        return 1 if attempt < IN_FLIGHT_FAST_ATTEMPTS else 3
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
