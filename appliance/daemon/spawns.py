"""What the daemon does for a request: spawn, stop, status, the server list, the GPU
report, and the slice's totals, with the quota and [limits] the daemon reads itself.

Spawns and stops run one at a time per user, each to its end (started and recorded,
or rolled back) even if its client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from dbus_fast import Variant

from .. import config, ephemeral, limits, root_verdicts, users
from ..gpu.allocator import CapacityError, Kind
from ..gpu.devices import held
from ..groups import UNIT_SLICE
from ..protocol import RequestError, error_reply
from . import units, validate
from .gpus import GpuManager, Queued, QueueTimeout
from .systemd import RUNNING_STATES, Systemd, SystemdError
from .visitors import Visitors

log = logging.getLogger("jupyterhub-appliance")

START_TIMEOUT = 60.0
# How long the run of root's check started with the daemon is waited for in all
# (spawns meanwhile wait START_TIMEOUT each, then are told to try again).
JUDGE_AT_START_TIMEOUT = 3600.0
STOP_TIMEOUT = 30.0
UNLOAD_TIMEOUT = 10.0  # for a stopped unit to be unloaded before its name is used again
PORT_TRIES = 3  # ports tried for a server whose port someone else took first
INFINITY = 2**64 - 1  # systemd's "no limit" for MemoryMax and CPUQuotaPerSecUSec
# ExecMainCode (a siginfo code): how the main process ended.
EXIT_KINDS = {1: "exited", 2: "killed", 3: "dumped"}


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now, as the kernel picks one; the socket unit that
    binds it next finds out whether it still is."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spawns:
    def __init__(self, cfg: config.Config, systemd: Systemd, gpus: GpuManager,
                 verdicts: Path = root_verdicts.VERDICTS):
        self.cfg = cfg
        self.systemd = systemd
        self.gpus = gpus
        self.visitors = Visitors(systemd)
        self.verdicts = verdicts  # root_grants' verdict on sudo and polkit
        # One spawn or stop per user at a time; different users proceed in parallel.
        self._user_locks: dict[str, asyncio.Lock] = {}
        # Spawns and stops run as their own tasks, shielded from their connection.
        self._tasks: set[asyncio.Task] = set()
        # root_grants' run started with this daemon (judge_at_start): until it has
        # ended, a verdict on disk may be older than a grant made while the daemon was down.
        self._judged_at_start: asyncio.Task | None = None

    # --- the requests ------------------------------------------------------------

    async def spawn(self, req: dict) -> dict:
        spec = await asyncio.to_thread(validate.check_spawn, req, self.cfg)  # pwd/grp may block
        if not spec.visitor and not self.cfg["daemon"]["allow_privileged_users"]:
            await self.check_root_grants(spec.user)
        return await self._shielded(self._locked(spec.user, self._start(spec)))

    async def known_user(self, req: dict) -> str:
        """The user a stop or status names."""
        return await asyncio.to_thread(self._known_user, req, self.cfg["daemon"]["min_uid"])

    async def status(self, name: str) -> dict:
        unit = users.unit_name(name)
        return {"ok": True, "unit": unit, **await self.unit_status(unit), "gpus": await self.unit_gpus(unit)}

    async def stop_user(self, name: str) -> dict:
        left = self.gpus.leave_queue(name)
        reply = await self._shielded(self._locked(name, self.stop(users.unit_name(name))))
        return reply | {"left_queue": left}

    async def gpu_report(self) -> dict:
        return {"ok": True, **await self.gpus.report(self.cfg["gpu"])}

    async def reconcile_visitors(self) -> None:
        await self.visitors.reconcile(self.cfg["hub"]["mode"], self.stop)

    # --- how ---------------------------------------------------------------------

    def _lock(self, user: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user, asyncio.Lock())

    async def _locked(self, user: str, work) -> dict:
        async with self._lock(user):
            return await work

    async def _shielded(self, work) -> dict:
        """Run a spawn or stop to its end even if the connection's task is cancelled:
        half a spawn would leave a unit and a GPU claim that nobody answers for."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def judge_at_start(self) -> None:
        """Run root's check of sudo and polkit rights now, in the background: the
        daemon serves meanwhile, and spawns wait for it (check_root_grants)."""
        self._judged_at_start = asyncio.create_task(self._run_root_check(JUDGE_AT_START_TIMEOUT))

    async def _run_root_check(self, timeout: float = START_TIMEOUT) -> None:
        """One run of root's check, ended (or timed out). A start while a run is under way joins it."""
        try:
            job = await self.systemd.start_unit(root_verdicts.UNIT)
            await self.systemd.wait_for(root_verdicts.UNIT, ("inactive", "failed"), timeout, job)
        except SystemdError as e:
            log.error("could not run %s: %s", root_verdicts.UNIT, e)

    async def check_root_grants(self, name: str) -> None:
        """Refuse a server to an account sudo or polkit makes root-equivalent. This
        daemon cannot ask sudo or read polkit's rules (root_grants.py says why):
        root's check does, in its own unit; one that has not judged NAME yet (just
        added, say) is run now, and until it has, NAME gets no server. The verdict
        is believed only once the run started with this daemon has ended."""
        if self._judged_at_start is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._judged_at_start), START_TIMEOUT)
            except asyncio.TimeoutError:
                raise RequestError(
                    "root_check", f"the check of sudo and polkit rights that started with the daemon has not ended "
                    f"in {START_TIMEOUT:g} s, so no server starts yet; try again in a minute, or see: systemctl "
                    f"status {root_verdicts.UNIT}", "user") from None
        verdict = await asyncio.to_thread(root_verdicts.read_verdicts, self.verdicts)
        if verdict is None or name not in verdict["checked"]:
            await self._run_root_check()
            verdict = await asyncio.to_thread(root_verdicts.read_verdicts, self.verdicts)
        if verdict is None or name not in verdict["checked"]:
            raise RequestError(
                "root_check", f"{name} has not been checked for sudo and polkit rights, so gets no server yet; "
                f"see: systemctl status {root_verdicts.UNIT}", "user")
        why = verdict["granted"].get(name)
        if why:
            raise RequestError(
                "privileged_user", f"{name} is root in all but name ({'; '.join(map(str, why))[:400]}); the "
                "appliance starts no server for such accounts (root may allow it: daemon.allow_privileged_users "
                "= true in appliance.toml)", "user")

    @staticmethod
    def _known_user(req: dict, min_uid: int) -> str:
        # Stop and status must work for a user who was just removed from the group,
        # and for a visitor in either mode: they can only end a server.
        if ephemeral.is_visitor(req.get("user")):
            return req["user"]
        try:
            return users.lookup(req.get("user"), min_uid).pw_name
        except users.UserError as e:
            raise RequestError("invalid_user", str(e), "user") from None

    async def _start(self, spec: validate.SpawnSpec) -> dict:
        unit = users.unit_name(spec.user)
        if not spec.visitor:
            return await self._start_unit(unit, spec)
        await self.visitors.check_cap(unit, self.cfg["ephemeral"])
        self.visitors.starting.add(unit)  # counted by the cap until it runs or fails
        try:
            if spec.content_hosts:
                spec.content = await self.visitors.content_addresses(spec.user, spec.content_hosts)
            return await self._start_unit(unit, spec)
        finally:
            self.visitors.starting.discard(unit)

    async def _start_unit(self, unit: str, spec: validate.SpawnSpec) -> dict:
        self.apply_limits(spec)
        secret_env = self.secret_env()
        props = await self.systemd.unit_properties(unit, ("ActiveState",))
        state = props["ActiveState"] if props else "inactive"
        if state in RUNNING_STATES or (props and state == "inactive"):
            # The hub asks for a spawn only when it believes no server runs: a
            # leftover unit (hub database lost, crash, a start still queued) is
            # replaced, never shared.
            log.warning("%s is %s before spawn; stopping it first", unit, state)
            await self.stop(unit)
        await self._reset(unit)
        # A stopped unit is unloaded asynchronously; starting a new one with the same
        # name before that answers UnitExists. Its socket unit goes with it (BindsTo=).
        await self.systemd.wait_unloaded(units.socket_unit(unit), UNLOAD_TIMEOUT)
        if not await self.systemd.wait_unloaded(unit, UNLOAD_TIMEOUT):
            # A unit started before systemd itself was upgraded and re-executed
            # (Debian 12 -> 13) stays loaded once stopped, its cgroup gone, until a
            # daemon-reload lets go of it (tests/packaging/test_dist_upgrade.py).
            log.warning("%s is still loaded %g s after it stopped; reloading systemd to let go of it", unit,
                        UNLOAD_TIMEOUT)
            await self.systemd.reload()
            await self.systemd.wait_unloaded(unit, UNLOAD_TIMEOUT)
        gpu = self.cfg["gpu"]
        profile = self.cfg["profiles"][spec.profile] if spec.profile else {}
        kind = Kind(profile.get("mig", ""), profile.get("gpu_share", 0))
        try:
            if gpu["queue"]:
                got = await self.gpus.request(spec.user, unit, spec.gpus, spec.cpu_fallback, gpu["queue_timeout"],
                                              kind, gpu["shared"])
                if isinstance(got, Queued):
                    # Not started: the hub asks again with the same request until it is.
                    return {"ok": True, "unit": unit, "state": "queued", **got.to_dict()}
                inv, spec.gpu_uuids = got
            else:
                inv, spec.gpu_uuids = await self.gpus.assign(unit, spec.gpus, spec.cpu_fallback, kind, gpu["shared"])
        except CapacityError as e:
            log.info("no GPU for %s: %s", spec.user, e)
            raise RequestError("capacity", str(e), "gpus") from None
        except QueueTimeout as e:
            log.info("GPU queue: %s waited until queue_timeout", spec.user)
            raise RequestError("queue_timeout", str(e), "gpus") from None
        spec.gpu_devices = tuple(inv.by_uuid(u) for u in spec.gpu_uuids)
        spec.device_group = gpu["device_group"] if spec.gpu_devices else ""
        try:
            for attempt in range(1, PORT_TRIES + 1):
                state, port_taken = await self._run_unit(unit, spec, secret_env)
                if not port_taken or attempt == PORT_TRIES:
                    break
                # Taken between the hub's choice and systemd's bind, by anyone: the
                # daemon chooses another, and tells the hub which in its reply.
                log.warning("%s: port %d was taken before systemd could hold it; trying another", unit, spec.port)
                validate.move_to_port(spec, free_loopback_port())
        finally:
            # Active: its DeviceAllow= is the record from now on. Not active: rolled
            # back, so no queued start job can still take the GPUs.
            self.gpus.started(unit)
        if state != "active":
            log.error("%s did not start: %s", unit, state)
            why = f"port {spec.port} and the {PORT_TRIES - 1} tried before it were taken by another program" \
                if port_taken else f"state {state}"
            return error_reply("start_failed", f"the server unit {unit} did not start ({why}); "
                               f"see: journalctl -u {unit}")
        log.info("started %s for %s with GPUs [%s] on port %s", unit, spec.user, ", ".join(spec.gpu_uuids), spec.port)
        return {"ok": True, "unit": unit, "state": state, "gpus": list(spec.gpu_uuids), "port": spec.port}

    async def _run_unit(self, unit: str, spec: validate.SpawnSpec, secret_env: dict[str, str]) -> tuple[str, bool]:
        """Start the server's unit, with the socket unit that holds its port; roll
        both back unless the server runs. Its state, and whether the port was taken."""
        state, port_taken = "inactive", False
        apps = self.cfg["apps"]
        env_file = units.write_env_file(unit, units.server_env(spec, self.cfg["spawner"]["jupyterlab_news"],
                                                               secret_env, apps))
        sock = [(units.socket_unit(unit), units.socket_properties(unit, spec.port))] if spec.port else []
        hosts = units.write_hosts_file(unit, spec.content) if spec.content else None
        spec.hosts_file = str(hosts) if hosts else None
        try:
            job = await self.systemd.start_transient(unit, units.properties(unit, spec, env_file, apps=apps), sock)
            state = await self.systemd.wait_for(unit, ("active", "failed", "inactive"), START_TIMEOUT, job)
        finally:
            if state != "active":
                port_taken = bool(sock) and await self.systemd.active_state(sock[0][0]) == "failed"
                await self._roll_back(unit)
            env_file.unlink(missing_ok=True)
            if hosts:  # bound into the server already: its mount keeps the file
                hosts.unlink(missing_ok=True)
        return state, port_taken

    async def _reset(self, unit: str) -> None:
        """Let systemd forget a failed server unit and its socket unit (a port that
        was taken leaves the socket failed), so that both names can be used again."""
        await self.systemd.reset_failed(unit)
        await self.systemd.reset_failed(units.socket_unit(unit))

    def secret_env(self) -> dict[str, str]:
        """[spawner] environment_file, read afresh at each spawn; only root reads it,
        so the hub never holds these values."""
        spawner = self.cfg["spawner"]
        if not spawner["environment_file"]:
            return {}
        try:
            return config.read_environment_file(spawner["environment_file"], spawner["environment"])
        except config.EnvFileError as e:
            log.error("%s", e)
            raise RequestError("config", str(e), "env") from None

    async def _roll_back(self, unit: str) -> None:
        """Undo a start that did not reach active. A start job still in systemd's queue
        shows "inactive" yet would run later with its GPUs: stopping the unit cancels
        it. Only once the unit is gone may the caller drop its GPU claim (and if it is
        not gone in time, list_units still counts it while it runs or is queued)."""
        try:
            await self.systemd.stop(unit)
            await self._reset(unit)
            if not await self.systemd.wait_unloaded(unit, STOP_TIMEOUT):
                log.error("%s is still loaded %d s after a failed start", unit, STOP_TIMEOUT)
            else:
                await self.visitors.forget(unit)
        except SystemdError as e:
            log.error("rolling back %s: %s", unit, e)

    def apply_limits(self, spec: validate.SpawnSpec) -> None:
        """[limits] as the daemon reads them, with the profile's own; what the hub
        asked for (Spawner.mem_limit, cpu_limit) can only make them tighter."""
        profile = self.cfg["profiles"].get(spec.profile) if spec.profile else None
        mine = limits.for_user(self.cfg["limits"], spec.user, spec.groups, profile)
        if spec.visitor:
            eph = self.cfg["ephemeral"]
            mine = limits.Limits(eph["mem_limit"], float(eph["cpu_limit"]) or None, mine.tasks)
        spec.mem_limit = min((x for x in (mine.mem, spec.mem_limit) if x), default=None)
        spec.cpu_limit = min((x for x in (mine.cpu, spec.cpu_limit) if x), default=None)
        spec.tasks_max = mine.tasks

    async def unit_status(self, unit: str) -> dict:
        """State, and for a unit that ended on its own, how: systemd keeps a failed
        unit (CollectMode=inactive) until the next spawn resets it, so the hub can
        tell the person why (out of memory, a crash)."""
        props = await self.systemd.unit_properties(
            unit, ("ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "MemoryMax", "ExecStart"))
        if props is None:
            return {"state": "inactive"}
        # The Python it runs: the hub restarts a server left on the old one by a
        # Debian upgrade (hub/spawner.py).
        out = {"state": props["ActiveState"], "python": units.python_of(props.get("ExecStart"))}
        if props["ActiveState"] == "failed":
            out |= {"result": props["Result"], "exit_code": props["ExecMainStatus"],
                    "exit_kind": EXIT_KINDS.get(props["ExecMainCode"], "exited"), "memory_max": props["MemoryMax"]}
        return out

    async def unit_gpus(self, unit: str) -> list[str]:
        props = await self.systemd.unit_properties(unit, ("DeviceAllow",))
        if not props:
            return []
        inv = await self.gpus.inventory()
        return held(props["DeviceAllow"], inv.gpus)

    async def stop(self, unit: str) -> dict:
        await self.systemd.stop(unit)
        state = await self.systemd.wait_for(unit, ("inactive", "failed"), STOP_TIMEOUT)
        await self._reset(unit)
        (units.ENV_DIR / f"{unit}.env").unlink(missing_ok=True)
        log.info("stopped %s", unit)
        if state in ("inactive", "failed"):
            await self.visitors.forget(unit)
        return {"ok": True, "unit": unit, "state": state}

    async def list_servers(self) -> list[dict]:
        inv = await self.gpus.inventory()
        held = await self.gpus.running(inv)
        servers = []
        for name, state in await self.systemd.list_units("jupyter-*.service"):
            if not users.user_of_unit(name):
                continue
            props = await self.systemd.unit_properties(name, ("MemoryCurrent", "ActiveEnterTimestamp")) or {}
            memory = props.get("MemoryCurrent")
            since = props.get("ActiveEnterTimestamp") or 0
            servers.append({"unit": name, "user": users.user_of_unit(name), "state": state,
                            "gpus": list(held.get(name, ())),
                            # systemd says "no value" with 2^64-1, e.g. without memory accounting
                            "memory": memory if isinstance(memory, int) and memory < 2**64 - 1 else None,
                            "since": since / 1e6 if since else None})
        return servers

    async def apply_totals(self) -> str:
        """[limits] total_memory and total_cpu on jupyter-users.slice, which holds every
        server (the hub, proxy and daemon stay outside it), without restarting any.
        An administrator's own drop-in for the slice (systemctl edit) wins: then the
        daemon leaves the slice alone. Returns what it did, for the log."""
        props = await self.systemd.unit_properties(UNIT_SLICE, ("DropInPaths",)) or {}
        mine = [p for p in props.get("DropInPaths", []) if p.startswith("/etc/")]
        if mine:
            return f"{UNIT_SLICE}: left to the administrator's drop-ins ({', '.join(mine)})"
        mem, cpu = limits.totals(self.cfg["limits"])
        await self.systemd.set_properties(UNIT_SLICE, [
            ("MemoryAccounting", Variant("b", True)), ("MemoryMax", Variant("t", mem or INFINITY)),
            ("CPUAccounting", Variant("b", True)),
            ("CPUQuotaPerSecUSec", Variant("t", int(cpu * 1_000_000) if cpu else INFINITY))])
        return (f"{UNIT_SLICE}: all user servers together at most "
                f"{f'{mem / limits.GiB:.1f} GiB' if mem else 'unlimited memory'}, "
                f"{f'{cpu:g} cores' if cpu else 'unlimited CPU'}")
