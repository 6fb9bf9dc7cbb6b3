"""A tiny stdlib OpenStack REST client: Keystone password auth, JSON calls, find-or-create.

Used by the stdlib-only CLI for the setup calls and readiness probes, so they need no
interpreter start of the services venv. The services venv's openstacksdk is used by the
smoke test, as a test would.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from .procs import StartError


class RestError(StartError):
    """An API call failed (status 0: no answer); fails ``up`` like a service would."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Session:
    """A project-scoped token of one user against one Keystone."""

    def __init__(
        self, auth_url: str, user: str, password: str, project: str, timeout: float = 30.0
    ) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.timeout = timeout
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        _, headers, data = self._raw("POST", f"{self.auth_url}/auth/tokens", body, {})
        self.token = headers["X-Subject-Token"]
        self.catalog = data["token"]["catalog"]

    def endpoint(self, service_type: str, region: str) -> str:
        for svc in self.catalog:
            if svc["type"] == service_type:
                for ep in svc["endpoints"]:
                    if ep["interface"] == "public" and ep["region_id"] == region:
                        return ep["url"].rstrip("/")
        raise RestError(404, f"no public {service_type} endpoint in {region}")

    def _raw(
        self, method: str, url: str, body: Any, headers: dict[str, str], raw: bytes | None = None
    ) -> tuple[int, Any, Any]:
        hdrs = {"Accept": "application/json", **headers}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    text = resp.read()
                    parsed = json.loads(text) if text.strip() else None
                    return resp.status, resp.headers, parsed
            except urllib.error.HTTPError as exc:
                msg = exc.read().decode("utf-8", "replace")[:500]
                if exc.code in (502, 503) and attempt < 4:
                    time.sleep(1)
                    continue
                raise RestError(exc.code, f"{method} {url}: {msg}") from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == 4:
                    raise RestError(0, f"{method} {url}: {exc}") from exc
                time.sleep(1)
        raise AssertionError("unreachable")

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        """One authenticated request; returns the decoded JSON body (or None)."""
        hdrs = {"X-Auth-Token": self.token, **(headers or {})}
        return self._raw(method, url, body, hdrs, raw)[2]

    def find_or_create(
        self,
        url: str,
        key: str,
        match: dict[str, Any],
        create: dict[str, Any] | None = None,
        query: str | None = None,
    ) -> dict[str, Any]:
        """The first ``key`` object under ``url`` whose fields equal ``match``, created
        from ``match`` + ``create`` when there is none."""
        q = query if query is not None else (f"?name={match['name']}" if "name" in match else "")
        items = self.call("GET", url + q)[key + "s"]
        for item in items:
            if all(item.get(k) == v for k, v in match.items()):
                return item
        return self.call("POST", url, {key: {**match, **(create or {})}})[key]
