"""jupyterhub-appliance daemon: socket-activated, root, one JSON request per connection.

Peers are identified by SO_PEERCRED, never by anything they send: uid `jupyterhub`
may spawn, stop and ask for status; root may do everything. Every refusal is
answered with a structured error and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import socket
import struct
import sys

from .. import config, users
from ..gpu.allocator import CapacityError, QuotaError, check_request, quota_for
from ..groups import HUB_USER
from . import requests as rq
from . import units
from .gpus import GpuManager, minors_of
from .systemd import RUNNING_STATES, Systemd, SystemdError

log = logging.getLogger("jupyterhub-appliance")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class Daemon:
    def __init__(self, cfg: config.Config, hub_uid: int, systemd: Systemd | None = None):
        self.cfg = cfg
        self.hub_uid = hub_uid
        self.systemd = systemd or Systemd()
        self.gpus = GpuManager(self.systemd)
        # One spawn or stop per user at a time; different users proceed in parallel.
        self._user_locks: dict[str, asyncio.Lock] = {}

    def _lock(self, user: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user, asyncio.Lock())

    async def handle(self, req: object, uid: int) -> dict:
        op = rq.check_op(req, uid, self.hub_uid)
        assert isinstance(req, dict)
        min_uid = self.cfg["daemon"]["min_uid"]
        if op == "list":
            return {"ok": True, "servers": await self.list_servers()}
        if op == "gpus":
            return {"ok": True, **await self.gpus.report()}
        if op == "spawn":
            spec = rq.check_spawn(req, min_uid)
            async with self._lock(spec.user):
                return await self.spawn(spec)
        # stop and status name a user only: no other field is accepted.
        extra = sorted(set(req) - {"op", "user"})
        if extra:
            raise rq.RequestError("invalid", f"unknown field {extra[0]!r} for {op}; accepted: op, user", extra[0])
        pw = self._known_user(req, min_uid)
        unit = users.unit_name(pw.pw_name)
        if op == "status":
            return {"ok": True, "unit": unit, "state": await self.systemd.active_state(unit),
                    "gpus": await self.unit_gpus(unit)}
        async with self._lock(pw.pw_name):
            return await self.stop(unit)

    @staticmethod
    def _known_user(req: dict, min_uid: int):
        # Stop and status must work for a user who was just removed from the group.
        try:
            return users.lookup(req.get("user"), min_uid)
        except users.UserError as e:
            raise rq.RequestError("invalid_user", str(e), "user") from None

    async def spawn(self, spec: rq.SpawnSpec) -> dict:
        unit = users.unit_name(spec.user)
        self.check_quota(spec)  # refuse before touching anything
        state = await self.systemd.active_state(unit)
        if state in RUNNING_STATES:
            # The hub asks for a spawn only when it believes no server runs: a
            # leftover unit (hub database lost, crash) is replaced, never shared.
            log.warning("%s is %s before spawn; stopping it first", unit, state)
            await self.stop(unit)
        await self.systemd.reset_failed(unit)
        # A stopped unit is unloaded asynchronously; starting a new one with the same
        # name before that answers UnitExists.
        await self.systemd.wait_unloaded(unit, 10)
        try:
            inv, spec.gpu_uuids = await self.gpus.assign(unit, spec.gpus, spec.gpu_fallback)
        except CapacityError as e:
            log.info("no GPU for %s: %s", spec.user, e)
            raise rq.RequestError("capacity", str(e), "gpus") from None
        spec.gpu_minors = tuple(inv.by_uuid(u).minor for u in spec.gpu_uuids)
        env_file = units.write_env_file(unit, units.server_env(spec, self.cfg["spawner"]["jupyterlab_news"]))
        try:
            job = await self.systemd.start_transient(unit, units.properties(unit, spec, env_file))
            state = await self.systemd.wait_for(unit, ("active", "failed", "inactive"), START_TIMEOUT, job)
        finally:
            env_file.unlink(missing_ok=True)
            self.gpus.started(unit)  # from now on the unit's DeviceAllow= is the record
        if state != "active":
            log.error("%s did not start: %s", unit, state)
            return {"ok": False, "error": rq.RequestError(
                "start_failed", f"the server unit {unit} did not start (state {state}); "
                f"see: journalctl -u {unit}").to_dict()}
        log.info("started %s for %s with GPUs [%s]", unit, spec.user, ", ".join(spec.gpu_uuids))
        return {"ok": True, "unit": unit, "state": state, "gpus": list(spec.gpu_uuids)}

    def check_quota(self, spec: rq.SpawnSpec) -> None:
        """The daemon enforces the quota itself: the hub's form is only a courtesy."""
        gpu = self.cfg["gpu"]
        quota = quota_for(spec.user, users.groups_of(spec.user), gpu["quota"], gpu["quota_groups"],
                          gpu["quota_users"])
        try:
            check_request(spec.gpus, quota)
        except QuotaError as e:
            raise rq.RequestError("quota", str(e), "gpus") from None

    async def unit_gpus(self, unit: str) -> list[str]:
        props = await self.systemd.unit_properties(unit, ("DeviceAllow",))
        if not props:
            return []
        inv = await self.gpus.inventory()
        by_minor = {g.minor: g.uuid for g in inv.gpus}
        return [by_minor.get(m, f"minor:{m}") for m in minors_of(props["DeviceAllow"])]

    async def stop(self, unit: str) -> dict:
        await self.systemd.stop(unit)
        state = await self.systemd.wait_for(unit, ("inactive", "failed"), STOP_TIMEOUT)
        await self.systemd.reset_failed(unit)
        (units.ENV_DIR / f"{unit}.env").unlink(missing_ok=True)
        log.info("stopped %s", unit)
        return {"ok": True, "unit": unit, "state": state}

    async def list_servers(self) -> list[dict]:
        inv = await self.gpus.inventory()
        held = await self.gpus.running(inv)
        return [{"unit": name, "user": users.user_of_unit(name), "state": state, "gpus": list(held.get(name, ()))}
                for name, state in await self.systemd.list_units("jupyter-*.service")
                if users.user_of_unit(name)]

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            if len(line) > rq.MAX_REQUEST or not line.endswith(b"\n"):
                raise rq.RequestError("invalid", f"a request is one JSON line of at most {rq.MAX_REQUEST} bytes")
            try:
                req = json.loads(line)
            except ValueError:
                raise rq.RequestError("invalid", "a request is one line of JSON") from None
            reply = await self.handle(req, uid)
        except rq.RequestError as e:
            log.warning("refused request from uid %d: %s", uid, e)
            reply = {"ok": False, "error": e.to_dict()}
        except (asyncio.TimeoutError, ValueError) as e:
            reply = {"ok": False, "error": {"code": "invalid", "field": None, "message": f"bad request: {e}"}}
        except SystemdError as e:
            log.error("systemd refused: %s", e)
            reply = {"ok": False, "error": {"code": "systemd", "field": None, "message": str(e)}}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def listening_socket() -> socket.socket:
    """The socket systemd passed us (socket activation), or a clear error."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit("jupyterhub-appliance-daemon: start it through jupyterhub-appliance.socket (no socket passed)")
    return socket.socket(fileno=3)


async def amain() -> None:
    cfg = config.exit_if_invalid("jupyterhub-appliance-daemon")
    try:
        hub_uid = pwd.getpwnam(HUB_USER).pw_uid
    except KeyError:
        sys.exit(f"jupyterhub-appliance-daemon: no user {HUB_USER}; is the package installed?")
    daemon = Daemon(cfg, hub_uid)
    server = await asyncio.start_unix_server(daemon.serve_connection, sock=listening_socket())
    inv = await daemon.gpus.inventory()
    held = await daemon.gpus.running(inv)
    log.info("jupyterhub-appliance daemon ready (hub uid %d, min uid %d); %s; held: %s", hub_uid,
             cfg["daemon"]["min_uid"],
             f"{len(inv.gpus)} GPUs, driver {inv.driver_version}" if inv.available else "CPU-only",
             ", ".join(f"{u}={list(g)}" for u, g in held.items()) or "none")
    async with server:
        await server.serve_forever()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    asyncio.run(amain())


if __name__ == "__main__":
    main()
