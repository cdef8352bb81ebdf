"""The hub's spawner: SystemdSpawner's configuration, started through the root daemon.

The hub runs unprivileged, so it cannot call systemd itself. It sends the daemon
what only the hub knows (the server's environment, the traits an administrator set)
and the daemon decides the rest: unit name, command, user, sandboxing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import random_port
from systemdspawner import SystemdSpawner
from traitlets import Bool, Dict, Integer, Unicode, default

from .. import daemon_client as client
from .. import ephemeral, limits, protocol, users
from ..gpu.allocator import quota_for
from ..groups import PYTHON, UNIT_SLICE
from . import metrics, provider_groups, spawn_form, stop_reasons

# SystemdSpawner's options that this appliance fixes, with the value it always
# applies and why. Another value is refused at spawn time rather than ignored.
FIXED_OPTIONS = {
    "isolate_tmp": (True, "every server has a private /tmp"),
    "isolate_devices": (True, "every server's devices are closed (DevicePolicy=closed) but for its own GPUs"),
    "disable_user_sudo": (True, "every server runs with NoNewPrivileges"),
    "dynamic_users": (False, "servers run as the person's own account"),
    "slice": (UNIT_SLICE, "servers run in jupyter-users.slice"),
    "user_workingdir": (None, "servers start in the person's home"),
    "username_template": ("{USERNAME}", "the hub user name is the account name"),
    "unit_name_template": ("jupyter-{USERNAME}", "the root daemon names the unit jupyter-NAME.service"),
    "default_shell": ("/bin/bash", "terminals use /bin/bash"),
    "extra_paths": ([], "add Python environments with: applctl kernels add"),
}


# How often a spawn waiting in the GPU queue asks the daemon again (and so how soon
# it sees a freed GPU and a new place). The daemon drops a place not asked about
# for gpu_queue.GRACE seconds.
QUEUE_ASK_INTERVAL = 1.0


def spawn_error(message: str, reason: str = "error") -> SpawnException:
    """A spawn failure that JupyterHub shows the user as it is, without a traceback."""
    e = SpawnException(message, reason=reason, status_code=503 if reason == "capacity" else 400)
    e.jupyterhub_message = message  # the words alone, not "400 SpawnException(...)"
    return e


class ApplianceSpawner(SystemdSpawner):
    daemon_socket = Unicode(client.DAEMON_SOCKET, help="path of the appliance daemon's socket").tag(config=True)
    gpu_config = Dict(help="appliance.toml [gpu]: quotas, the queue, reclaim").tag(config=True)
    profiles = Dict(help="appliance.toml [profiles.NAME] tables, in order").tag(config=True)
    culler = Dict(help="appliance.toml [culler], to word its stops").tag(config=True)
    limits_config = Dict(help="appliance.toml [limits], to show them on the form (the daemon applies them)"
                         ).tag(config=True)
    sso_groups = Bool(False, help="single sign-on: the provider's groups count for the quota and [limits]"
                      ).tag(config=True)
    ephemeral_mode = Dict(help="appliance.toml [ephemeral] in ephemeral mode, else empty").tag(config=True)
    activity_interval = Integer(300, help="seconds between the server's activity reports to the hub").tag(config=True)

    @default("isolate_tmp")
    def _fixed_isolate_tmp(self):
        return True

    @default("isolate_devices")
    def _fixed_isolate_devices(self):
        return True

    @default("slice")
    def _fixed_slice(self):
        return UNIT_SLICE

    @default("unit_name_template")
    def _fixed_unit_name_template(self):
        return "jupyter-{USERNAME}"

    @default("default_shell")
    def _fixed_default_shell(self):
        return "/bin/bash"

    def unsupported_options(self) -> list[str]:
        """SystemdSpawner settings the administrator changed, which this appliance cannot honour."""
        return [f"SystemdSpawner.{name} = {getattr(self, name)!r} ({why})"
                for name, (value, why) in FIXED_OPTIONS.items() if getattr(self, name) != value]

    @default("options_form")
    def _default_options_form(self):
        return ApplianceSpawner._render_form  # JupyterHub calls it with the spawner

    async def groups(self) -> list[str]:
        """The user's groups, looked up now (a group change counts at the next spawn)
        and in a thread: through sssd or LDAP a lookup can take seconds, which on
        the event loop would hold up every other login and spawn. Under single
        sign-on, with the provider's groups of the last login (provider_groups.py)."""
        local = await asyncio.to_thread(users.groups_of, self.user.name)
        return local + await asyncio.to_thread(self.provider_groups) if self.sso_groups else local

    def provider_groups(self) -> list[str]:
        return provider_groups.of(self.user.name) if self.sso_groups else []

    def quota(self, groups: list[str]) -> int:
        q = self.gpu_config
        return quota_for(self.user.name, groups, q.get("quota", 1), q.get("quota_groups", {}),
                         q.get("quota_users", {}))

    async def _render_form(self) -> str:
        try:
            summary = spawn_form.GpuSummary.from_daemon(
                protocol.GpuReport.read(await client.call({"op": "gpus"}, self.daemon_socket, 30)))
        except client.DaemonError as e:
            self.log.warning("no GPU summary for the form: %s", e)
            summary = spawn_form.GpuSummary(False, 0, 0, str(e))
        q = self.gpu_config
        minutes = max(1, q.get("queue_timeout", 1800) // 60) if q.get("queue", True) else None
        groups = await self.groups()
        return spawn_form.render(summary, self.quota(groups), self.profiles, minutes,
                                 lambda profile: limits.for_user(self.limits_config, self.user.name, groups, profile))

    async def options_from_form(self, formdata):  # JupyterHub awaits it (maybe_future)
        groups = await self.groups()
        try:
            options = spawn_form.parse(formdata, self.profiles)
            spawn_form.resolve(options, self.quota(groups), self.profiles)  # refuse now, on the form
        except spawn_form.FormError as e:
            raise spawn_error(str(e), reason="invalid_options") from None
        return options

    def get_state(self):
        state = super().get_state()
        state["gpus"] = list(self.gpu_uuids)
        if self.last_stop is not None:
            state["last_stop"] = self.last_stop.to_dict()
        return state

    def load_state(self, state):
        super().load_state(state)
        self.gpu_uuids = tuple(state.get("gpus", ()))
        self.last_stop = stop_reasons.StopReason.from_dict(state.get("last_stop"))

    def clear_state(self):
        super().clear_state()
        self.gpu_uuids = ()  # last_stop stays: it is for after the stop

    @property
    def last_stop_message(self) -> str:
        """For the home page: why the server stopped, if its owner did not ask."""
        return self.last_stop.message() if self.last_stop is not None else ""

    def _record_stop(self, why: stop_reasons.StopReason | None) -> None:
        # JupyterHub polls again while it cleans up: one record per run (start() clears it).
        if why is not None and (self.last_stop is None or self.last_stop.reason != why.reason):
            self.last_stop = why
            stop_reasons.log(self.log, self.user.name, why)
            metrics.STOPS.labels(why.reason).inc()

    def record_stop(self, why: stop_reasons.StopReason) -> None:
        """The reason of a stop the hub decides itself (sso_sessions.py), before it stops."""
        self._record_stop(why)

    def get_env(self):
        env = super().get_env()
        # The server's activity reports, as often as the culler needs them.
        env["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(self.activity_interval)
        return env

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unit_name = users.unit_name(self.user.name)  # the daemon derives the same
        self._events: list[dict] = []
        self._spawning = False
        self.gpu_uuids: tuple[str, ...] = ()
        self._in_queue = False  # a spawn waits in the daemon's GPU queue
        self._stop_asked = False
        self.last_stop: stop_reasons.StopReason | None = None
        # (kind, name, admin) of who asked for the next stop, from handlers.py
        self.stop_requester: tuple[str, str, bool] | None = None
        self._restarting: asyncio.Future | None = None  # _restart_on_new_python

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

    def _request(self, choice: dict) -> dict:
        extra = {}
        for key, value in self.unit_extra_properties.items():
            try:
                extra[key] = int(self._expand_user_vars(str(value)))
            except ValueError:
                raise spawn_error(f"unit_extra_properties {key}={value!r} must be a whole number") from None
        try:
            options = protocol.parse_args([self._expand_user_vars(a) for a in self.get_args()])
        except ValueError as e:
            raise spawn_error(f"This hub's Spawner.args cannot be used: {e}. An administrator must change "
                             "it in /etc/jupyterhub/jupyterhub_config.d/.") from None
        return protocol.spawn_request(
            self.user.name, env=self.get_env(), options=options, profile=choice["profile"], gpus=choice["gpus"],
            cpu_fallback=choice["cpu_fallback"], mem_limit=self.mem_limit, cpu_limit=self.cpu_limit,
            readonly_paths=[self._expand_user_vars(p) for p in self.readonly_paths or []],
            readwrite_paths=[self._expand_user_vars(p) for p in self.readwrite_paths or []], extra=extra,
            provider_groups=self.provider_groups())

    async def start(self):
        try:
            address = await self._start()
        except SpawnException as e:
            metrics.SPAWN_FAILURES.labels(getattr(e, "reason", None) or "error").inc()
            raise
        except asyncio.CancelledError:  # the stop button, or the hub shutting down
            metrics.SPAWN_FAILURES.labels("cancelled").inc()
            raise
        except Exception:
            metrics.SPAWN_FAILURES.labels("error").inc()
            raise
        metrics.SPAWNS.inc()
        return address

    async def _start(self):
        self._events = []
        self._spawning = True
        try:
            if self.name:
                raise spawn_error("Named servers are not supported by this appliance: use your default server.")
            unsupported = self.unsupported_options()
            if unsupported:
                raise spawn_error("This hub's configuration sets what the appliance does not support: "
                                 + "; ".join(unsupported) + ". An administrator must remove it from "
                                 "/etc/jupyterhub/jupyterhub_config.d/.")
            try:
                users.check_name(self.user.name)
            except users.UserError as e:
                raise spawn_error(str(e)) from None
            try:
                choice = self._visitor_choice() or spawn_form.resolve(
                    self.user_options or {}, self.quota(await self.groups()), self.profiles)
            except spawn_form.FormError as e:
                raise spawn_error(str(e), reason="invalid_options") from None
            self.port = random_port()
            self._event(f"Asking the appliance for your server with {choice['gpus']} GPU(s)", 10)
            reply = await self._ask_until_started(self._request(choice))
            self.unit_name = reply["unit"]
            # The port systemd holds for the server: another than ours if ours was taken.
            self.port = int(reply.get("port") or self.port)
            self.gpu_uuids = tuple(reply.get("gpus", ()))
            if self.gpu_uuids:
                self._event(f"Assigned GPUs: {', '.join(self.gpu_uuids)}", 40)
            elif choice["gpus"]:
                self._event("No GPU was free: starting CPU-only, as you asked", 40)
            self.last_stop = None  # a new run: the last stop's reason is no news any more
            self._event(f"Server unit {self.unit_name} is running; waiting for JupyterLab to answer", 60)
            await self._wait_listening()
            return (self.ip or "127.0.0.1", self.port)
        finally:
            self._spawning = False

    def _visitor_choice(self) -> dict | None:
        """A visitor gets what [ephemeral] says, with no form: CPU-only if no GPU is free."""
        if not ephemeral.is_visitor(self.user.name):
            return None
        if not self.ephemeral_mode:
            raise spawn_error("This hub is not in ephemeral mode any more: visitors get no server.")
        return {"gpus": self.ephemeral_mode["gpus"], "cpu_fallback": True, "profile": None}

    async def _ask_until_started(self, request: dict) -> dict:
        """The daemon's answer to the spawn request; while the answer is a place in
        the GPU queue, show it and ask again. The place is the daemon's: asking
        again (from this hub or, after a restart, the next) keeps it.

        JupyterHub's stop button cancels start(), then calls poll() and, only if
        that says running, stop(). So poll() says running while the spawn waits
        (or was cancelled while waiting), and stop() leaves the queue."""
        shown = None
        self._stop_asked = False
        cancelled = False
        try:
            while True:
                try:
                    reply = await client.call(request, self.daemon_socket, timeout=self.start_timeout)
                except client.DaemonError as e:
                    self.log.warning("spawn of %s refused by the daemon: %s (%s)", self.user.name, e, e.code)
                    if e.code in protocol.FOR_THE_PERSON:
                        raise spawn_error(str(e), reason=e.code) from None
                    raise spawn_error(f"Your server could not be started: {e}", reason=e.code) from None
                if not reply.get("queued"):
                    self._in_queue = False
                    if self._stop_asked:  # started just as the person gave up
                        await client.call({"op": "stop", "user": self.user.name}, self.daemon_socket)
                        raise spawn_error("You left the GPU queue.", reason="cancelled")
                    return reply
                self._in_queue = True
                if self._stop_asked:
                    raise spawn_error("You left the GPU queue.", reason="cancelled")
                place = (f"Waiting for a GPU: you are number {reply['position']} in the queue "
                         f"({reply['in_use']} of {reply['total']} {reply.get('what', 'GPUs')} in use)")
                if place != shown:
                    self._event(place, 20)
                    shown = place
                await asyncio.sleep(QUEUE_ASK_INTERVAL)
        except asyncio.CancelledError:
            # JupyterHub cancels start() both for the stop button and when the hub
            # shuts down. Still "in the queue", so the stop that JupyterHub makes next
            # (poll says running) leaves it, and at shutdown the daemon keeps the
            # place for the next hub.
            cancelled = True
            raise
        finally:
            if self._in_queue and not cancelled:
                self._in_queue = False
                # However the wait ended (stop, JupyterHub's start_timeout, an error),
                # the place must not outlive it: a later grant would start a server
                # nobody waits for.
                try:
                    await client.call({"op": "stop", "user": self.user.name}, self.daemon_socket)
                except client.DaemonError as e:
                    self.log.warning("could not take %s out of the GPU queue: %s", self.user.name, e)

    async def _wait_listening(self) -> None:
        """Until the server answers HTTP, checking its unit every second.

        Its port is held by systemd from before the server starts (its socket unit),
        so the kernel accepts a connection at once: only an answer says JupyterLab
        serves. A request waits in the socket's backlog and is answered the moment
        the server accepts, so this hands JupyterHub a server that answers its
        first try (JupyterHub's own wait backs off to seconds between tries). Gives
        up quietly (JupyterHub then waits its own way) after http_timeout. A unit
        that ended is a failed spawn at once: JupyterHub would wait out
        http_timeout for it and then say only that it did not answer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline:
            try:
                if await asyncio.wait_for(self._answers(), timeout=1.0):
                    return
            except (asyncio.TimeoutError, OSError):
                pass
            if await self.poll() is not None:
                why = self.last_stop.text if self.last_stop is not None else "it exited"
                raise spawn_error(f"Your server stopped while starting: {why}. An administrator can see "
                                 f"why with: sudo applctl logs --user {self.user.name}", reason="crashed")

    async def _answers(self) -> bool:
        """Whether the server answers a request for its API with an HTTP status line."""
        reader, writer = await asyncio.open_connection(self.ip or "127.0.0.1", self.port)
        try:
            writer.write(f"GET {self.server.base_url}api HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            return (await reader.readline()).startswith(b"HTTP/")
        finally:
            writer.close()

    async def stop(self, now=False):
        self._stop_asked = True  # ends a wait in the GPU queue (_ask_until_started)
        self._in_queue = False
        requester, self.stop_requester = self.stop_requester, None
        await client.call({"op": "stop", "user": self.user.name}, self.daemon_socket)
        if requester is not None:
            started = self.orm_spawner.started if self.orm_spawner is not None else None
            age = (datetime.now(timezone.utc) - started.replace(tzinfo=timezone.utc)).total_seconds() \
                if started else None
            self._record_stop(stop_reasons.by_request(*requester, owner=self.user.name, now=time.time(),
                                                      server_age=age, culler=self.culler, gpu=self.gpu_config))

    async def poll(self):
        if self._in_queue:
            return None  # waiting for a GPU: "running", so that JupyterHub's stop calls stop()
        try:
            reply = await client.call({"op": "status", "user": self.user.name}, self.daemon_socket, timeout=30)
        except client.DaemonError as e:
            if e.code in ("unavailable", "busy"):
                # Do not declare a server dead because the daemon is restarting or flooded.
                self.log.warning("cannot poll %s: %s", self.user.name, e)
                return None
            raise
        if reply["state"] in ("active", "activating", "reloading"):
            ran = reply.get("python")
            if ran and ran != PYTHON and self._restarting is None:
                self._restarting = asyncio.ensure_future(self._restart_on_new_python(ran))
            return None
        # Ended on its own (out of memory, a crash) or stopped outside the hub.
        self._record_stop(stop_reasons.by_unit(reply, time.time()))
        return (reply.get("exit_code") or 1) if reply["state"] == "failed" else 0

    async def _restart_on_new_python(self, ran: str) -> None:
        """Restart a server that a Debian upgrade left on the old Python: its unit
        runs python3.11 from an environment that now holds 3.13's files, so a new
        kernel or any module not yet imported fails. Stopped and started again with
        the options it had, as the stop and start buttons do, once the hub has
        started (the hub's first poll of every server comes before that), and the
        reason kept for the home page."""
        from jupyterhub.app import JupyterHub  # the running hub, for its proxy

        app = JupyterHub.instance()
        why = stop_reasons.python_upgrade(ran, PYTHON, time.time())
        try:
            await app._start_future  # JupyterHub's own "started" (no public hook)
            options = dict(self.user_options or {})
            stop_reasons.log(self.log, self.user.name, why)
            metrics.STOPS.labels(why.reason).inc()
            self.last_stop = why  # kept in the database by the stop, for the next Spawner
            if self.server is not None:  # the hub's startup check may have ended it already
                await app.proxy.delete_user(self.user, self.name)
                await self.user.stop(self.name)
            await self.user.spawn(self.name, options=options)
        except Exception:
            self.log.exception("could not restart %s's server on Python %s", self.user.name, PYTHON)
            why = stop_reasons.python_upgrade(ran, PYTHON, why.time, restarted=False)
        else:
            try:
                await app.proxy.add_user(self.user, self.name)
            except Exception:  # not fatal: JupyterHub's check of the routes adds a missing one
                self.log.exception("could not add %s's restarted server to the proxy", self.user.name)
        finally:
            # JupyterHub makes a new Spawner after a stop (this one is done), and its
            # start cleared the reason: the home page reads it from that one.
            spawner = self.user.spawners[self.name]
            spawner.last_stop = why
            spawner.orm_spawner.state = spawner.get_state()
            self.user.db.commit()
            self._restarting = None
