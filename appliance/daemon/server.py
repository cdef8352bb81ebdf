"""jupyterhub-appliance daemon: socket-activated, root, one JSON request per connection.

Peers are identified by SO_PEERCRED, never by anything they send: uid `jupyterhub`
may spawn, stop and ask for status; root may do everything. Every refusal is
answered with a structured error and logged.

A hostile or broken client gets an answer or a closed connection, never a hang, and
never stops the daemon serving others: a request is one line of at most MAX_REQUEST
bytes read within REQUEST_DEADLINE seconds in all; at most MAX_CONNECTIONS are served
at once and the rest are told "busy" at once; name-service and NVML calls run in
threads; a spawn runs to its end (started and recorded, or rolled back) even if its
client goes away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

from dbus_fast import Variant

from .. import config, ephemeral, limits, root_grants, users
from ..activation import hub_uid, listening_socket, peer_uid, run
from ..gpu.allocator import CapacityError
from ..gpu.devices import minors_of
from ..groups import RUNTIME_DIR, UNIT_SLICE
from ..protocol import MAX_MESSAGE, MAX_REQUEST, RequestError, error_reply
from . import units, validate
from .gpus import GpuManager, Queued, QueueTimeout
from .systemd import RUNNING_STATES, Systemd, SystemdError

log = logging.getLogger("jupyterhub-appliance")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# For reading a whole request line, not per read: a client sending a byte a second
# is cut off after this.
REQUEST_DEADLINE = 10.0
# Connections served at once; more are answered "busy" and closed, not queued.
MAX_CONNECTIONS = 128
# After its answer, how long a connection may go on sending before it is closed.
LINGER = 0.25
# A request needs 3 levels (request, env/extra, value); deeper is refused before
# validation, whose messages repr() values.
MAX_DEPTH = 16
INFINITY = 2**64 - 1  # systemd's "no limit" for MemoryMax and CPUQuotaPerSecUSec
# ExecMainCode (a siginfo code): how the main process ended.
EXIT_KINDS = {1: "exited", 2: "killed", 3: "dumped"}


def _depth_ok(value: object, limit: int) -> bool:
    """Whether parsed JSON nests at most `limit` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return False
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


class Daemon:
    def __init__(self, cfg: config.Config, hub_uid: int, systemd: Systemd | None = None,
                 max_connections: int = MAX_CONNECTIONS, request_deadline: float = REQUEST_DEADLINE,
                 queue_path=None, verdicts: Path = root_grants.VERDICTS):
        self.cfg = cfg
        self.verdicts = verdicts  # root_grants' verdict on sudo and polkit
        self.hub_uid = hub_uid
        self.systemd = systemd or Systemd()
        self.gpus = GpuManager(self.systemd, queue_path=queue_path)
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.connections = 0  # being served now
        self.finished = 0  # connections finished (answered or closed) since the daemon started
        self.refused_busy = 0  # answered "busy" since the daemon started
        self._busy_logged = (0.0, 0)  # (when, refused_busy then): one log line per burst
        # One spawn or stop per user at a time; different users proceed in parallel.
        self._user_locks: dict[str, asyncio.Lock] = {}
        # Spawns and stops run as their own tasks, shielded from their connection.
        self._tasks: set[asyncio.Task] = set()
        self._visitors_starting: set[str] = set()  # units of visitors' spawns under way

    def _lock(self, user: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user, asyncio.Lock())

    async def handle(self, req: object, uid: int) -> dict:
        op = validate.check_op(req, uid, self.hub_uid)
        assert isinstance(req, dict)
        min_uid = self.cfg["daemon"]["min_uid"]
        if op in ("list", "gpus") and set(req) != {"op"}:
            extra = sorted(set(req) - {"op"})[0]
            raise RequestError("invalid", f"unknown field {str(extra)[:40]!r} for {op}; accepted: op", extra)
        if op == "list":
            return {"ok": True, "servers": await self.list_servers()}
        if op == "gpus":
            return {"ok": True, **await self.gpus.report(self.cfg["gpu"])}
        if op == "spawn":
            spec = await asyncio.to_thread(validate.check_spawn, req, self.cfg)  # pwd/grp may block
            if not spec.visitor and not self.cfg["daemon"]["allow_privileged_users"]:
                await self.check_root_grants(spec.user)
            return await self._shielded(self._locked(spec.user, self.spawn(spec)))
        # stop and status name a user only: no other field is accepted.
        extra = sorted(set(req) - {"op", "user"})
        if extra:
            raise RequestError("invalid", f"unknown field {extra[0]!r} for {op}; accepted: op, user", extra[0])
        name = await asyncio.to_thread(self._known_user, req, min_uid)
        unit = users.unit_name(name)
        if op == "status":
            return {"ok": True, "unit": unit, **await self.unit_status(unit), "gpus": await self.unit_gpus(unit)}
        left = self.gpus.leave_queue(name)
        reply = await self._shielded(self._locked(name, self.stop(unit)))
        return reply | {"left_queue": left}

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

    async def check_root_grants(self, name: str) -> None:
        """Refuse a server to an account sudo or polkit makes root-equivalent. This
        daemon cannot ask sudo or read polkit's rules (root_grants.py says why):
        root's check does, in its own unit; one that has not judged NAME yet (just
        added, say) is run now, and until it has, NAME gets no server."""
        verdict = await asyncio.to_thread(root_grants.read_verdicts, self.verdicts)
        if verdict is None or name not in verdict["checked"]:
            try:
                job = await self.systemd.start_unit(root_grants.UNIT)
                await self.systemd.wait_for(root_grants.UNIT, ("inactive", "failed"), START_TIMEOUT, job)
            except SystemdError as e:
                log.error("could not run %s: %s", root_grants.UNIT, e)
            verdict = await asyncio.to_thread(root_grants.read_verdicts, self.verdicts)
        if verdict is None or name not in verdict["checked"]:
            raise RequestError(
                "root_check", f"{name} has not been checked for sudo and polkit rights, so gets no server yet; "
                f"see: systemctl status {root_grants.UNIT}", "user")
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

    async def spawn(self, spec: validate.SpawnSpec) -> dict:
        unit = users.unit_name(spec.user)
        if not spec.visitor:
            return await self._spawn(unit, spec)
        await self.check_visitors_cap(unit)
        self._visitors_starting.add(unit)  # counted by the cap until it runs or fails
        try:
            return await self._spawn(unit, spec)
        finally:
            self._visitors_starting.discard(unit)

    async def _spawn(self, unit: str, spec: validate.SpawnSpec) -> dict:
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
        await self.systemd.reset_failed(unit)
        # A stopped unit is unloaded asynchronously; starting a new one with the same
        # name before that answers UnitExists.
        await self.systemd.wait_unloaded(unit, 10)
        gpu = self.cfg["gpu"]
        try:
            if gpu["queue"]:
                got = await self.gpus.request(spec.user, unit, spec.gpus, spec.cpu_fallback, gpu["queue_timeout"])
                if isinstance(got, Queued):
                    # Not started: the hub asks again with the same request until it is.
                    return {"ok": True, "unit": unit, "state": "queued", **got.to_dict()}
                inv, spec.gpu_uuids = got
            else:
                inv, spec.gpu_uuids = await self.gpus.assign(unit, spec.gpus, spec.cpu_fallback)
        except CapacityError as e:
            log.info("no GPU for %s: %s", spec.user, e)
            raise RequestError("capacity", str(e), "gpus") from None
        except QueueTimeout as e:
            log.info("GPU queue: %s waited until queue_timeout", spec.user)
            raise RequestError("queue_timeout", str(e), "gpus") from None
        spec.gpu_minors = tuple(inv.by_uuid(u).minor for u in spec.gpu_uuids)
        spec.device_group = gpu["device_group"] if spec.gpu_minors else ""
        state = "inactive"
        try:
            env_file = units.write_env_file(unit, units.server_env(spec, self.cfg["spawner"]["jupyterlab_news"],
                                                                   secret_env))
            try:
                job = await self.systemd.start_transient(unit, units.properties(unit, spec, env_file))
                state = await self.systemd.wait_for(unit, ("active", "failed", "inactive"), START_TIMEOUT, job)
            finally:
                if state != "active":
                    await self._roll_back(unit)
                env_file.unlink(missing_ok=True)
        finally:
            # Active: its DeviceAllow= is the record from now on. Not active: rolled
            # back, so no queued start job can still take the GPUs.
            self.gpus.started(unit)
        if state != "active":
            log.error("%s did not start: %s", unit, state)
            return error_reply("start_failed", f"the server unit {unit} did not start (state {state}); "
                               f"see: journalctl -u {unit}")
        log.info("started %s for %s with GPUs [%s]", unit, spec.user, ", ".join(spec.gpu_uuids))
        return {"ok": True, "unit": unit, "state": state, "gpus": list(spec.gpu_uuids)}

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
            await self.systemd.reset_failed(unit)
            if not await self.systemd.wait_unloaded(unit, STOP_TIMEOUT):
                log.error("%s is still loaded %d s after a failed start", unit, STOP_TIMEOUT)
            else:
                await self.forget_visitor(unit)
        except SystemdError as e:
            log.error("rolling back %s: %s", unit, e)

    async def check_visitors_cap(self, unit: str) -> None:
        """[ephemeral] max_visitors, and the warm pool on top: the hub checks it before
        it makes a visitor, the daemon again before it starts anything."""
        eph = self.cfg["ephemeral"]
        cap = eph["max_visitors"] + eph["warm_pool"]
        running = {name for name, state in await self.systemd.list_units("jupyter-visitor-*.service")
                   if state in RUNNING_STATES} | self._visitors_starting
        running.discard(unit)
        if len(running) >= cap:
            raise RequestError("full", f"{ephemeral.FULL_MESSAGE} ({len(running)} visitors' servers run; "
                                  f"ephemeral.max_visitors and warm_pool allow {cap})", "user")

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
            unit, ("ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "MemoryMax"))
        if props is None:
            return {"state": "inactive"}
        out = {"state": props["ActiveState"]}
        if props["ActiveState"] == "failed":
            out |= {"result": props["Result"], "exit_code": props["ExecMainStatus"],
                    "exit_kind": EXIT_KINDS.get(props["ExecMainCode"], "exited"), "memory_max": props["MemoryMax"]}
        return out

    async def unit_gpus(self, unit: str) -> list[str]:
        props = await self.systemd.unit_properties(unit, ("DeviceAllow",))
        if not props:
            return []
        inv = await self.gpus.inventory()
        by_minor = {g.minor: g.uuid for g in inv.gpus}
        return [by_minor.get(m, f"minor:{m}") for m in minors_of(props["DeviceAllow"])]

    async def stop(self, unit: str) -> dict:
        await self.systemd.stop(unit)
        state = await self.systemd.wait_for(unit, ("inactive", "failed"), STOP_TIMEOUT)
        await self.systemd.reset_failed(unit)
        (units.ENV_DIR / f"{unit}.env").unlink(missing_ok=True)
        log.info("stopped %s", unit)
        if state in ("inactive", "failed"):
            await self.forget_visitor(unit)
        return {"ok": True, "unit": unit, "state": state}

    async def forget_visitor(self, unit: str) -> None:
        """Nothing of a visitor is kept: their home goes with their server, deleted by
        a one-shot unit once the server's unit is inactive (no process left)."""
        name = users.user_of_unit(unit)
        if not ephemeral.is_visitor(name) or name not in await asyncio.to_thread(ephemeral.leftover_homes):
            return
        cleaner = ephemeral.cleaner_unit(name)
        await self.systemd.reset_failed(cleaner)
        job = await self.systemd.start_transient(cleaner, units.cleaner_properties(name))
        await self.systemd.wait_for(cleaner, ("inactive", "failed"), STOP_TIMEOUT, job)
        # The unit is collected even when it fails: what is left on disk tells.
        if name in await asyncio.to_thread(ephemeral.leftover_homes):
            log.error("could not delete the home of visitor %s; see: journalctl -u %s", name, cleaner)
        else:
            log.info("deleted the home of visitor %s", name)

    async def reconcile_visitors(self) -> None:
        """At start: in accounts mode no visitor's server may run; in either mode no
        home may outlive its server (a crash, a reboot, a switch of mode)."""
        running = {name for name, state in await self.systemd.list_units("jupyter-visitor-*.service")
                   if state in RUNNING_STATES or state == "failed"}
        if self.cfg["hub"]["mode"] != "ephemeral":
            for unit in sorted(running):
                log.warning("%s is a visitor's server and the appliance is in accounts mode: stopping it", unit)
                await self.stop(unit)
            running = set()
        for name in await asyncio.to_thread(ephemeral.leftover_homes):
            if users.unit_name(name) not in running:
                await self.forget_visitor(users.unit_name(name))

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

    async def sample_forever(self) -> None:
        """Utilization samples for the reclaim rule, every [gpu] sample_interval."""
        gpu = self.cfg["gpu"]
        while True:
            try:
                await self.gpus.sample(gpu["idle_threshold"])
            except Exception:  # a failing sample must not end the sampling
                log.exception("GPU utilization sample failed")
            await asyncio.sleep(gpu["sample_interval"])

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer (or a closed connection); never raises."""
        try:
            if self.connections >= self.max_connections:
                self.refused_busy += 1
                self._log_busy()
                await self._answer(writer, error_reply("busy", f"the appliance daemon is serving {self.connections} "
                                                  "requests; try again in a moment"), reader)
                return
            self.connections += 1
            try:
                reply = await self._serve(reader, writer)
            finally:
                self.connections -= 1
            if reply is None:
                writer.close()
            else:
                await self._answer(writer, reply, reader)
        finally:
            self.finished += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict | None:
        uid = -1
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            try:
                line = await asyncio.wait_for(reader.readline(), self.request_deadline)
            except asyncio.TimeoutError:
                raise RequestError("timeout", f"no complete request line within {self.request_deadline:g} s") \
                    from None
            except ValueError:  # the stream's limit: refused at once, not buffered
                raise RequestError("too_large", f"a request is one JSON line of at most {MAX_REQUEST} bytes") \
                    from None
            if not line:
                log.info("uid %d closed the connection without a request", uid)
                return None
            if not line.endswith(b"\n"):
                raise RequestError("invalid", "a request is one line of JSON ending in a newline")
            try:
                req = json.loads(line)
            except (ValueError, RecursionError):
                raise RequestError("invalid", "a request is one line of JSON") from None
            if not _depth_ok(req, MAX_DEPTH):
                raise RequestError("invalid", f"a request nests at most {MAX_DEPTH} levels")
            return await self.handle(req, uid)
        except RequestError as e:
            log.warning("refused request from uid %d: %s", uid, str(e)[:MAX_MESSAGE])
            return error_reply(e.code, str(e), e.field)
        except SystemdError as e:
            log.error("systemd refused: %s", e)
            return error_reply("systemd", str(e))
        except ConnectionError as e:
            log.info("uid %d went away: %s", uid, e)
            return None
        except Exception:  # our bug, not the client's: say so, keep serving
            log.exception("internal error serving uid %d", uid)
            return error_reply("internal",
                               "internal error in the appliance daemon; see: journalctl -u jupyterhub-appliance")

    async def _answer(self, writer: asyncio.StreamWriter, reply: dict, reader: asyncio.StreamReader) -> None:
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), self.request_deadline)
        except (OSError, asyncio.TimeoutError) as e:  # gone, or not reading its answer
            log.info("could not answer a client (%s): %s", type(e).__name__, e)
            writer.transport.abort()
            return
        # Closing a Unix socket with input not yet read resets it, and the client
        # loses the answer (the "busy" one is sent before reading anything). So say
        # end-of-answer first, and read away what the client still sends, briefly.
        try:
            writer.write_eof()
            await asyncio.wait_for(_discard(reader), LINGER)
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()

    def _log_busy(self) -> None:
        now = asyncio.get_running_loop().time()
        when, count = self._busy_logged
        if now - when >= 5:
            log.warning("busy: %d connections served at once; refused %d since the last such line",
                        self.connections, self.refused_busy - count)
            self._busy_logged = (now, self.refused_busy)


async def serve(daemon: Daemon, sock: socket.socket) -> asyncio.Server:
    """Serve on a listening Unix socket. The stream limit is the request limit, so an
    oversized line is refused as soon as it is seen instead of being buffered."""
    return await asyncio.start_unix_server(daemon.serve_connection, sock=sock, limit=MAX_REQUEST,
                                           backlog=socket.SOMAXCONN)


async def start(daemon: Daemon, sock: socket.socket) -> asyncio.Server:
    """Reconcile visitors with systemd, then serve: a visitor's spawn served meanwhile
    could have its new home deleted by the cleaning of leftover homes. The rest
    (GPU inventory, the slice's caps) comes after, as before: with it also ahead of
    serving, test_3_applctl's back-to-back reloads failed (not understood yet)."""
    await daemon.reconcile_visitors()
    server = await serve(daemon, sock)
    inv = await daemon.gpus.inventory()
    held = await daemon.gpus.running(inv)
    log.info("jupyterhub-appliance daemon ready (hub uid %d, min uid %d); %s; held: %s", daemon.hub_uid,
             daemon.cfg["daemon"]["min_uid"],
             f"{len(inv.gpus)} GPUs, driver {inv.driver_version}" if inv.available else "CPU-only",
             ", ".join(f"{u}={list(g)}" for u, g in held.items()) or "none")
    try:
        log.info("%s", await daemon.apply_totals())
    except SystemdError as e:
        log.error("could not cap %s: %s", UNIT_SLICE, e)
    return server


async def amain() -> None:
    cfg = config.exit_if_invalid("jupyterhub-appliance-daemon")
    daemon = Daemon(cfg, hub_uid("jupyterhub-appliance-daemon"), queue_path=Path(RUNTIME_DIR) / "gpu-queue.json")
    server = await start(daemon, listening_socket("jupyterhub-appliance-daemon", "jupyterhub-appliance.socket"))
    sampler = asyncio.create_task(daemon.sample_forever())  # noqa: F841 (runs as long as the daemon)
    async with server:
        await server.serve_forever()


def main() -> None:
    run(amain)


if __name__ == "__main__":
    main()
