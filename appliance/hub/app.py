"""JupyterHub itself, with steps added at start: stale tokens and admins revoked
(revoke.py), spawns that waited in the GPU queue resumed, the REST handler
that stops servers told who asks (handlers.py), and visitors kept (visitors.py)."""

from __future__ import annotations

import asyncio
import json
import logging

from jupyterhub.app import JupyterHub
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Dict, default

from .. import daemon_client as client

from ..groups import STATE_DIR
from ..state import APPLCTL_TOKEN, read_secret
from . import handlers, revoke, visitors
from .configurer import APPLCTL_SERVICE


class ApplianceHub(JupyterHub):
    ephemeral_mode = Dict(help="appliance.toml [ephemeral] in ephemeral mode, else empty").tag(config=True)

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
        for line in revoke.revoke(self.db, APPLCTL_SERVICE, token):
            self.log.warning("jupyterhub-appliance: %s", line)
        self._applctl_token = token
        await super().init_users()

    def init_handlers(self):
        super().init_handlers()
        # Stops through the REST API say who asked (handlers.py).
        self.handlers = handlers.substitute(self.handlers)

    async def init_spawners(self):
        # A spawn that waited in the daemon's GPU queue when the hub stopped looks to
        # JupyterHub like a server that died while the hub was down: it forgets it
        # (without stopping anything, since nothing runs). start() then asks for the
        # same server again, which finds the same place in the daemon's queue.
        self._resume: dict[str, dict] = {}
        try:
            queue = (await client.call({"op": "gpus"}, timeout=30)).get("queue", [])
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
        self._visitor_keeper = asyncio.ensure_future(
            visitors.VisitorKeeper(self, self._applctl_token, self.ephemeral_mode).run())
        if self._resume:
            asyncio.ensure_future(self._resume_queued(self._resume))

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


main = ApplianceHub.launch_instance

if __name__ == "__main__":
    main()
