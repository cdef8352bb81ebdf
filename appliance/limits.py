"""Memory, CPU and task limits: per server (default, per group, per user, per
profile) and for all user servers together. Pure logic, shared by the daemon
(which applies them, from its own reading of appliance.toml) and the hub (which
shows them on the spawn form).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    mem: int | None  # bytes (MemoryMax), None: no limit
    cpu: float | None  # cores (CPUQuota), None: no limit
    tasks: int | None  # TasksMax, None: systemd's default

    def describe(self) -> str:
        """"8 GB RAM, 4 CPUs" as the spawn form and applctl show it."""
        parts = [f"{self.mem / GiB:g} GB RAM" if self.mem else "no memory limit",
                 f"{self.cpu:g} CPU{'s' if self.cpu != 1 else ''}" if self.cpu else "no CPU limit"]
        return ", ".join(parts)


def short(mem: int | None, cpu: float | None) -> str:
    """"8G, 4 CPUs" for tables; "-" for no limit at all."""
    parts = ([f"{mem / GiB:g}G"] if mem else []) + ([f"{cpu:g} CPU{'s' if cpu != 1 else ''}"] if cpu else [])
    return ", ".join(parts) or "-"


def pick(user: str, groups: Iterable[str], default, per_group: Mapping, per_user: Mapping):
    """The one rule for per-user settings (limits here, GPU quotas in gpu/allocator.py):
    the user's own value wins, else the highest of their groups', else the default."""
    if user in per_user:
        return per_user[user]
    found = [per_group[g] for g in set(groups) if g in per_group]
    return max(found) if found else default


def for_user(limits: Mapping, user: str, groups: Iterable[str], profile: Mapping | None = None) -> Limits:
    """The limits of `user`'s server; a profile's own mem_limit/cpu_limit win for it."""
    groups = list(groups)
    mem = pick(user, groups, limits["mem_limit"], limits["mem_limit_groups"], limits["mem_limit_users"])
    cpu = pick(user, groups, limits["cpu_limit"], limits["cpu_limit_groups"], limits["cpu_limit_users"])
    if profile:
        mem = profile.get("mem_limit") or mem
        cpu = profile.get("cpu_limit") or cpu
    return Limits(mem or None, float(cpu) if cpu else None, limits["tasks_max"] or None)


def ram() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def totals(limits: Mapping, memory: int | None = None, cpus: int | None = None) -> tuple[int | None, float | None]:
    """(MemoryMax, cores) for jupyter-users.slice. "auto" leaves the system at least
    2 GiB and one core, but never takes more than half away from the users."""
    memory = ram() if memory is None else memory
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    mem = limits["total_memory"]
    if mem == "auto":
        mem = max(memory - 2 * GiB, memory // 2)
    cpu = limits["total_cpu"]
    if cpu == "auto":
        cpu = float(max(cpus - 1, cpus / 2))
    return (mem or None, float(cpu) if cpu else None)
