"""The daemon's GPU report, kept fresh inside the hub for what must never wait on
the daemon: the home page's line about a user's own GPUs and the Prometheus
collector (metrics.py). Refreshed every [gpu] sample_interval, as the daemon samples;
the DCGM exporter also serves the sample it last took.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .. import daemon_client as client
from ..protocol import GpuReport

log = logging.getLogger("JupyterHub")


class LastGpuReport:
    def __init__(self) -> None:
        self.data: GpuReport | None = None  # the daemon's last "gpus" reply
        self.at = 0.0  # when it was read (epoch seconds)
        self.error: str | None = None

    def update(self, reply: dict, now: float | None = None) -> None:
        self.data, self.at, self.error = GpuReport.read(reply), time.time() if now is None else now, None

    async def refresh_forever(self, interval: float) -> None:
        while True:
            try:
                self.update(await client.call({"op": "gpus"}, timeout=30))
            except client.DaemonError as e:
                if self.error != str(e):  # once per new problem, not every few seconds
                    log.warning("jupyterhub-appliance: cannot read the GPU report: %s", e)
                self.error = str(e)
            await asyncio.sleep(interval)

    def held_by(self, user: str) -> list[dict]:
        """The GPUs `user` holds, as the report last said (empty: none, or no report)."""
        if not self.data:
            return []
        return [g for g in self.data.gpus if user in (g.get("holders") or [g.get("holder")]) and not g.get("starting")]


REPORT = LastGpuReport()


def my_gpus(user) -> list[dict]:
    """The home page's template variable (c.JupyterHub.template_vars): what the
    user's own GPUs are doing, from the last report; never waits."""
    if user is None or getattr(user, "kind", "user") != "user":
        return []
    return [{"name": g["name"], "uuid": g["uuid"], "utilization": g.get("utilization"),
             "memory_used_gib": g["memory_used"] / 2**30, "memory_total_gib": g["memory_total"] / 2**30,
             "as_of": _clock(REPORT.at), "share": _share(g, user.name)}
            for g in REPORT.held_by(user.name)]


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _share(g: dict, user: str) -> dict | None:
    """A seat's memory budget on a shared GPU, for its holder's home page: what
    they use, by when to free some, and what was killed (daemon/gpu_share.py)."""
    share = (g.get("shares") or {}).get(user)
    if g.get("seats", 1) <= 1 or not share:
        return None
    return {"used_gib": share["used"] / 2**30, "budget_gib": share["budget"] / 2**30,
            "kill_at": _clock(share["kill_at"]) if share.get("kill_at") else None,
            "kills": [{"pid": k["pid"], "gib": k["bytes"] / 2**30, "at": _clock(k["time"])} for k in share["kills"]]}
