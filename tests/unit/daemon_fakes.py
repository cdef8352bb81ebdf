"""An in-process daemon on a real Unix socket, with systemd faked at the D-Bus call
level (so the real Systemd code, wait_for, list_units and its job filter, runs)."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbus_fast import Variant

from appliance import config, root_verdicts, users
from appliance.daemon import server, units
from appliance.daemon.gpus import GpuManager
from appliance.daemon.systemd import NO_SUCH_UNIT, Systemd, SystemdError
from appliance.gpu.inventory import GPU, Inventory

GPUS = tuple(GPU(index=i, minor=m, uuid=f"GPU-{i}", name="A100", memory_total=80, memory_free=80 - i,
                 memory_used=i, pci_bus_id=f"0:{i}", utilization=0, mig_enabled=False)
             for i, m in enumerate([2, 0, 3, 1]))
USER = "daemon"  # exists everywhere; uid 1, accepted with min_uid = 1


@dataclass
class FakeUnit:
    props: dict
    state: str = "inactive"
    job: int = 0  # a start job in the queue
    entered: int = 0  # ActiveEnterTimestamp, microseconds since the epoch; 0 = never active
    memory: int = 2**64 - 1  # MemoryCurrent: systemd's "no value" unless a test sets it


@dataclass
class FakeManager(Systemd):
    """systemd's manager as the daemon sees it over D-Bus. `start_mode` says what a
    start job does: "start" (active after `start_delay`), "queue" (stays queued
    until stopped), "fail" (the unit fails and is collected)."""

    start_mode: str = "start"
    start_delay: float = 0.0
    units: dict[str, FakeUnit] = field(default_factory=dict)
    on_start_unit: object = None  # what an installed unit's start does (a oneshot), given its name
    _jobs: int = 0

    def __post_init__(self):
        Systemd.__init__(self)

    async def _call(self, path, interface, member, signature="", body=None):
        await asyncio.sleep(0)  # a D-Bus round trip yields to other requests
        body = body or []
        if member == "StartTransientUnit":
            name, _mode, props, _aux = body
            if name in self.units:
                raise SystemdError("org.freedesktop.systemd1.UnitExists", f"Unit {name} was already loaded")
            self._jobs += 1
            unit = self.units[name] = FakeUnit(dict(props), job=self._jobs)
            asyncio.get_running_loop().create_task(self._run_job(name, unit, self._jobs))
            return [f"/org/freedesktop/systemd1/job/{self._jobs}"]
        if member == "StartUnit":
            if self.on_start_unit:
                self.on_start_unit(body[0])
            self._jobs += 1
            return [f"/org/freedesktop/systemd1/job/{self._jobs}"]  # done at once: a oneshot that ran
        if path.startswith("/org/freedesktop/systemd1/job/"):
            n = int(path.rsplit("/", 1)[1])
            if any(u.job == n for u in self.units.values()):
                return [Variant("s", "waiting")]
            raise SystemdError("org.freedesktop.DBus.Error.UnknownObject", "no such job")
        if member == "GetUnit":
            if body[0] not in self.units:
                raise SystemdError(NO_SUCH_UNIT, f"Unit {body[0]} not loaded.")
            return [f"/unit/{body[0]}"]
        if path.startswith("/unit/") and member == "Get":
            unit = self.units.get(path[len("/unit/"):])
            if unit is None:
                raise SystemdError("org.freedesktop.DBus.Error.UnknownObject", "gone")
            name = body[1]
            if name == "ActiveState":
                return [Variant("s", unit.state)]
            if name == "ActiveEnterTimestamp":
                return [Variant("t", unit.entered)]
            if name == "MemoryCurrent":
                return [Variant("t", unit.memory)]
            return [unit.props[name]]
        if member == "StopUnit":
            name = body[0]
            if name not in self.units:
                raise SystemdError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
            self.units[name].job = 0  # "replace" cancels a queued start
            self.units[name].state = "inactive"
            asyncio.get_running_loop().call_soon(self.units.pop, name, None)  # CollectMode=inactive-or-failed
            return []
        if member == "ResetFailedUnit":
            if body[0] not in self.units:
                raise SystemdError(NO_SUCH_UNIT, f"Unit {body[0]} not loaded.")
            return []
        if member == "ListUnitsByPatterns":
            states, (pattern,) = body
            return [[(n, "", "loaded", u.state, "", "", f"/unit/{n}", u.job, "start" if u.job else "", "/")
                     for n, u in self.units.items() if u.state in states and fnmatch.fnmatch(n, pattern)]]
        raise AssertionError(f"unexpected D-Bus call {member} on {path}")

    async def _run_job(self, name, unit, job):
        if self.start_mode == "queue":
            return
        await asyncio.sleep(self.start_delay)
        if self.units.get(name) is not unit or unit.job != job:
            return  # cancelled by a stop
        unit.job = 0
        if self.start_mode == "start":
            unit.state = "active"
            unit.entered = int(time.time() * 1e6)
        else:
            unit.state = "failed"
            await asyncio.sleep(0.01)
            self.units.pop(name, None)

    def gpus_of(self, name):
        rules = self.units[name].props["DeviceAllow"].value
        return sorted(p for p, _ in rules if p[len("/dev/nvidia"):].isdigit())


class DaemonThread:
    """A Daemon served on a Unix socket by an event loop in a thread; the test talks
    to it with plain blocking sockets."""

    def __init__(self, tmp: Path, systemd: FakeManager | None = None, **kw):
        self.dir = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: sun_path is 108 bytes
        self.path = str(self.dir / "s")
        self.systemd = systemd or FakeManager()
        cfg = config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 4}})
        self.daemon = server.Daemon(cfg, os.getuid(), self.systemd, **kw)
        self.daemon.spawns.gpus = GpuManager(self.systemd, inventory=lambda: Inventory(True, "550", GPUS))
        self.env_dir = tmp / "env"
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen()
        self.server = self.loop.run_until_complete(server.serve(self.daemon, sock))
        self._started.set()
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc):
        async def shut():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        os.unlink(self.path)
        os.rmdir(self.dir)

    def run(self, coro, timeout=30):
        """Run a coroutine on the daemon's loop (to look at its state safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)  # never reached unless the daemon hangs
        s.connect(self.path)
        return s

    def request(self, req: dict | bytes) -> dict:
        with self.connect() as s:
            s.sendall(req if isinstance(req, bytes) else json.dumps(req).encode() + b"\n")
            return json.loads(read_all(s))


def read_all(s: socket.socket) -> bytes:
    """Everything the daemon sends until it closes."""
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


class Everyone:
    def __contains__(self, name):
        return True


def patch_users(monkeypatch, tmp: Path):
    """USER may have a server (and root's sudo and polkit check cleared everyone);
    environment files go to a temporary directory."""
    monkeypatch.setattr(users, "is_member", lambda name, group: True)
    monkeypatch.setattr(root_verdicts, "read_verdicts", lambda path: {"checked": Everyone(), "granted": {}})
    monkeypatch.setattr(units, "ENV_DIR", tmp / "env")
    monkeypatch.setattr(units, "write_env_file",
                        functools.partial(units.write_env_file, env_dir=tmp / "env"))
