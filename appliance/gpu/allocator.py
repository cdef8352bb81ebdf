"""GPU allocation: the choice policy, capacity and quotas.

Pure logic, no I/O and no state: who holds what is read from systemd by the
daemon (daemon/gpus.py) for every assignment and handed in here.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..limits import pick
from .inventory import GPU

__all__ = ["CapacityError", "QuotaError", "assign", "choose_gpus", "quota_for"]


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
    return pick(username, groups, default, per_group, per_user)


def assign(held: Mapping[str, Iterable[str]], count: int, gpus: Sequence[GPU]) -> tuple[str, ...]:
    """`count` GPUs that nobody in `held` (owner -> UUIDs, as systemd runs them) holds,
    chosen by the policy; CapacityError when there are not enough. `count` was
    checked by the daemon (validate.py)."""
    if count <= 0:
        return ()
    taken = {u for uuids in held.values() for u in uuids}
    free = list({g.uuid: g for g in gpus if g.uuid not in taken}.values())
    if len(free) < count:
        raise CapacityError(count, len(free), len({g.uuid for g in gpus}))
    return tuple(g.uuid for g in choose_gpus(free, count))
