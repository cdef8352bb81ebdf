"""Per-user transient units through systemd's D-Bus API (dbus-fast, asyncio)."""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"

RUNNING_STATES = ("active", "activating", "reloading", "deactivating")


class SystemdError(RuntimeError):
    def __init__(self, name: str, text: str):
        self.name = name
        super().__init__(f"{text} ({name})")


class Systemd:
    def __init__(self) -> None:
        self._bus: MessageBus | None = None

    async def _call(self, path: str, interface: str, member: str, signature: str = "",
                    body: list | None = None) -> list:
        if self._bus is None or not self._bus.connected:
            self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        reply = await self._bus.call(
            Message(destination=SYSTEMD, path=path, interface=interface, member=member,
                    signature=signature, body=body or [])
        )
        if reply.message_type == MessageType.ERROR:
            raise SystemdError(reply.error_name or "?", reply.body[0] if reply.body else "error")
        return reply.body

    async def start_transient(self, unit: str, properties: list[tuple[str, Variant]],
                              aux: list[tuple[str, list[tuple[str, Variant]]]] | None = None) -> str:
        """Queue the unit's start; returns the start job's object path. `aux`: units
        created with it (name, properties), which it may depend on."""
        (job,) = await self._call(MANAGER_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                  [unit, "fail", properties, aux or []])
        return job

    async def start_unit(self, unit: str) -> str:
        """Queue the start of an installed unit; returns the start job's object path."""
        (job,) = await self._call(MANAGER_PATH, MANAGER, "StartUnit", "ss", [unit, "replace"])
        return job

    async def unit_of_pid(self, pid: int) -> str | None:
        """The unit systemd placed a process in (by its cgroup); None when none or gone."""
        try:
            (path,) = await self._call(MANAGER_PATH, MANAGER, "GetUnitByPID", "u", [pid])
            (name,) = await self._call(path, "org.freedesktop.DBus.Properties", "Get", "ss",
                                       ["org.freedesktop.systemd1.Unit", "Id"])
        except SystemdError:
            return None
        return name.value

    async def set_properties(self, unit: str, properties: list[tuple[str, Variant]]) -> None:
        """Change a unit's properties until reboot (systemd keeps them in
        /run/systemd/system.control), applied to its cgroup at once."""
        await self._call(MANAGER_PATH, MANAGER, "SetUnitProperties", "sba(sv)", [unit, True, properties])

    async def job_pending(self, job: str) -> bool:
        """A job object exists only while the job is queued or running."""
        try:
            await self._call(job, PROPERTIES, "Get", "ss", ["org.freedesktop.systemd1.Job", "State"])
            return True
        except SystemdError:
            return False

    async def stop(self, unit: str) -> None:
        try:
            await self._call(MANAGER_PATH, MANAGER, "StopUnit", "ss", [unit, "replace"])
        except SystemdError as e:
            if e.name != NO_SUCH_UNIT:
                raise

    async def reset_failed(self, unit: str) -> None:
        try:
            await self._call(MANAGER_PATH, MANAGER, "ResetFailedUnit", "s", [unit])
        except SystemdError as e:
            if e.name != NO_SUCH_UNIT:
                raise

    async def unit_properties(self, unit: str, names: tuple[str, ...]) -> dict[str, Any] | None:
        """Selected properties of a loaded unit; None when systemd has no such unit."""
        try:
            (path,) = await self._call(MANAGER_PATH, MANAGER, "GetUnit", "s", [unit])
        except SystemdError as e:
            if e.name == NO_SUCH_UNIT:
                return None
            raise
        out = {}
        for name in names:
            iface = UNIT if name in ("ActiveState", "SubState", "ActiveEnterTimestamp", "DropInPaths") else \
                "org.freedesktop.systemd1.Service"
            try:
                (v,) = await self._call(path, PROPERTIES, "Get", "ss", [iface, name])
            except SystemdError as e:
                if e.name == NO_SUCH_UNIT or "UnknownObject" in e.name:
                    return None  # collected while we were asking
                raise
            out[name] = v.value
        return out

    async def active_state(self, unit: str) -> str:
        props = await self.unit_properties(unit, ("ActiveState",))
        return "inactive" if props is None else props["ActiveState"]

    async def wait_for(self, unit: str, done: tuple[str, ...], timeout: float, job: str | None = None) -> str:
        """Poll until the unit's ActiveState is in `done` (and `job`, if given, has
        finished: a queued start still shows "inactive"); return the last state seen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while True:
            state = await self.active_state(unit)
            if job and state == "inactive":
                if await self.job_pending(job):
                    state = "queued"  # not done yet, whatever `done` holds
                else:
                    # The job finished after the state was read, so that "inactive"
                    # may be from before it ran: read what the job left. (With 20
                    # spawns at once, 11 good servers were rolled back on the stale
                    # "inactive": their units stopped 0.15 s after they started.)
                    state = await self.active_state(unit)
            if loop.time() > deadline:
                return "inactive" if state == "queued" else state
            if state in done:
                return state
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def reload(self) -> None:
        """systemctl daemon-reload."""
        await self._call(MANAGER_PATH, MANAGER, "Reload")

    async def wait_unloaded(self, unit: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.unit_properties(unit, ("ActiveState",)) is not None:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def list_units(self, pattern: str, queued: bool = False) -> list[tuple[str, str]]:
        """(name, active state) of loaded units matching a glob, in any running state
        or failed; with `queued`, also inactive units with a job queued: a start job
        waiting in systemd's queue shows "inactive" until it runs, yet the unit will run."""
        states = list(RUNNING_STATES) + ["failed"] + (["inactive"] if queued else [])
        (units,) = await self._call(MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", [states, [pattern]])
        # a(ssssssouso): name, description, load, active, sub, following, path, job id, ...
        return [(u[0], u[3]) for u in units if u[3] != "inactive" or u[7] != 0]
