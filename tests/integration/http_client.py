"""A tiny cookie-keeping HTTP client for driving the running product the way a
person's browser or script does: over HTTP, with the CSRF token."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any


class PortalClient:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def request(self, method: str, path: str, *, data: dict | None = None, json_body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = None
        hdrs = {"Referer": self.base + "/", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if method != "GET":
            hdrs["X-CSRFToken"] = self._csrf()
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=15) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self, username: str, password: str) -> None:
        status, page = self.request("GET", "/accounts/login/")
        assert status == 200, status
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        status, page = self.request(
            "POST", "/accounts/login/", data={"csrfmiddlewaretoken": token, "username": username, "password": password}
        )
        assert status == 200 and "logout" in page.lower(), (status, page[:500])

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, text = self.request(method, path, json_body=body, headers={"Accept": "application/json"})
        return status, (json.loads(text) if text else None)
