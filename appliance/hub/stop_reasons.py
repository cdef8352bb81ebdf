"""Why a server stopped, when its owner did not ask: worded for them, kept for them.

Who asked for a stop is known only to the REST handler (handlers.py), which hands
it to the spawner; a server that died on its own is seen by the spawner's poll in
the daemon's report of the unit's result. Pure functions, no I/O, except `log`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from .. import journal

CULLER = "idle-culler"
RECLAIMER = "gpu-reclaimer"
APPLCTL = "applctl"

# The journal field `journalctl APPLIANCE_STOP_REASON=gpu-idle` filters on.
REASONS = ("idle", "max-age", "gpu-idle", "oom", "admin", "crashed", "python-upgrade", "sso-disabled")


@dataclass(frozen=True)
class StopReason:
    reason: str  # one of REASONS
    text: str  # "because ..." for the owner
    time: float  # epoch seconds
    # The hub started the server again itself: the notice says so, and stays on the
    # home page while the new run goes on.
    restarted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object) -> "StopReason | None":
        if isinstance(d, dict) and d.get("reason") in REASONS:
            try:
                return cls(d["reason"], str(d["text"]), float(d["time"]), d.get("restarted") is True)
            except (KeyError, TypeError, ValueError):
                return None
        return None

    def message(self) -> str:
        return f"Your server was {'restarted' if self.restarted else 'stopped'} at " \
               f"{time.strftime('%H:%M on %d %b', time.localtime(self.time))} because {self.text}."


def _minutes(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{int(seconds)} seconds" if seconds < 120 else f"{m} minutes" if m < 120 else f"{m // 60} hours"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def by_request(requester_kind: str, requester_name: str, requester_admin: bool, owner: str, now: float,
               server_age: float | None, culler: dict, gpu: dict) -> StopReason | None:
    """The reason for a stop asked through the REST API; None when the owner asked.

    requester_kind: "service" or "user". The culler does not say why it stops a
    server: past max_age it is age, otherwise idleness (its own rule).
    """
    if requester_kind == "service":
        if requester_name == CULLER:
            if culler.get("max_age") and server_age is not None and server_age >= culler["max_age"]:
                return StopReason("max-age", f"it reached the maximum age of {_minutes(culler['max_age'])}", now)
            return StopReason("idle", f"it was idle for {_minutes(culler['timeout'])}", now)
        if requester_name == RECLAIMER:
            waiting = " while someone was waiting for a GPU" if gpu.get("reclaim") != "always" else ""
            return StopReason("gpu-idle", f"its GPU was idle for {_minutes(gpu.get('idle_timeout', 1800))}{waiting}",
                              now)
        if requester_name == APPLCTL:  # the administrators' own tool: its name means nothing to the owner
            return StopReason("admin", "an administrator stopped it", now)
        return StopReason("admin", f"an administrator's service ({requester_name}) stopped it", now)
    if requester_name == owner:
        return None
    return StopReason("admin", "an administrator stopped it", now)


def by_unit(status: dict, now: float) -> StopReason | None:
    """The reason a unit ended on its own, from the daemon's status reply; None for a
    clean exit (the person shut the server down from JupyterLab)."""
    result = status.get("result")
    if result == "oom-kill":
        limit = status.get("memory_max")
        said = f" (limit {_size(limit)})" if isinstance(limit, int) and 0 < limit < 2**63 - 1 else ""
        return StopReason("oom", f"it ran out of memory{said}", now)
    if result in (None, "", "success"):
        return None
    kind, code = status.get("exit_kind"), status.get("exit_code")
    how = f"signal {code}" if kind in ("killed", "dumped") else f"exit code {code}" if code is not None else result
    return StopReason("crashed", f"it crashed ({how})", now)


def python_upgrade(ran: str, runs: str, now: float, restarted: bool = True) -> StopReason:
    """A server left on the Python of the Debian release before an upgrade: its
    environment's files are gone, so the hub restarts it (spawner.py); if the new
    start failed, the owner is told to start it."""
    then = "" if restarted else ", and it could not be started again: start it from this page"
    return StopReason("python-upgrade", f"the system was upgraded from Python {ran} to {runs}; your files "
                      f"are kept, but what your kernels held in memory was lost{then}", now, restarted)


def disabled_at_provider(now: float) -> StopReason:
    """Single sign-on: the provider refused the person's refresh token (sso_sessions.py)."""
    return StopReason("sso-disabled", "your account was disabled at the identity provider", now)


def log(log_: logging.Logger, user: str, why: StopReason) -> None:
    """The hub's log line, with the reason as a journal field to filter on."""
    line = f"stopped {user}'s server: {why.text} [{why.reason}]"
    log_.info(line)
    journal.send(line, APPLIANCE_STOP_REASON=why.reason, APPLIANCE_USER=user)
