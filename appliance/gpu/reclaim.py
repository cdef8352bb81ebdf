"""Which idle GPU servers to stop: the reclaim policy. Pure logic, no I/O.

The daemon samples utilization and knows the queue; it hands both in here and
reports the answer, and the hub's gpu-reclaimer service stops those servers
through the hub's REST API, as the idle culler does.
"""
from __future__ import annotations

from typing import Mapping, Sequence

MODES = ("when-needed", "always", "never")


def victims(mode: str, idle: Mapping[str, tuple[float, int]], timeout: float, free: int,
            waiting: Sequence[int]) -> list[str]:
    """Users whose servers to stop.

    idle: user -> (seconds all its GPUs have been idle, GPUs it holds); free: GPUs
    nobody holds; waiting: GPUs asked by each waiting spawn, in queue order.
    "when-needed" stops the longest-idle servers only as far as that lets a waiting
    spawn start, in queue order; a spawn that cannot be served even so takes nothing.
    """
    if mode not in MODES:
        raise ValueError(f"reclaim mode must be one of {', '.join(MODES)}, not {mode!r}")
    candidates = sorted((u for u, (secs, n) in idle.items() if secs >= timeout and n > 0),
                        key=lambda u: (-idle[u][0], u))
    if mode == "never":
        return []
    if mode == "always":
        return candidates
    chosen: list[str] = []
    for need in waiting:
        picked = []
        while free < need and candidates:
            user = candidates.pop(0)
            picked.append(user)
            free += idle[user][1]
        if free < need:
            candidates[:0] = picked  # no use stopping them for this one
            free -= sum(idle[u][1] for u in picked)
            continue
        chosen += picked
        free -= need
    return chosen
