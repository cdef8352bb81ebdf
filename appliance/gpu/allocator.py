"""GPU allocation: the choice policy, capacity and quotas.

Pure logic, no I/O and no state: who holds what is read from systemd by the
daemon (daemon/gpus.py) for every assignment and handed in here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..limits import pick
from .inventory import GPU

__all__ = ["ANY", "CapacityError", "Kind", "QuotaError", "assign", "choose_gpus", "of_kind", "places", "quota_for",
           "per_gpu"]


def _gpus(n: int, nouns: tuple[str, str] = ("GPU", "GPUs")) -> str:
    return f"{n} {nouns[0]}" if n == 1 else f"{n} {nouns[1]}"


@dataclass(frozen=True)
class Kind:
    """What a request may get: with `mig` (a profile's), only MIG devices of that
    profile; with `share` N (a profile's gpu_share "1/N"), only a seat on a GPU
    shared N ways; else any allocatable GPU, MIG device or seat."""
    mig: str = ""
    share: int = 0

    @property
    def nouns(self) -> tuple[str, str]:
        """What one and several of this kind are called, for people."""
        if self.mig:
            return f"{self.mig} MIG device", f"{self.mig} MIG devices"
        if self.share:
            return f"seat on a GPU shared {self.share} ways", f"seats on GPUs shared {self.share} ways"
        return "GPU", "GPUs"


ANY = Kind()


def per_gpu(gpus: Sequence[GPU], table: Mapping[str, Any]) -> dict[str, Any]:
    """UUID -> value, for a [gpu] table keyed by a GPU's UUID or NVML index (shared:
    seats; share_memory: a seat's budget). Whole GPUs only: a GPU in MIG mode is
    split already, and its MIG devices are never shared."""
    return {g.uuid: v for g in gpus if not g.parent and (v := table.get(g.uuid) or table.get(str(g.index)))}


def of_kind(gpus: Sequence[GPU], kind: Kind = ANY, seats: Mapping[str, int] | None = None) -> list[GPU]:
    seats = seats or {}
    return [g for g in gpus if (not kind.mig or g.profile == kind.mig)
            and (not kind.share or seats.get(g.uuid) == kind.share)]


def choose_gpus(free: Sequence[GPU], count: int, seats: Mapping[str, int] | None = None,
                taken: Mapping[str, int] | None = None) -> list[GPU]:
    """The policy: a GPU of one's own before a seat on a shared one, then the
    fewest people on it, then most free memory, ties by lowest index."""
    seats, taken = seats or {}, taken or {}
    return sorted(free, key=lambda g: (g.uuid in seats, taken.get(g.uuid, 0), -g.memory_free, g.index))[:max(count, 0)]


class CapacityError(Exception):
    """Not enough free GPUs right now. The message is for the user."""

    def __init__(self, requested: int, free: int, total: int | None = None, kind: Kind = ANY) -> None:
        self.requested, self.free, self.total = requested, free, total
        one, many = nouns = kind.nouns
        if total == 0:
            msg = (f"This server has no usable {one}: you asked for {_gpus(requested, nouns)}. "
                   "Start a CPU-only server.")
        elif total is not None and requested > total:
            msg = (f"You asked for {_gpus(requested, nouns)}; this server has only {_gpus(total, nouns)}. "
                   f"Ask for fewer {many} or start a CPU-only server.")
        elif free == 0:
            msg = (f"All {many} are busy: you asked for {_gpus(requested, nouns)}, none is free. "
                   "Start a CPU-only server or try again later.")
        else:
            msg = (f"Not enough free {many}: you asked for {_gpus(requested, nouns)}, {free} "
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
    return pick(username, groups, default, per_group, per_user)


def places(gpus: Sequence[GPU], seats: Mapping[str, int]) -> int:
    """Servers these GPUs can serve at once: one each, a shared one its seats."""
    return sum(seats.get(g.uuid, 1) for g in {g.uuid: g for g in gpus}.values())


def assign(held: Mapping[str, Iterable[str]], count: int, gpus: Sequence[GPU], kind: Kind = ANY,
           seats: Mapping[str, int] | None = None) -> tuple[str, ...]:
    """`count` different GPUs of the kind asked for (of_kind) with a free place: one
    nobody in `held` (owner -> UUIDs, as systemd runs them) holds, or a shared one
    with a seat left; chosen by the policy. CapacityError when there are not enough.
    `count` was checked by the daemon (validate.py)."""
    if count <= 0:
        return ()
    seats = seats or {}
    gpus = list({g.uuid: g for g in of_kind(gpus, kind, seats)}.values())
    taken = Counter(u for uuids in held.values() for u in uuids)
    free = [g for g in gpus if taken[g.uuid] < seats.get(g.uuid, 1)]
    if len(free) < count:
        raise CapacityError(count, len(free), len(gpus), kind)
    return tuple(g.uuid for g in choose_gpus(free, count, seats, taken))
