"""GPU allocation: who holds which GPU, the choice policy and quotas.

Pure logic, no I/O. The daemon rebuilds the state from the units systemd actually
runs, so this object is a cache of the truth, never the truth itself.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterable, Mapping, Sequence

from .inventory import GPU

__all__ = ["Allocator", "CapacityError", "QuotaError", "check_request", "choose_gpus", "quota_for"]

log = logging.getLogger(__name__)


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def choose_gpus(free: Sequence[GPU], count: int) -> list[GPU]:
    """The policy: most free memory first, ties by lowest index."""
    return sorted(free, key=lambda g: (-g.memory_free, g.index))[:max(count, 0)]


class CapacityError(Exception):
    """Not enough free GPUs right now. The message is for the user."""

    def __init__(self, requested: int, free: int, total: int | None = None) -> None:
        self.requested, self.free, self.total = requested, free, total
        if total == 0:
            msg = f"This server has no usable GPU: you asked for {_gpus(requested)}. Start a CPU-only server."
        elif total is not None and requested > total:
            msg = (f"You asked for {_gpus(requested)}; this server has only {_gpus(total)}. "
                   "Ask for fewer GPUs or start a CPU-only server.")
        elif free == 0:
            msg = (f"All GPUs are busy: you asked for {_gpus(requested)}, none is free. "
                   "Start a CPU-only server or try again later.")
        else:
            msg = (f"Not enough free GPUs: you asked for {_gpus(requested)}, {free} "
                   f"{'is' if free == 1 else 'are'} free. "
                   "Ask for fewer, start a CPU-only server or try again later.")
        super().__init__(msg)


class QuotaError(Exception):
    """The request exceeds the user's GPU quota. The message is for the user."""

    def __init__(self, requested: int, quota: int) -> None:
        self.requested, self.quota = requested, quota
        super().__init__(f"You asked for {_gpus(requested)}; your quota is {_gpus(quota)}.")


def quota_for(username: str, groups: Iterable[str], default: int,
              per_group: Mapping[str, int], per_user: Mapping[str, int]) -> int:
    """Per-user override wins; else the most generous group override; else default."""
    if username in per_user:
        return per_user[username]
    matches = [per_group[g] for g in set(groups) if g in per_group]
    return max(matches) if matches else default


def check_request(count: int, quota: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError(f"GPU count must be a whole number, not {count!r}")
    if count < 0:
        raise ValueError(f"GPU count must be 0 or more, not {count}")
    if count > quota:
        raise QuotaError(count, quota)


class Allocator:
    """owner (e.g. a unit name) -> the GPU UUIDs it holds. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, ...]] = {}

    def _free(self, inventory_gpus: Iterable[GPU]) -> list[GPU]:
        taken = {u for uuids in self._held.values() for u in uuids}
        seen: set[str] = set()
        free = []
        for g in inventory_gpus:
            if g.uuid not in taken and g.uuid not in seen:
                seen.add(g.uuid)
                free.append(g)
        return free

    def assign(self, owner: str, count: int, inventory_gpus: Sequence[GPU]) -> tuple[str, ...]:
        """Give `owner` `count` free GPUs; idempotent for an owner that already holds as many."""
        if not owner:
            raise ValueError("owner must be a non-empty string")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"GPU count must be 0 or more, not {count!r}")
        gpus = list(inventory_gpus)
        with self._lock:
            held = self._held.get(owner)
            if held is not None:
                if len(held) == count:
                    return held  # a retried request must not take more GPUs
                raise ValueError(f"{owner} already holds {_gpus(len(held))}, cannot change to {count}")
            if count == 0:
                return ()
            free = self._free(gpus)
            if len(free) < count:
                total = len({g.uuid for g in gpus})
                raise CapacityError(count, len(free), total)
            chosen = tuple(g.uuid for g in choose_gpus(free, count))
            self._held[owner] = chosen
            return chosen

    def release(self, owner: str) -> tuple[str, ...]:
        with self._lock:
            return self._held.pop(owner, ())

    def rebuild(self, holdings: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
        """Replace all state with what systemd runs. Returns dropped (owner, uuid) claims:
        a UUID claimed twice stays with the first owner, never double-booked."""
        new: dict[str, tuple[str, ...]] = {}
        holder: dict[str, str] = {}
        dropped: list[tuple[str, str]] = []
        for owner, uuids in holdings.items():
            keep: list[str] = []
            for uuid in uuids:
                first = holder.setdefault(uuid, owner)
                if first != owner:
                    log.warning("GPU %s is claimed by both %s and %s; keeping it with %s",
                                uuid, first, owner, first)
                    dropped.append((owner, uuid))
                elif uuid not in keep:
                    keep.append(uuid)
            if keep:
                new[owner] = tuple(keep)
        with self._lock:
            self._held = new
        return dropped

    def holdings(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return dict(self._held)

    def holder_of(self, uuid: str) -> str | None:
        with self._lock:
            return next((o for o, uuids in self._held.items() if uuid in uuids), None)

    def free_gpus(self, inventory_gpus: Iterable[GPU]) -> list[GPU]:
        """Inventory GPUs nobody holds, in inventory order."""
        with self._lock:
            return self._free(inventory_gpus)
