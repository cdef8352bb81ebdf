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

from .. import config, root_verdicts
from ..activation import hub_uid, listening_socket, peer_uid, run
from ..groups import RUNTIME_DIR, UNIT_SLICE
from ..protocol import MAX_MESSAGE, MAX_REQUEST, RequestError, error_reply
from . import validate
from .accounts import Accounts
from .gpus import GpuManager
from .sampler import sample_forever
from .spawns import Spawns
from .systemd import Systemd, SystemdError

log = logging.getLogger("jupyterhub-appliance")

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
    """The socket side: connections, framing, the peer check and dispatch."""

    def __init__(self, cfg: config.Config, hub_uid: int, systemd: Systemd | None = None,
                 max_connections: int = MAX_CONNECTIONS, request_deadline: float = REQUEST_DEADLINE,
                 queue_path=None, verdicts: Path = root_verdicts.VERDICTS):
        self.hub_uid = hub_uid
        self.systemd = systemd or Systemd()
        self.spawns = Spawns(cfg, self.systemd, GpuManager(self.systemd, queue_path=queue_path), verdicts)
        self.accounts = Accounts(cfg, self.systemd)
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.connections = 0  # being served now
        self.finished = 0  # connections finished (answered or closed) since the daemon started
        self.refused_busy = 0  # answered "busy" since the daemon started
        self._busy_logged = (0.0, 0)  # (when, refused_busy then): one log line per burst

    async def handle(self, req: object, uid: int) -> dict:
        """Who may ask (the peer's uid), which op, and which fields each op takes; the
        rest is the op's (spawns.py, and validate.py for a spawn's fields)."""
        op = validate.check_op(req, uid, self.hub_uid)
        assert isinstance(req, dict)
        if op in ("list", "gpus") and set(req) != {"op"}:
            extra = sorted(set(req) - {"op"})[0]
            raise RequestError("invalid", f"unknown field {str(extra)[:40]!r} for {op}; accepted: op", extra)
        if op == "list":
            return {"ok": True, "servers": await self.spawns.list_servers()}
        if op == "gpus":
            return await self.spawns.gpu_report()
        if op == "spawn":
            return await self.spawns.spawn(req)
        # account, stop and status name a user only: no other field is accepted.
        extra = sorted(set(req) - {"op", "user"})
        if extra:
            raise RequestError("invalid", f"unknown field {extra[0]!r} for {op}; accepted: op, user", extra[0])
        if op == "account":
            return await self.accounts.ensure(req)
        name = await self.spawns.known_user(req)
        if op == "status":
            return await self.spawns.status(name)
        return await self.spawns.stop_user(name)

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
            return e.reply()
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
    await daemon.spawns.reconcile_visitors()
    daemon.spawns.judge_at_start()
    server = await serve(daemon, sock)
    gpus = daemon.spawns.gpus
    inv = await gpus.inventory()
    held = await gpus.running(inv)
    log.info("jupyterhub-appliance daemon ready (hub uid %d, min uid %d); %s; held: %s", daemon.hub_uid,
             daemon.spawns.cfg["daemon"]["min_uid"],
             f"{len(inv.gpus)} GPUs, driver {inv.driver_version}" if inv.available else "CPU-only",
             ", ".join(f"{u}={list(g)}" for u, g in held.items()) or "none")
    try:
        log.info("%s", await daemon.spawns.apply_totals())
    except SystemdError as e:
        log.error("could not cap %s: %s", UNIT_SLICE, e)
    return server


async def amain() -> None:
    cfg = config.exit_if_invalid("jupyterhub-appliance-daemon")
    daemon = Daemon(cfg, hub_uid("jupyterhub-appliance-daemon"), queue_path=Path(RUNTIME_DIR) / "gpu-queue.json")
    server = await start(daemon, listening_socket("jupyterhub-appliance-daemon", "jupyterhub-appliance.socket"))
    # Runs as long as the daemon.
    sampler = asyncio.create_task(sample_forever(daemon.spawns.gpus, cfg["gpu"]))  # noqa: F841
    async with server:
        await server.serve_forever()


def main() -> None:
    run(amain)


if __name__ == "__main__":
    main()
