"""Posting a webhook: where it may go, and going there only (no Django models).

A webhook URL is something a tenant types, and the request is sent from inside
the platform: without care it reaches the platform's own services (SSRF). So:
- https only; plain http only to a loopback address, and only where the
  operator allows it (development, EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK);
- the host name is resolved once, every address it resolves to must be a
  public one (or loopback, as above), and the connection goes to that very
  address (no second lookup an attacker's DNS could answer differently);
- redirects are never followed: a 3xx is recorded as a failure;
- every step is time-limited and only the start of the response is read.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["WebhookTargetError", "PostResult", "check_target", "resolve_target", "post", "url_for_log"]

MAX_RESPONSE_BYTES = 2048
LOOPBACK_NAMES = {"localhost"}


class WebhookTargetError(ValueError):
    """The URL is not a place webhooks may go (said in words for the owner)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class PostResult:
    status: int | None
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """A timeout, a refused connection, 429 or a 5xx may pass; a 4xx or a redirect will not."""
        if self.status is None:
            return not self.error.startswith("refused:")
        return self.status == 429 or self.status >= 500


def url_for_log(url: str) -> str:
    """Scheme and host only: paths and queries of webhook URLs often are secrets themselves."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"
    except ValueError:
        return "(invalid URL)"


def _is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, *, allow_http_loopback: bool) -> Target:
    """Refuse what can be refused without a lookup; returns the parsed target."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise WebhookTargetError("This is not a valid URL.") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if not host:
        raise WebhookTargetError("The URL needs a host name.")
    if parts.username or parts.password:
        raise WebhookTargetError("Put credentials in your receiver's signature check, not in the URL.")
    if scheme == "http":
        if not (allow_http_loopback and _is_loopback_host(host)):
            raise WebhookTargetError(
                "Webhooks must use https (plain http is allowed only to this machine's loopback address in development)."
            )
    elif scheme != "https":
        raise WebhookTargetError("Webhooks must use https.")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not _allowed_address(literal, allow_http_loopback=allow_http_loopback):
        raise WebhookTargetError("Webhooks go to public addresses only, not to private or internal ones.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path)


def _allowed_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_http_loopback: bool) -> bool:
    if address.is_loopback:
        return allow_http_loopback
    return address.is_global and not address.is_multicast


def resolve_target(target: Target, *, allow_http_loopback: bool) -> str:
    """The one address to connect to: every address the name resolves to must be allowed."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookTargetError(f"The host name {target.host} does not resolve ({exc.strerror or exc}).") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise WebhookTargetError(f"The host name {target.host} does not resolve.")
    for address in addresses:
        if not _allowed_address(address, allow_http_loopback=allow_http_loopback):
            raise WebhookTargetError(
                f"{target.host} resolves to {address}, which is not a public address: webhooks never go there."
            )
    return str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the name in the URL, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_http_loopback: bool) -> PostResult:
    """One POST. Never raises for what the network or the receiver does: the
    result says what happened, in words fit for the delivery log."""
    try:
        target = check_target(url, allow_http_loopback=allow_http_loopback)
        address = resolve_target(target, allow_http_loopback=allow_http_loopback)
    except WebhookTargetError as exc:
        return PostResult(None, "", f"refused: {exc}")
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target.host, target.port, address=address, timeout=timeout)
    try:
        conn.request("POST", target.path, body=body, headers={**headers, "Content-Length": str(len(body))})
        response = conn.getresponse()
        text = response.read(MAX_RESPONSE_BYTES).decode("utf-8", errors="replace")
        status = response.status
        if 300 <= status < 400:
            location = response.getheader("Location", "")
            return PostResult(status, text, f"redirect to {location[:200] or '(no location)'} not followed")
        return PostResult(status, text, "" if 200 <= status < 300 else f"HTTP {status} {response.reason}")
    except TimeoutError:
        return PostResult(None, "", f"timed out after {timeout:g} s")
    except ssl.SSLError as exc:
        return PostResult(None, "", f"TLS error: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return PostResult(None, "", f"connection failed: {exc.__class__.__name__}: {exc}"[:300])
    finally:
        conn.close()
