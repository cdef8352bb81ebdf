"""Ephemeral visitors' servers in the daemon: the cap on how many run, the
addresses of [ephemeral] content_hosts at each spawn, and the deletion of a
visitor's home once their server has stopped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .. import content, ephemeral, users
from ..protocol import RequestError
from . import units
from .systemd import RUNNING_STATES, Systemd, SystemdError

log = logging.getLogger("jupyterhub-appliance")

CLEAN_TIMEOUT = 30.0  # for deleting a home: as long as a stop may take (spawns.STOP_TIMEOUT)
# Content hosts' addresses are looked up again after this long: a burst of visitors
# shares one lookup, and a host that moved is followed within a minute.
RESOLVED_FOR = 60.0


class Visitors:
    def __init__(self, systemd: Systemd):
        self.systemd = systemd
        self.starting: set[str] = set()  # units of visitors' spawns under way
        self._resolved: tuple[float, list[str], dict[str, list[str]]] | None = None

    async def check_cap(self, unit: str, eph: dict) -> None:
        """[ephemeral] max_visitors, and the warm pool on top: the hub checks it before
        it makes a visitor, the daemon again before it starts anything."""
        cap = eph["max_visitors"] + eph["warm_pool"]
        running = {name for name, state in await self.systemd.list_units("jupyter-visitor-*.service")
                   if state in RUNNING_STATES} | self.starting
        running.discard(unit)
        if len(running) >= cap:
            raise RequestError("full", f"{ephemeral.FULL_MESSAGE} ({len(running)} visitors' servers run; "
                               f"ephemeral.max_visitors and warm_pool allow {cap})", "user")

    async def content_addresses(self, name: str, hosts: list[str]) -> dict[str, list[str]]:
        """[ephemeral] content_hosts -> the addresses visitor NAME's server may reach.
        Names are resolved here, by root's choice of resolver, never taken from the
        hub; a name that does not resolve is left out (and logged)."""
        found = {h: [h] for h in hosts if content.is_address(h)}
        names = [h for h in hosts if h not in found]
        if not names:
            return found
        cached = self._resolved
        if cached and cached[1] == names and time.monotonic() - cached[0] < RESOLVED_FOR:
            return {**found, **cached[2]}
        resolved = content.parse_resolved(await self._resolve(name, names), names)
        for host in names:
            if not resolved.get(host):
                log.warning("ephemeral.content_hosts: %s did not resolve; visitors' servers cannot reach it", host)
        if all(resolved.values()):
            self._resolved = (time.monotonic(), names, resolved)
        return {**found, **resolved}

    async def _resolve(self, name: str, names: list[str]) -> str:
        """Run the resolver unit (units.resolver_properties); its JSON, or "" on failure."""
        unit = units.resolver_unit(name)
        out = units.RESOLVED_DIR / f"{unit}.json"
        try:
            units.RESOLVED_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            out.unlink(missing_ok=True)
            await self.systemd.reset_failed(unit)
            job = await self.systemd.start_transient(unit, units.resolver_properties(names, out))
            await self.systemd.wait_for(unit, ("inactive", "failed"), units.RESOLVER_SECONDS + 5, job)
            return out.read_text(encoding="utf-8", errors="replace")[:1024 * 1024]
        except (SystemdError, OSError) as e:
            log.error("ephemeral.content_hosts: could not resolve %s (%s); see: journalctl -u %s",
                      ", ".join(names), e, unit)
            return ""
        finally:
            out.unlink(missing_ok=True)

    async def forget(self, unit: str) -> None:
        """Nothing of a visitor is kept: their home goes with their server, deleted by
        a one-shot unit once the server's unit is inactive (no process left)."""
        name = users.user_of_unit(unit)
        if not ephemeral.is_visitor(name) or name not in await asyncio.to_thread(ephemeral.leftover_homes):
            return
        cleaner = ephemeral.cleaner_unit(name)
        await self.systemd.reset_failed(cleaner)
        job = await self.systemd.start_transient(cleaner, units.cleaner_properties(name))
        await self.systemd.wait_for(cleaner, ("inactive", "failed"), CLEAN_TIMEOUT, job)
        # The unit is collected even when it fails: what is left on disk tells.
        if name in await asyncio.to_thread(ephemeral.leftover_homes):
            log.error("could not delete the home of visitor %s; see: journalctl -u %s", name, cleaner)
        else:
            log.info("deleted the home of visitor %s", name)

    async def reconcile(self, mode: str, stop: Callable[[str], Awaitable[dict]]) -> None:
        """At start: in accounts mode no visitor's server may run; in either mode no
        home may outlive its server (a crash, a reboot, a switch of mode)."""
        running = {name for name, state in await self.systemd.list_units("jupyter-visitor-*.service")
                   if state in RUNNING_STATES or state == "failed"}
        if mode != "ephemeral":
            for unit in sorted(running):
                log.warning("%s is a visitor's server and the appliance is in accounts mode: stopping it", unit)
                await stop(unit)
            running = set()
        for name in await asyncio.to_thread(ephemeral.leftover_homes):
            if users.unit_name(name) not in running:
                await self.forget(users.unit_name(name))
