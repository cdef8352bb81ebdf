"""The GPU wait queue: who waits for how many GPUs, in arrival order.

A waiting spawn does not hold a connection: the hub asks again every second or so
with the same spawn request, and each ask runs a grant pass and answers the place
("queued") or the GPUs ("granted"). So a hub restart loses nothing: the new hub
asks again for the same user and finds the same place. An entry nobody asks about
for GRACE seconds (the hub is gone, the person left) is dropped, with any GPUs it
was granted. The daemon is the one owner; the queue is written to its runtime
directory on every change so that a daemon restart (`applctl reload`) keeps it.

Order: first come, first served among those asking for the same number of GPUs.
A grant pass walks the queue in arrival order and gives each entry GPUs if enough
are free, so a freed GPU goes to the earliest entry it can serve, never to a later
one asking for the same number.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..files import write_atomic
from ..gpu import allocator
from ..gpu.allocator import ANY, CapacityError, Kind
from ..gpu.inventory import GPU

log = logging.getLogger("jupyterhub-appliance")

# How long an entry lives without its hub asking about it.
GRACE = 120.0


@dataclass
class Entry:
    user: str
    unit: str
    count: int
    cpu_fallback: bool  # start on CPU if no GPU is free when the wait ends
    since: float  # wall clock of arrival (shown to people, kept across daemon restarts)
    seen: float  # wall clock of the hub's last ask
    granted: tuple[str, ...] = ()  # GPU UUIDs set aside for it, not yet started
    mig: str = ""  # a MIG profile its GPUs must be (its profile's `mig`); "": any
    share: int = 0  # N: a seat on a GPU shared N ways (its profile's gpu_share); 0: any

    @property
    def kind(self) -> Kind:
        return Kind(self.mig, self.share)


class GpuQueue:
    def __init__(self, path: Path | None = None):
        self.path = path
        self.entries: list[Entry] = []
        if path is not None:
            self._load()

    # --- queries -------------------------------------------------------------------

    def find(self, user: str) -> Entry | None:
        return next((e for e in self.entries if e.user == user), None)

    def waiting(self) -> list[Entry]:
        return [e for e in self.entries if not e.granted]

    def position(self, entry: Entry) -> int:
        """1-based place among those still waiting."""
        return next(i for i, e in enumerate(self.waiting(), 1) if e is entry)

    def reserved(self) -> dict[str, tuple[str, ...]]:
        """unit -> GPUs granted but not started: held, like a running unit's."""
        return {e.unit: e.granted for e in self.entries if e.granted}

    # --- changes -------------------------------------------------------------------

    def join(self, user: str, unit: str, count: int, cpu_fallback: bool, now: float, kind: Kind = ANY) -> Entry:
        """The user's entry, keeping its place if it asks for the same GPUs as before;
        asking for another number or kind is a new request, at the end."""
        entry = self.find(user)
        if entry is not None and (entry.count, entry.kind) != (count, kind):
            self.remove(user)
            entry = None
        if entry is None:
            entry = Entry(user, unit, count, cpu_fallback, since=now, seen=now, mig=kind.mig, share=kind.share)
            self.entries.append(entry)
        entry.seen, entry.cpu_fallback = now, cpu_fallback
        self._save()
        return entry

    def remove(self, user: str) -> Entry | None:
        entry = self.find(user)
        if entry is not None:
            self.entries.remove(entry)
            self._save()
        return entry

    def expire(self, now: float, grace: float = GRACE) -> list[Entry]:
        gone = [e for e in self.entries if now - e.seen > grace]
        for e in gone:
            self.entries.remove(e)
            log.info("GPU queue: dropped %s, not asked about for %d s%s", e.user, grace,
                     f" (released {', '.join(e.granted)})" if e.granted else "")
        if gone:
            self._save()
        return gone

    def grant(self, held: Mapping[str, Iterable[str]], gpus: Sequence[GPU],
              seats: Mapping[str, int] | None = None) -> list[Entry]:
        """Give free GPUs to waiting entries in arrival order. `held` (unit -> UUIDs)
        must include what is running and what is already granted; `seats`: the
        shared GPUs (allocator.per_gpu)."""
        held = {u: tuple(g) for u, g in held.items()}
        granted = []
        for e in self.waiting():
            others = {u: g for u, g in held.items() if u != e.unit}
            try:
                e.granted = allocator.assign(others, e.count, gpus, e.kind, seats)
            except CapacityError:
                continue
            held[e.unit] = e.granted
            granted.append(e)
            log.info("GPU queue: granted %s to %s after %.0f s", ", ".join(e.granted), e.user,
                     max(0.0, e.seen - e.since))
        if granted:
            self._save()
        return granted

    # --- persistence -----------------------------------------------------------------

    def to_list(self) -> list[dict]:
        return [asdict(e) | {"granted": list(e.granted)} for e in self.entries]

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            # The daemon's own runtime directory (root, 0700 by UMask): nobody else
            # can plant a link here.
            write_atomic(self.path, json.dumps(self.to_list()), 0o600)
        except OSError as e:
            log.error("GPU queue: cannot save %s: %s", self.path, e)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            # "fallback": the name in a queue a daemon of the previous release saved
            # before the upgrade restarted it.
            self.entries = [Entry(d["user"], d["unit"], int(d["count"]), bool(d.get("cpu_fallback", d.get("fallback"))),
                                  float(d["since"]), float(d["seen"]), tuple(d["granted"]), str(d.get("mig", "")),
                                  int(d.get("share", 0)))
                            for d in data]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("GPU queue: ignoring unreadable %s: %s", self.path, e)
            self.entries = []
            return
        if self.entries:
            log.info("GPU queue: kept across the restart: %s", ", ".join(e.user for e in self.entries))
