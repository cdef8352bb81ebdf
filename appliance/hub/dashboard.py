"""The GPU dashboard: a hub service at /services/gpus/, for hub admins only.

It shows each GPU (memory, utilization, temperature, power), who holds it and since
when, how long it has been idle, the GPU queue, every server with its memory, and
the last hour of utilization per GPU, which it samples itself (the daemon keeps
only the present). The page (templates/dashboard.html) reads api/status every few
seconds. Everything comes from the daemon, asked as the hub's uid, so the service
needs no scope of the hub's API; JupyterHub OAuth only says who is looking. It
runs on the hub's event loop (services.py) on its own loopback port, with the OAuth
client and token of its own service.
"""

from __future__ import annotations

import asyncio
import collections
import html
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from .. import daemon_client as client
from ..protocol import GpuReport

log = logging.getLogger("JupyterHub.gpu-dashboard")

HISTORY_SECONDS = 3600
PAGE = Path(__file__).parent / "templates" / "dashboard.html"
_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z-]{1,80}")


class BadQuery(ValueError):
    """A query parameter the API does not accept; the message says what it does."""


class History:
    """The last hour of utilization samples per GPU UUID: (epoch seconds, percent)."""

    def __init__(self, interval: float):
        self.interval = interval
        self.samples: dict[str, collections.deque] = {}
        self._maxlen = max(2, int(HISTORY_SECONDS / interval) + 1)

    def add(self, report: GpuReport, now: float) -> None:
        for g in report.gpus:
            if g.get("utilization") is not None:
                self.samples.setdefault(g["uuid"], collections.deque(maxlen=self._maxlen)).append(
                    (round(now, 1), g["utilization"]))

    def since(self, uuid: str, start: float) -> list[tuple[float, int]]:
        return [s for s in self.samples.get(uuid, ()) if s[0] >= start]

    async def sample_forever(self) -> None:
        while True:
            try:
                self.add(GpuReport.read(await client.call({"op": "gpus"}, timeout=30)), time.time())
            except client.DaemonError as e:
                log.warning("no utilization sample: %s", e)
            await asyncio.sleep(self.interval)


def parse_query(args: dict[str, list[bytes]]) -> dict:
    """api/status?history=MINUTES&gpu=UUID -> checked values, or BadQuery."""
    accepted = "history (minutes of utilization history, 0 to 60) and gpu (a GPU's UUID)"
    out: dict = {"history": 60, "gpu": None}
    for name, values in args.items():
        if name not in out:
            raise BadQuery(f"unknown parameter {name[:40]!r}; accepted: {accepted}")
        if len(values) != 1:
            raise BadQuery(f"{name} given {len(values)} times; give it once")
        text = values[0].decode("utf-8", "replace")
        if name == "history":
            if not text.isascii() or not text.isdigit() or int(text) > 60:
                raise BadQuery(f"history={text[:40]!r} is not accepted: a whole number of minutes from 0 to 60")
            out["history"] = int(text)
        else:
            if not _UUID.fullmatch(text):
                raise BadQuery(f"gpu={text[:40]!r} is not accepted: a GPU's UUID, such as GPU-5f0b1c2d-...")
            out["gpu"] = text
    return out


def status(report: GpuReport, servers: list[dict], history: History, query: dict, now: float) -> dict:
    """The API's answer: the daemon's report, filtered and with history added."""
    gpus = report.gpus
    if query["gpu"] is not None:
        gpus = [g for g in gpus if g["uuid"] == query["gpu"]]
        if not gpus:
            raise BadQuery(f"gpu={query['gpu']!r} is not accepted: no GPU on this machine has that UUID")
    start = now - query["history"] * 60
    keys = ("index", "uuid", "name", "memory_used", "memory_total", "utilization", "temperature", "power_watts",
            "holder", "holders", "seats", "profile", "held_since", "idle_seconds", "starting", "mig_enabled")
    return {
        "time": now,
        "available": report.available,
        "reason": report.reason,
        "driver_version": report.driver_version,
        "gpus": [{k: g.get(k) for k in keys} | {"history": history.since(g["uuid"], start) if query["history"] else []}
                 for g in gpus],
        "unusable": report.unusable,
        "queue": report.queue,
        "servers": [{k: s.get(k) for k in ("user", "state", "gpus", "memory", "since")} for s in servers],
    }


class InHubAuth:
    """The dashboard's HubOAuth comes from the hub (serve), not from a service's
    environment variables, which the hub's process does not have."""

    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


class CallbackHandler(InHubAuth, HubOAuthCallbackHandler):
    pass


class AdminOnly(InHubAuth, HubOAuthenticated, web.RequestHandler):
    def admin(self) -> dict:
        user = self.current_user
        if not user.get("admin"):
            raise web.HTTPError(403, f"{user.get('name')} is not a hub admin; the GPU dashboard is for admins")
        return user

    def write_error(self, status_code: int, **kwargs) -> None:
        e = kwargs.get("exc_info", (None, None))[1]
        message = e.log_message if isinstance(e, web.HTTPError) and e.log_message else self._reason
        self.set_header("Content-Type", "application/json" if "/api/" in self.request.path else "text/plain")
        if "/api/" in self.request.path:
            self.finish({"status": status_code, "message": message})
        else:
            self.finish(f"{status_code}: {message}\n")


class PageHandler(AdminOnly):
    @web.authenticated
    def get(self):
        self.admin()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # JupyterHub's service auth wants the xsrf token on the page's own API calls
        # (a fetch is not a navigation); the page sends it back as X-XSRFToken.
        token = html.escape(self.xsrf_token.decode("ascii"), quote=True).encode()
        self.write(PAGE.read_bytes().replace(b"__XSRF_TOKEN__", token))


class StatusHandler(AdminOnly):
    @web.authenticated
    async def get(self):
        self.admin()
        try:
            query = parse_query(self.request.query_arguments)
        except BadQuery as e:
            raise web.HTTPError(400, str(e)) from None
        try:
            report = GpuReport.read(await client.call({"op": "gpus"}, timeout=30))
            servers = (await client.call({"op": "list"}, timeout=30)).get("servers", [])
        except client.DaemonError as e:
            raise web.HTTPError(503, f"the appliance daemon did not answer: {e}") from None
        try:
            answer = status(report, servers, self.settings["history"], query, time.time())
        except BadQuery as e:
            raise web.HTTPError(400, str(e)) from None
        self.set_header("Cache-Control", "no-store")
        self.finish(answer)


def make_app(prefix: str, history: History, hub_auth: HubOAuth) -> web.Application:
    auth = {"hub_auth": hub_auth}
    return web.Application([
        (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
        (prefix, PageHandler, auth),
        (prefix + "api/status", StatusHandler, auth),
        (prefix + "oauth_callback", CallbackHandler, auth),
    ], cookie_secret=os.urandom(32), history=history)


def serve(service, api_url: str, hub_prefix: str, interval: float) -> asyncio.Task:
    """Serve the dashboard for JupyterHub's Service `service` (its URL, prefix, OAuth
    client and token) on the hub's loop; the returned task samples utilization."""
    hub_auth = HubOAuth(api_token=service.api_token, api_url=api_url, hub_prefix=hub_prefix,
                        base_url=service.prefix, oauth_client_id=service.oauth_client_id,
                        oauth_redirect_uri=service.oauth_redirect_uri,
                        access_scopes={f"access:services!service={service.name}"})
    history = History(interval)
    url = urlparse(service.url)
    # The hub's HTTPServer.listen takes the socket systemd holds for it (app.py).
    make_app(service.prefix, history, hub_auth).listen(url.port, url.hostname)
    log.info("the GPU dashboard serves on %s", service.url)
    return asyncio.ensure_future(history.sample_forever())
