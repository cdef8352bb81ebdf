"""Shared fixtures of the unit tests: the four GPUs of a fake inventory, and the one
fake of systemd, faked at the D-Bus call level so that the real Systemd code
(unit_properties, list_units and its job filter, wait_for) runs against it.

tests/unit/test_daemon_wait.py keeps its own scripted Systemd: it replays an exact
sequence of reads (a state, then "is the job still there") to pin down one race in
wait_for, which a fake that keeps state cannot produce on demand.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from dataclasses import dataclass, field

import pytest
from dbus_fast import Variant

from appliance.daemon.systemd import NO_SUCH_UNIT, Systemd, SystemdError
from appliance.gpu.inventory import GPU

# NVML index -> minor number differ on purpose: device rules must use the minor.
GPUS = tuple(GPU(index=i, minor=m, uuid=f"GPU-{i}", name="A100", memory_total=80, memory_free=80 - i,
                 memory_used=i, pci_bus_id=f"0:{i}", utilization=0, mig_enabled=False)
             for i, m in enumerate([2, 0, 3, 1]))


def gpu_rules(*minors: int) -> list[tuple[str, str]]:
    """The DeviceAllow= the daemon gives a unit holding the GPUs with these minors."""
    from appliance.gpu.devices import device_allow
    return device_allow([next(g for g in GPUS if g.minor == m) for m in minors])


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
    # Units that stay loaded once stopped until a daemon-reload (as after systemd's
    # own upgrade from Debian 12 to 13), and how many reloads there were.
    stuck: set = field(default_factory=set)
    reloads: int = 0
    # Ports someone else holds: a socket unit listening on one fails to start, and
    # the unit that requires it is not started (systemd's "dependency" result).
    taken_ports: set = field(default_factory=set)
    _jobs: int = 0

    def __post_init__(self):
        Systemd.__init__(self)

    async def _call(self, path, interface, member, signature="", body=None):
        await asyncio.sleep(0)  # a D-Bus round trip yields to other requests
        body = body or []
        if member == "StartTransientUnit":
            name, _mode, props, aux = body
            for n in [name] + [a for a, _ in aux]:
                if n in self.units:
                    raise SystemdError("org.freedesktop.systemd1.UnitExists", f"Unit {n} was already loaded")
            self._jobs += 1
            for aux_name, aux_props in aux:
                self.units[aux_name] = FakeUnit(dict(aux_props))
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
            defaults = {"Result": Variant("s", "success"), "ExecMainCode": Variant("i", 0),
                        "ExecMainStatus": Variant("i", 0), "MemoryMax": Variant("t", 2**64 - 1)}
            return [unit.props[name] if name in unit.props else defaults[name]]
        if member == "StopUnit":
            name = body[0]
            if name not in self.units:
                raise SystemdError(NO_SUCH_UNIT, f"Unit {name} not loaded.")
            self.units[name].job = 0  # "replace" cancels a queued start
            self.units[name].state = "inactive"
            if name not in self.stuck:
                asyncio.get_running_loop().call_soon(self.units.pop, name, None)  # CollectMode=inactive-or-failed
            for bound in [n for n, u in self.units.items() if name in u.props.get("BindsTo", Variant("as", [])).value]:
                self.units[bound].state = "inactive"  # BindsTo=: stops with it
                asyncio.get_running_loop().call_soon(self.units.pop, bound, None)
            return []
        if member == "Reload":
            self.reloads += 1
            for name in self.stuck & {n for n, u in self.units.items() if u.state == "inactive"}:
                del self.units[name]
            self.stuck.clear()
            return []
        if member == "ResetFailedUnit":
            if body[0] not in self.units:
                raise SystemdError(NO_SUCH_UNIT, f"Unit {body[0]} not loaded.")
            if self.units[body[0]].state == "failed":
                del self.units[body[0]]  # a failed transient unit is unloaded
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
        for needed in unit.props.get("Requires", Variant("as", [])).value:
            sock = self.units[needed]
            (_, address), = sock.props["Listen"].value
            if int(address.rsplit(":", 1)[1]) in self.taken_ports:
                sock.state = "failed"
                self.units.pop(name, None)  # not started, and collected
                return
            sock.state = "active"
        if self.start_mode == "start":
            unit.state = "active"
            unit.entered = int(time.time() * 1e6)
        else:
            unit.state = "failed"
            sockets = {n: self.units.get(n) for n in unit.props.get("Requires", Variant("as", [])).value}
            await asyncio.sleep(0.01)
            # Only these units: by now the daemon may have rolled them back and a new
            # start of the same names be under way (a slow machine made this test flaky).
            if self.units.get(name) is unit:
                del self.units[name]
            for needed, sock in sockets.items():
                if self.units.get(needed) is sock:
                    del self.units[needed]  # BindsTo=: it stops with the unit

    def add(self, name: str, rules: list[tuple[str, str]], state: str = "active") -> None:
        """A unit already running (or queued, with state "inactive" and a job) with these
        DeviceAllow= rules, as if started before the test; `del self.units[name]` stops it."""
        self._jobs += 1
        self.units[name] = FakeUnit({"DeviceAllow": Variant("a(ss)", list(rules))}, state=state,
                                    job=self._jobs if state == "inactive" else 0)

    def gpus_of(self, name):
        rules = self.units[name].props["DeviceAllow"].value
        return sorted(p for p, _ in rules if p[len("/dev/nvidia"):].isdigit())


@pytest.fixture
def systemd() -> FakeManager:
    """A fresh fake systemd with no units."""
    return FakeManager()
