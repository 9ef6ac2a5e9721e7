"""What an app's owner is told when the platform fails them: about their app, in their words.

A reconcile error names management addresses and ports, echoes nft or ip output (which can quote rules of
other tenants' apps on the same host) and says how our SSH failed: all of that is for staff, who read it in
the host's last error, the host's events in the admin and the logs. The owner learns which of the app's
hosts is affected, in plain words, and that it is being handled. Pure: no framework, nothing looked up.
"""

from __future__ import annotations

__all__ = ["HOST_SECURITY_MESSAGE", "host_security_message", "reconcile_failure_message"]

_WHAT_HAPPENED = {
    "unreachable": "cannot be reached right now",
    "timeout": "did not answer in time",
}
_DEFAULT = "could not take the change"

HOST_SECURITY_MESSAGE = "{label} {name} failed a security check; a platform admin has been alerted."


def _label(host_kind: str) -> str:
    return "Gateway" if host_kind == "gateway" else "Node"


def reconcile_failure_message(*, host_kind: str, host_name: str, error_kind: str | None) -> str:
    """The app's status and timeline text for a failed reconcile of one of its hosts.

    ``error_kind`` is the SSH error's kind (unreachable, timeout, auth, command_failed, protocol) or None for
    anything else; only the first two are worth telling apart for an owner."""
    what = _WHAT_HAPPENED.get(error_kind or "", _DEFAULT)
    return (
        f"{_label(host_kind)} {host_name} {what}, so this app's egress could not be configured there. "
        "Retrying automatically; this is a platform problem, not your app's, and platform admins can see the details."
    )


def host_security_message(*, host_kind: str, host_name: str) -> str:
    return HOST_SECURITY_MESSAGE.format(label=_label(host_kind), name=host_name)
