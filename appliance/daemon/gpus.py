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
import re

from .. import users
from ..gpu import allocator
from ..gpu.allocator import CapacityError
from ..gpu.inventory import Inventory, read_inventory
from .systemd import Systemd

log = logging.getLogger("jupyterhub-appliance")

# Every GPU server needs these besides its own /dev/nvidiaN.
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_GPU_NODE = re.compile(r"/dev/nvidia([0-9]+)")


def device_allow(minors: list[int]) -> list[tuple[str, str]]:
    if not minors:
        return []
    return [(f"/dev/nvidia{m}", "rw") for m in minors] + [(d, "rw") for d in CONTROL_DEVICES]


def minors_of(rules: list) -> list[int]:
    return [int(m.group(1)) for path, _perm in rules if (m := _GPU_NODE.fullmatch(path))]


class GpuManager:
    def __init__(self, systemd: Systemd, inventory=read_inventory):
        self.systemd = systemd
        self._read_inventory = inventory
        # Assignment is serialized: choose, record as pending, then start the unit.
        self.lock = asyncio.Lock()
        self.pending: dict[str, tuple[str, ...]] = {}
        self._reported: set[str] = set()

    async def inventory(self) -> Inventory:
        inv = await asyncio.to_thread(self._read_inventory)
        # Say each problem once in the log, not on every request.
        news = [] if inv.available else [inv.reason or "NVML not available: running CPU-only"]
        news += [f"GPU {i} taken out of allocation: {why}" for i, why in inv.unusable]
        for line in news:
            if line not in self._reported:
                self._reported.add(line)
                log.warning("%s", line)
        return inv

    async def running(self, inv: Inventory) -> dict[str, tuple[str, ...]]:
        """unit -> GPU UUIDs, from what systemd runs, plus spawns in flight."""
        by_minor = {g.minor: g.uuid for g in inv.gpus}
        held: dict[str, tuple[str, ...]] = {}
        # Queued starts too: such a unit shows "inactive" but will run with its DeviceAllow=.
        for unit, _state in await self.systemd.list_units("jupyter-*.service", queued=True):
            props = await self.systemd.unit_properties(unit, ("DeviceAllow",))
            uuids = tuple(by_minor[m] for m in minors_of(props["DeviceAllow"] if props else []) if m in by_minor)
            if uuids:
                held[unit] = uuids
        held.update(self.pending)
        return held

    async def assign(self, unit: str, count: int, fallback: bool) -> tuple[Inventory, tuple[str, ...]]:
        """GPUs for a unit about to start; the caller must call `started(unit)` after."""
        inv = await self.inventory()
        if count == 0:
            return inv, ()
        async with self.lock:
            held = await self.running(inv)
            held.pop(unit, None)  # a leftover unit of this user is being replaced
            try:
                uuids = allocator.assign(held, count, inv.gpus)
            except CapacityError:
                if fallback:
                    return inv, ()
                raise
            self.pending[unit] = uuids
            return inv, uuids

    def started(self, unit: str) -> None:
        """Drop the in-flight claim. Call it only once systemd itself shows who holds
        the GPUs: the unit is running or queued (list_units sees its DeviceAllow=), or gone."""
        self.pending.pop(unit, None)

    async def report(self) -> dict:
        inv = await self.inventory()
        held = await self.running(inv)
        holder = {uuid: unit for unit, uuids in held.items() for uuid in uuids}
        data = inv.to_dict()
        for g in data["gpus"]:
            unit = holder.get(g["uuid"])
            g["holder"] = users.user_of_unit(unit) if unit else None
        return data
