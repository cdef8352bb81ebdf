"""JupyterHub itself, with steps added at start: stale tokens and admins revoked
(revoke.py), spawns that waited in the GPU queue resumed, the REST handler
that stops servers told who asks (handlers.py), visitors kept (visitors.py), the
GPU report and metrics (gpu_report.py, metrics.py), and the appliance's own
services (services.py: culler, reclaimer, dashboard) on the hub's event loop."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys

from jupyterhub.app import JupyterHub
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from traitlets import Dict, Float, Integer, Unicode, default

from .. import daemon_client as client
from .. import held_ports, protocol
from ..groups import STATE_DIR
from ..state import APPLCTL_SERVICE, APPLCTL_TOKEN, read_secret
from . import handlers, metrics, revoke, services, visitors
from .gpu_report import REPORT

# --- listening only on the ports systemd holds (held_ports.py) -----------------------
# JupyterHub binds its port deep inside start(), and the metrics server and the GPU
# dashboard (services.py) bind theirs: each listen() on an address systemd holds
# for the hub takes that socket instead. hub_launcher has checked that every address
# appliance.toml asks for is held, so nothing here binds a port of its own.

def _listen_on_held(self: HTTPServer, port: int, address: str | None = None, **kwargs) -> None:
    held = held_ports.find((address or "", port))
    if held is None:
        raise held_ports.HeldPortError(f"{address}:{port} is not held for the hub by {held_ports.HUB_SOCKET}")
    self.add_socket(held)


HTTPServer.listen = _listen_on_held


class ApplianceHub(JupyterHub):
    ephemeral_mode = Dict(help="appliance.toml [ephemeral] in ephemeral mode, else empty").tag(config=True)
    metrics_access = Unicode("loopback", help="[metrics] access: loopback, token or off").tag(config=True)
    metrics_port = Integer(9445, help="[hub] metrics_port, on loopback").tag(config=True)
    gpu_report_interval = Integer(10, help="seconds between reads of the daemon's GPU report").tag(config=True)
    # The own services' settings (configurer.py); empty or 0: that service is off.
    culler = Dict(help="[culler] settings of the idle culler").tag(config=True)
    reclaim_interval = Float(0, help="seconds between the gpu-reclaimer's looks").tag(config=True)
    dashboard_interval = Float(0, help="seconds between the GPU dashboard's samples").tag(config=True)

    @default("log")
    def _log_default(self):
        # Log as "JupyterHub", as administrators and their log filters know it.
        log = logging.getLogger("JupyterHub")
        log.propagate = False
        return log

    def get_default_logging_config(self):
        # traitlets gives its console handler to the logger named after the class;
        # without this, "JupyterHub" had none and Python's last resort printed only
        # warnings: no INFO line (requests, spawns) reached the journal.
        config = super().get_default_logging_config()
        config["loggers"]["JupyterHub"] = config["loggers"].pop(type(self).__name__)
        return config

    async def init_users(self):
        try:
            token = read_secret(f"{STATE_DIR}/{APPLCTL_TOKEN}")
        except OSError:
            token = None
        current = {spec["name"]: spec.get("api_token") for spec in self.services}
        current[APPLCTL_SERVICE] = token
        for line in revoke.revoke(self.db, current):
            self.log.warning("jupyterhub-appliance: %s", line)
        self._applctl_token = token
        await super().init_users()

    def init_handlers(self):
        super().init_handlers()
        # Stops through the REST API say who asked (handlers.py).
        self.handlers = handlers.substitute(self.handlers, self.metrics_access)

    async def init_spawners(self):
        # A spawn that waited in the daemon's GPU queue when the hub stopped looks to
        # JupyterHub like a server that died while the hub was down: it forgets it
        # (without stopping anything, since nothing runs). start() then asks for the
        # same server again, which finds the same place in the daemon's queue.
        self._resume: dict[str, dict] = {}
        try:
            queue = protocol.GpuReport.read(await client.call({"op": "gpus"}, timeout=30)).queue
        except client.DaemonError as e:
            self.log.warning("jupyterhub-appliance: cannot read the GPU queue: %s", e)
            queue = []
        for entry in queue:
            try:
                spawner = self.users[entry["user"]].spawner
            except KeyError:
                continue
            if spawner.server is not None:
                self._resume[entry["user"]] = dict(spawner.user_options or {})
        return await super().init_spawners()  # JupyterHub logs the count it returns

    async def start(self):
        await super().start()
        # hub_launcher turned cyclic garbage collection off for the start-up. What the
        # start made lives as long as the hub: keep it out of every later collection.
        # (A collection here would free a few thousand objects and block the hub
        # for a tenth of a second.)
        if not gc.isenabled():
            gc.freeze()
            gc.enable()
        # The home page's own-GPU line and the metrics read the report; keep it fresh.
        self._gpu_report = asyncio.ensure_future(REPORT.refresh_forever(self.gpu_report_interval))
        if self.metrics_access != "off":
            metrics.register()
        if self.metrics_access == "loopback":
            metrics.serve_loopback(self.metrics_port)
            self.log.info("jupyterhub-appliance: metrics at http://127.0.0.1:%d/metrics", self.metrics_port)
        self._visitor_keeper = asyncio.ensure_future(
            visitors.VisitorKeeper(self, self._applctl_token, self.ephemeral_mode).run())
        if self._resume:
            asyncio.ensure_future(self._resume_queued(self._resume))
        self._own_services = services.start(self, self.culler, self.reclaim_interval)

    async def start_service(self, service_name, service, ssl_context=None):
        # The GPU dashboard runs in this process: it must serve before JupyterHub
        # checks that it answers, or JupyterHub waits for it and warns.
        sampling = services.serve_dashboard(self, service, self.dashboard_interval)
        if sampling is not None:
            self._dashboard_sampling = sampling
        return await super().start_service(service_name, service, ssl_context)

    async def cleanup(self):
        # JupyterHub stops its managed services (those jupyterhub_config.d adds) one
        # after another, each with SIGINT and a poll that backs off from 0.1 s: about
        # 0.3 s each, a second in all (measured), before the hub can exit and the next
        # one start. All at once first; its own loop then finds them stopped.
        managed = [s for s in self._service_map.values() if s.managed]
        for service, outcome in zip(managed, await asyncio.gather(*(s.stop() for s in managed),
                                                                  return_exceptions=True), strict=True):
            if isinstance(outcome, Exception):
                self.log.warning("jupyterhub-appliance: stopping service %s: %s", service.name, outcome)
        await super().cleanup()

    async def _resume_queued(self, waiting: dict[str, dict]) -> None:
        """Ask again, through the hub's own REST API as a browser's spawn would, for
        the servers that waited in the GPU queue; they keep their places."""
        http = AsyncHTTPClient()
        for name, options in waiting.items():
            req = HTTPRequest(f"{self.hub.url}api/users/{name}/server", method="POST", body=json.dumps(options),
                              headers={"Authorization": f"token {self._applctl_token}"})
            try:
                await http.fetch(req)
                self.log.info("jupyterhub-appliance: %s's spawn waits in the GPU queue again", name)
            except (HTTPClientError, OSError) as e:
                self.log.warning("jupyterhub-appliance: could not resume %s's queued spawn: %s", name, e)


def main() -> None:
    ApplianceHub.launch_instance()
    # Here only after a clean stop (a failed start raises SystemExit): services
    # stopped, database committed, servers and proxy left running. Python's own
    # teardown of the hub's heap took another half second (measured), with the hub's
    # port held but unanswered and the next hub not yet started: skip it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
