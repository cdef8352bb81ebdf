"""The hub's spawner: SystemdSpawner's configuration, started through the root daemon.

The hub runs unprivileged, so it cannot call systemd itself. It sends the daemon
what only the hub knows (the server's environment, the traits an administrator set)
and the daemon decides the rest: unit name, command, user, sandboxing.
"""

from __future__ import annotations

import asyncio

from jupyterhub.utils import random_port
from systemdspawner import SystemdSpawner
from traitlets import Unicode

from . import users
from .daemon import client


class SpawnError(Exception):
    """A spawn failure whose message JupyterHub shows the user as it is."""

    def __init__(self, message: str, reason: str = "error"):
        super().__init__(message)
        self.jupyterhub_message = message
        self.reason = reason


class ApplianceSpawner(SystemdSpawner):
    daemon_socket = Unicode(client.DAEMON_SOCKET, help="path of the appliance daemon's socket").tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unit_name = f"jupyter-{self.user.name}.service"  # the daemon derives the same
        self._events: list[dict] = []
        self._spawning = False

    def _event(self, message: str, progress: int) -> None:
        self.log.info("spawn %s: %s", self.user.name, message)
        self._events.append({"progress": progress, "message": message})

    async def progress(self):
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if not self._spawning:
                return
            await asyncio.sleep(0.1)

    def _request(self) -> dict:
        extra = {}
        for key, value in self.unit_extra_properties.items():
            try:
                extra[key] = int(self._expand_user_vars(str(value)))
            except ValueError:
                raise SpawnError(f"unit_extra_properties {key}={value!r} must be a whole number") from None
        return {
            "op": "spawn",
            "user": self.user.name,
            "env": self.get_env(),
            "args": [self._expand_user_vars(a) for a in self.get_args()],
            "mem_limit": self.mem_limit,
            "cpu_limit": self.cpu_limit,
            "readonly_paths": [self._expand_user_vars(p) for p in self.readonly_paths or []],
            "readwrite_paths": [self._expand_user_vars(p) for p in self.readwrite_paths or []],
            "extra": extra,
        }

    async def start(self):
        self._events = []
        self._spawning = True
        try:
            if self.name:
                raise SpawnError("Named servers are not supported by this appliance: use your default server.")
            try:
                users.check_name(self.user.name)
            except users.UserError as e:
                raise SpawnError(str(e)) from None
            self.port = random_port()
            self._event("Asking the appliance for your server", 10)
            try:
                reply = await client.call(self._request(), self.daemon_socket, timeout=self.start_timeout)
            except client.DaemonError as e:
                self.log.warning("spawn of %s refused by the daemon: %s (%s)", self.user.name, e, e.code)
                raise SpawnError(f"Your server could not be started: {e}", reason=e.code) from None
            self.unit_name = reply["unit"]
            self._event(f"Server unit {self.unit_name} is running; waiting for JupyterLab to answer", 60)
            return (self.ip or "127.0.0.1", self.port)
        finally:
            self._spawning = False

    async def stop(self, now=False):
        await client.call({"op": "stop", "user": self.user.name}, self.daemon_socket)

    async def poll(self):
        try:
            reply = await client.call({"op": "status", "user": self.user.name}, self.daemon_socket, timeout=30)
        except client.DaemonError as e:
            if e.code == "unavailable":
                # Do not declare a server dead because the daemon is restarting.
                self.log.warning("cannot poll %s: %s", self.user.name, e)
                return None
            raise
        return None if reply["state"] in ("active", "activating", "reloading") else 0
