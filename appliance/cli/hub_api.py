"""The hub's REST API on loopback, as the `applctl` service (configurer.py registers
it with the token from /var/lib/jupyterhub/applctl_token, which only root can read)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from .. import config
from ..groups import STATE_DIR
from ..net import http_url
from ..state import APPLCTL_TOKEN, hub_owners, read_secret
from .host import held_by_systemd


class HubDown(Exception):
    """The hub did not answer at all."""


class HubError(Exception):
    """The hub answered with an error; `status` is the HTTP status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class Hub:
    def __init__(self, cfg: config.Config, token_file: Path = Path(STATE_DIR) / APPLCTL_TOKEN,
                 held: Callable[[int], bool] = held_by_systemd):
        self.port = cfg["hub"]["hub_port"]
        self.held = held
        self.base = http_url("127.0.0.1", self.port, "/hub/api")
        self.token_file = token_file
        self._token: str | None = None

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self) -> str:
        if self._token is None:
            try:
                self._token = read_secret(self.token_file, owners=hub_owners())
            except OSError as e:
                raise HubError(0, f"cannot read the admin token {self.token_file} ({e.strerror}); "
                                  "reinstalling the package creates it") from None
        return self._token

    def call(self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 15) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            # applctl's admin token goes only to the socket systemd holds for the hub:
            # a hub_port set to where someone else listens would hand it to them.
            if not self.held(self.port):
                raise HubError(0, f"port {self.port} (hub.hub_port) is not held by systemd for the hub, so applctl's "
                                  "token was not sent there; sudo applctl reload starts the socket that holds it")
            headers["Authorization"] = f"token {self.token()}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise HubError(e.code, _message(e)) from None
        except (urllib.error.URLError, OSError) as e:
            raise HubDown(f"the hub does not answer on {self.where} ({getattr(e, 'reason', e)})") from None
        return json.loads(raw) if raw else None

    def version(self, timeout: float = 3) -> str | None:
        """The running hub's version, or None when it does not answer."""
        try:
            return self.call("GET", "/", auth=False, timeout=timeout)["version"]
        except (HubDown, HubError, KeyError, TypeError, ValueError):
            return None

    def user(self, name: str) -> dict | None:
        try:
            return self.call("GET", f"/users/{quote(name)}")
        except HubError as e:
            if e.status == 404:
                return None
            raise

    def users(self, include_stopped: bool = False) -> dict[str, dict]:
        """Every user's model; with include_stopped, stopped servers too, with their
        state (the admin service may read it), where the last stop's reason lives."""
        out: dict[str, dict] = {}
        offset, limit = 0, 200
        extra = "&include_stopped_servers=1" if include_stopped else ""
        while True:
            page = self.call("GET", f"/users?offset={offset}&limit={limit}{extra}")
            out.update((u["name"], u) for u in page)
            if len(page) < limit:
                return out
            offset += limit

    def stop_server(self, name: str, timeout: float = 60) -> bool:
        """Stop NAME's server through the hub, so it forgets it too. False when the
        hub knows no server of NAME (a unit it lost track of is the daemon's job)."""
        try:
            self.call("DELETE", f"/users/{quote(name)}/server")
        except HubError as e:
            if e.status in (400, 404):
                return False
            raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The user model lists only servers that run or are on their way.
            if not ((self.user(name) or {}).get("servers") or {}).get(""):
                break
            time.sleep(0.3)
        return True

    def delete_user(self, name: str) -> bool:
        try:
            self.call("DELETE", f"/users/{quote(name)}")
            return True
        except HubError as e:
            if e.status == 404:
                return False
            raise

    def revoke_tokens(self, name: str) -> int:
        """Delete NAME's API tokens (not their login): how many there were."""
        try:
            listed = self.call("GET", f"/users/{quote(name)}/tokens")
        except HubError as e:
            if e.status == 404:
                return 0
            raise
        tokens = listed.get("api_tokens", []) if isinstance(listed, dict) else []
        for t in tokens:
            self.call("DELETE", f"/users/{quote(name)}/tokens/{quote(str(t['id']))}")
        return len(tokens)

    def set_admin(self, name: str, admin: bool) -> bool:
        """Make the hub's record agree with the group at once; False if it has none."""
        try:
            self.call("PATCH", f"/users/{quote(name)}", {"admin": admin})
            return True
        except HubError as e:
            if e.status == 404:
                return False
            raise


def _message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
        # JupyterHub quotes some messages (str() of a KeyError): show them bare.
        return str(body.get("message") or e.reason).strip('"')
    except ValueError:
        return str(e.reason)
