"""GPU assignment in the daemon, with systemd as the source of truth.

Who holds a GPU is read from the DeviceAllow= of the running user units (the very
rule the device cgroup enforces), mapped to UUIDs by NVML minor number. Nothing is
remembered across requests except spawns still in flight, so a restart of the
daemon or the hub cannot lose or double-book a GPU, and a unit that stops for any
reason frees its GPUs at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import users
from ..gpu import allocator, reclaim
from ..gpu.allocator import ANY, CapacityError, Kind
from ..gpu.devices import held as held_gpus
from ..gpu.inventory import Inventory, read_inventory
from .gpu_queue import GpuQueue
from .gpu_share import ShareGuard
from .systemd import Systemd

log = logging.getLogger("jupyterhub-appliance")


class QueueTimeout(Exception):
    """The wait in the GPU queue ended without a GPU. The message is for the user."""


@dataclass
class Queued:
    """A spawn that waits: its place and what keeps it waiting, for the user."""
    position: int
    waiting: int
    in_use: int
    total: int
    since: float
    what: str = "GPUs"  # what in_use and total count: "GPUs", "seats on GPUs shared 4 ways", "GPUs and seats"...

    def to_dict(self) -> dict:
        return {"queued": True, "position": self.position, "waiting": self.waiting, "in_use": self.in_use,
                "total": self.total, "since": self.since, "what": self.what}


class GpuManager:
    def __init__(self, systemd: Systemd, inventory=read_inventory, queue_path: Path | None = None,
                 clock=time.time):
        self.systemd = systemd
        self._read_inventory = inventory
        self.clock = clock
        # Assignment is serialized: choose, record as pending, then start the unit.
        self.lock = asyncio.Lock()
        self.pending: dict[str, tuple[str, ...]] = {}
        self.queue = GpuQueue(queue_path)
        # unit -> wall clock since when all its GPUs have sampled idle (started units only)
        self.idle_since: dict[str, float] = {}
        self._reported: set[str] = set()
        self.shares = ShareGuard(systemd, clock)

    async def inventory(self, shared: dict[str, int] | None = None) -> Inventory:
        inv = await asyncio.to_thread(self._read_inventory)
        # Say each problem once in the log, not on every request.
        news = [] if inv.available else [inv.reason or "NVML not available: running CPU-only"]
        news += [f"GPU {i} taken out of allocation: {why}" for i, why in inv.unusable]
        whole = {g.uuid for g in inv.gpus if not g.parent} | {str(g.index) for g in inv.gpus if not g.parent}
        news += [f"gpu.shared names GPU {k}, which is not a whole GPU here (absent, or in MIG mode: its MIG "
                 "devices are given out instead, never shared)" for k in shared or {} if k not in whole]
        for line in news:
            if line not in self._reported:
                self._reported.add(line)
                log.warning("%s", line)
        return inv

    async def running(self, inv: Inventory) -> dict[str, tuple[str, ...]]:
        """unit -> GPU UUIDs, from what systemd runs, plus spawns in flight."""
        held: dict[str, tuple[str, ...]] = {}
        # Queued starts too: such a unit shows "inactive" but will run with its DeviceAllow=.
        for unit, state in await self.systemd.list_units("jupyter-*.service", queued=True):
            if state == "failed":
                continue  # ended: its device cgroup is gone with its processes
            props = await self.systemd.unit_properties(unit, ("DeviceAllow",))
            uuids = tuple(u for u in held_gpus(props["DeviceAllow"] if props else [], inv.gpus)
                          if not u.startswith("minor:"))
            if uuids:
                held[unit] = uuids
        held.update(self.queue.reserved())
        held.update(self.pending)
        return held

    async def assign(self, unit: str, count: int, cpu_fallback: bool, kind: Kind = ANY,
                     shared: dict[str, int] | None = None) -> tuple[Inventory, tuple[str, ...]]:
        """GPUs for a unit about to start; the caller must call `started(unit)` after.
        `shared`: [gpu] shared, the GPUs several servers may hold at once."""
        inv = await self.inventory()
        if count == 0:
            return inv, ()
        async with self.lock:
            held = await self.running(inv)
            held.pop(unit, None)  # a leftover unit of this user is being replaced
            try:
                uuids = allocator.assign(held, count, inv.gpus, kind, allocator.per_gpu(inv.gpus, shared or {}))
            except CapacityError:
                if cpu_fallback:
                    return inv, ()
                raise
            self.pending[unit] = uuids
            return inv, uuids

    async def request(self, user: str, unit: str, count: int, cpu_fallback: bool, queue_timeout: float,
                      kind: Kind = ANY, shared: dict[str, int] | None = None
                      ) -> tuple[Inventory, tuple[str, ...]] | Queued:
        """GPUs for a unit about to start, or its place in the queue. Asked again
        with the same arguments until it is granted; the caller must call
        `started(unit)` after a grant. CapacityError when no wait could ever help
        (more GPUs than the machine has); QueueTimeout when the wait is over."""
        inv = await self.inventory()
        if count == 0:
            return inv, ()
        seats = allocator.per_gpu(inv.gpus, shared or {})
        mine = allocator.of_kind(inv.gpus, kind, seats)
        if count > len(mine):
            self.queue.remove(user)
            if cpu_fallback:
                return inv, ()
            raise CapacityError(count, 0, len(mine), kind)
        total = allocator.places(mine, seats)
        now = self.clock()
        async with self.lock:
            self.queue.expire(now)
            entry = self.queue.join(user, unit, count, cpu_fallback, now, kind)
            held = await self.running(inv)  # grant() leaves out each entry's own unit
            self.queue.grant(held, inv.gpus, seats)
            if entry.granted:
                self.queue.remove(user)
                self.pending[unit] = entry.granted
                return inv, entry.granted
            if now - entry.since >= queue_timeout:
                self.queue.remove(user)
                if cpu_fallback:
                    return inv, ()
                waited = int(now - entry.since) // 60
                raise QueueTimeout(f"No GPU became free while you waited {waited} minutes in the queue "
                                   f"(all {total} are in use). Try again later, or start a CPU-only server.")
            taken = Counter(u for uuids in held.values() for u in uuids)
            in_use = sum(min(taken[g.uuid], seats.get(g.uuid, 1)) for g in mine)
            what = kind.nouns[1] if kind != ANY else "GPUs and seats" if seats.keys() & {g.uuid for g in mine} \
                else "GPUs"
            return Queued(self.queue.position(entry), len(self.queue.waiting()), in_use, total, entry.since, what)

    def leave_queue(self, user: str) -> bool:
        """A cancelled spawn (the stop button, applctl stop) leaves the queue at once."""
        entry = self.queue.remove(user)
        if entry is not None:
            log.info("GPU queue: %s left the queue%s", user,
                     f", releasing {', '.join(entry.granted)}" if entry.granted else "")
        return entry is not None

    def started(self, unit: str) -> None:
        """Drop the in-flight claim. Call it only once systemd itself shows who holds
        the GPUs: the unit is running or queued (list_units sees its DeviceAllow=), or gone."""
        self.pending.pop(unit, None)

    async def sample(self, threshold: int) -> None:
        """One utilization sample of every assigned GPU (NVML's GPU utilization):
        a server is idle while all its GPUs are at or below `threshold` percent.
        A GPU whose utilization the driver does not report (MIG) is never idle."""
        inv = await self.inventory()
        async with self.lock:
            held = await self.running(inv)
            for unit in set(self.pending) | set(self.queue.reserved()):
                held.pop(unit, None)  # not started yet
        util = {g.uuid: g.utilization for g in inv.gpus}
        now = self.clock()
        for unit, uuids in held.items():
            if all(util.get(u) is not None and util[u] <= threshold for u in uuids):
                self.idle_since.setdefault(unit, now)
            else:
                self.idle_since.pop(unit, None)
        for unit in set(self.idle_since) - set(held):
            del self.idle_since[unit]

    async def check_shares(self, gpu_cfg: dict) -> None:
        """The memory budgets of shared GPUs' seats (gpu_share.py)."""
        inv = await self.inventory(gpu_cfg["shared"])
        seats = allocator.per_gpu(inv.gpus, gpu_cfg["shared"])
        if seats or self.shares.shares:
            await self.shares.check(list(inv.gpus), seats, gpu_cfg["share_grace"],
                                    allocator.per_gpu(inv.gpus, gpu_cfg["share_memory"]))

    async def started_at(self, unit: str) -> float | None:
        """Epoch seconds since the unit has been active; None if not (yet) known."""
        props = await self.systemd.unit_properties(unit, ("ActiveEnterTimestamp",))
        usec = (props or {}).get("ActiveEnterTimestamp") or 0
        return usec / 1e6 if usec else None

    async def report(self, gpu_cfg: dict | None = None) -> dict:
        """GPUs with holders, utilization and idle time; the queue; and, given the
        [gpu] configuration, which servers the reclaim rule says to stop."""
        inv = await self.inventory()
        self.queue.expire(self.clock())
        held = await self.running(inv)
        holders: dict[str, list[str]] = {}
        for unit, uuids in sorted(held.items()):
            for uuid in uuids:
                holders.setdefault(uuid, []).append(unit)
        seats = allocator.per_gpu(inv.gpus, (gpu_cfg or {}).get("shared", {}))
        budgets = allocator.per_gpu(inv.gpus, (gpu_cfg or {}).get("share_memory", {}))
        shares = self.shares.report((gpu_cfg or {}).get("share_grace", 0))
        reserved = set(self.pending) | set(self.queue.reserved())
        now = self.clock()
        data = inv.to_dict()
        started = {unit: await self.started_at(unit) for unit in held if unit not in reserved}
        for g in data["gpus"]:
            units = holders.get(g["uuid"], [])
            unit = units[0] if units else None  # a shared GPU's: all say the same of it
            g["holders"] = [users.user_of_unit(u) for u in units]
            g["holder"] = g["holders"][0] if units else None
            g["seats"] = seats.get(g["uuid"], 1)
            if g["seats"] > 1:
                g["seat_memory"] = budgets.get(g["uuid"]) or g["memory_total"] // g["seats"]
            g["shares"] = shares.get(g["uuid"], {})
            g["starting"] = unit in reserved
            g["held_since"] = started.get(unit)
            since = self.idle_since.get(unit) if unit else None
            g["idle_seconds"] = round(now - since) if since is not None else None
        idle = {users.user_of_unit(u): (now - since, len(held.get(u, ()))) for u, since in self.idle_since.items()}
        free = sum(max(0, g["seats"] - len(g["holders"])) for g in data["gpus"])
        data["reclaim"] = [] if gpu_cfg is None else reclaim.victims(
            gpu_cfg["reclaim"], idle, gpu_cfg["idle_timeout"], free, [e.count for e in self.queue.waiting()])
        data["share_kills"] = self.shares.kills_total
        data["queue"] = [{"user": e.user, "gpus": e.count, "since": e.since, "granted": bool(e.granted)}
                         for e in self.queue.entries]
        return data
