"""GPU allocation: the choice policy, capacity and quotas.

Pure logic, no I/O and no state: who holds what is read from systemd by the
daemon (daemon/gpus.py) for every assignment and handed in here.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..limits import pick
from .inventory import GPU

__all__ = ["CapacityError", "QuotaError", "assign", "choose_gpus", "of_kind", "quota_for"]


def _gpus(n: int, noun: str = "GPU") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def of_kind(gpus: Sequence[GPU], mig: str = "") -> list[GPU]:
    """The devices a request may get: with a MIG profile (a profile's `mig`), only
    MIG devices of that profile; without, any allocatable one."""
    return [g for g in gpus if not mig or g.profile == mig]


def choose_gpus(free: Sequence[GPU], count: int) -> list[GPU]:
    """The policy: most free memory first, ties by lowest index."""
    return sorted(free, key=lambda g: (-g.memory_free, g.index))[:max(count, 0)]


class CapacityError(Exception):
    """Not enough free GPUs right now. The message is for the user."""

    def __init__(self, requested: int, free: int, total: int | None = None, mig: str = "") -> None:
        self.requested, self.free, self.total = requested, free, total
        noun = f"{mig} MIG device" if mig else "GPU"
        if total == 0:
            msg = (f"This server has no usable {noun}: you asked for {_gpus(requested, noun)}. "
                   "Start a CPU-only server.")
        elif total is not None and requested > total:
            msg = (f"You asked for {_gpus(requested, noun)}; this server has only {_gpus(total, noun)}. "
                   f"Ask for fewer {noun}s or start a CPU-only server.")
        elif free == 0:
            msg = (f"All {noun}s are busy: you asked for {_gpus(requested, noun)}, none is free. "
                   "Start a CPU-only server or try again later.")
        else:
            msg = (f"Not enough free {noun}s: you asked for {_gpus(requested, noun)}, {free} "
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


def assign(held: Mapping[str, Iterable[str]], count: int, gpus: Sequence[GPU], mig: str = "") -> tuple[str, ...]:
    """`count` GPUs of the kind asked for (of_kind) that nobody in `held` (owner ->
    UUIDs, as systemd runs them) holds, chosen by the policy; CapacityError when
    there are not enough. `count` was checked by the daemon (validate.py)."""
    if count <= 0:
        return ()
    gpus = of_kind(gpus, mig)
    taken = {u for uuids in held.values() for u in uuids}
    free = list({g.uuid: g for g in gpus if g.uuid not in taken}.values())
    if len(free) < count:
        raise CapacityError(count, len(free), len({g.uuid for g in gpus}), mig)
    return tuple(g.uuid for g in choose_gpus(free, count))
