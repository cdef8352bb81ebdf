"""Memory budgets on shared GPUs ([gpu] shared): each seat may use the GPU's memory
divided by its seats. Nothing in the GPU enforces that (CUDA MPS limits each
process, not each person, and serves one uid at a time: docs/gpus.md), so the
daemon watches: at every sample it reads each compute process's memory through
NVML, asks systemd which server's unit the process is in, and sums per server.
A server over its budget is told (its journal, and the home page through the GPU
report); still over after [gpu] share_grace seconds, its largest GPU process is
killed, and only that process: the server and its other kernels go on.

The daemon has no capability to signal another uid's process, and needs none: the
kill runs in a transient unit as the server's own user (User= of its unit), right
after systemd confirmed the process is in that server's unit. So it can only ever
hit a process of that same user, even if the PID were reused in between.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from typing import Callable, Mapping

from dbus_fast import Variant

from .. import journal, users
from ..gpu.inventory import GPU, read_processes
from .systemd import Systemd, SystemdError

log = logging.getLogger("jupyterhub-appliance")

REASON = "over its GPU memory share"
KEEP_KILLS = 3600.0  # seconds a kill stays on its owner's home page
KILL_TIMEOUT = 30.0


@dataclass
class Share:
    """One server's use of one shared GPU, as of the last sample."""
    used: int
    budget: int
    over_since: float | None = None
    kills: list[dict] = field(default_factory=list)  # {"pid", "bytes", "time"}

    def to_dict(self, grace: float) -> dict:
        return {"used": self.used, "budget": self.budget, "over_since": self.over_since,
                "kill_at": None if self.over_since is None else self.over_since + grace, "kills": self.kills}


async def kill_in_unit(systemd: Systemd, pid: int, unit: str) -> bool:
    """SIGKILL the process, if systemd puts it in `unit`, as that unit's user."""
    if await systemd.unit_of_pid(pid) != unit:
        return False
    props = await systemd.unit_properties(unit, ("User",))
    user = (props or {}).get("User")
    if not user:
        return False
    killer = f"jupyterhub-appliance-gpu-share-kill-{pid}.service"
    argv = [sys.executable, "-I", "-c", f"import os; os.kill({int(pid)}, 9)"]
    try:
        await systemd.reset_failed(killer)
        job = await systemd.start_transient(killer, [
            ("Description", Variant("s", f"jupyterhub-appliance: stop process {pid} of {unit}, over its GPU share")),
            ("Type", Variant("s", "oneshot")),
            ("User", Variant("s", user)),
            ("ExecStart", Variant("a(sasb)", [(argv[0], argv, False)])),
            ("NoNewPrivileges", Variant("b", True)),
            ("PrivateNetwork", Variant("b", True)),
            ("CollectMode", Variant("s", "inactive-or-failed")),
        ])
        state = await systemd.wait_for(killer, ("inactive", "failed"), KILL_TIMEOUT, job)
    except SystemdError as e:
        log.error("GPU share: cannot stop process %d of %s: %s", pid, unit, e)
        return False
    if state != "inactive":
        log.error("GPU share: stopping process %d of %s failed (%s); see journalctl -u %s", pid, unit, state, killer)
        return False
    return True


class ShareGuard:
    def __init__(self, systemd: Systemd, clock: Callable[[], float],
                 processes: Callable[[list[str]], dict[str, list[tuple[int, int]]]] = read_processes,
                 kill=kill_in_unit):
        self.systemd, self.clock, self._processes, self._kill = systemd, clock, processes, kill
        self.shares: dict[tuple[str, str], Share] = {}  # (unit, GPU UUID) -> its share
        self.kills_total = 0

    async def check(self, gpus: list[GPU], seats: Mapping[str, int], grace: float,
                    budgets: Mapping[str, int] | None = None) -> None:
        """One look at every shared GPU: warn who went over, kill past the grace.
        A seat's budget: `budgets` ([gpu] share_memory), else the GPU's memory / seats."""
        now = self.clock()
        by_uuid = {g.uuid: g for g in gpus if g.uuid in seats}
        procs = await asyncio.to_thread(self._processes, sorted(by_uuid))
        seen: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for uuid, plist in procs.items():
            for pid, used in plist:
                unit = await self.systemd.unit_of_pid(pid)
                if unit and users.user_of_unit(unit):
                    seen.setdefault((unit, uuid), []).append((pid, used))
        for key, plist in seen.items():
            unit, uuid = key
            budget = (budgets or {}).get(uuid) or by_uuid[uuid].memory_total // seats[uuid]
            share = self.shares.setdefault(key, Share(0, budget))
            share.used, share.budget = sum(b for _, b in plist), budget
            if share.used <= budget:
                share.over_since = None
            elif share.over_since is None:
                share.over_since = now
                self._tell(unit, uuid, f"{users.user_of_unit(unit)}'s server uses {_gib(share.used)} of GPU {uuid}, "
                                       f"over its share of {_gib(budget)}; its largest GPU process is stopped in "
                                       f"{int(grace)} s unless it frees memory")
            elif now - share.over_since >= grace:
                pid, used = max(plist, key=lambda p: p[1])
                if await self._kill(self.systemd, pid, unit):
                    self.kills_total += 1
                    share.kills.append({"pid": pid, "bytes": used, "time": now})
                    self._tell(unit, uuid, f"stopped process {pid} of {users.user_of_unit(unit)}'s server "
                                           f"({_gib(used)} of GPU {uuid}): {REASON} ({_gib(budget)})")
                share.over_since = None
        # Forget what no longer uses a shared GPU, but keep a recent kill for its owner.
        for key, share in list(self.shares.items()):
            share.kills = [k for k in share.kills if now - k["time"] < KEEP_KILLS]
            if key not in seen:
                share.used, share.over_since = 0, None
                if not share.kills:
                    del self.shares[key]

    def _tell(self, unit: str, uuid: str, text: str) -> None:
        """In the daemon's log, and in the server's own (journalctl -u lists entries
        of uid 0 that name the unit in OBJECT_SYSTEMD_UNIT)."""
        log.warning("GPU share: %s", text)
        journal.send(text, priority=4, SYSLOG_IDENTIFIER="jupyterhub-appliance", OBJECT_SYSTEMD_UNIT=unit,
                     APPLIANCE_GPU_SHARE=uuid)

    def report(self, grace: float) -> dict[str, dict[str, dict]]:
        """GPU UUID -> user -> their share: for the home page and the dashboard."""
        out: dict[str, dict[str, dict]] = {}
        for (unit, uuid), share in self.shares.items():
            out.setdefault(uuid, {})[users.user_of_unit(unit) or unit] = share.to_dict(grace)
        return out


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
