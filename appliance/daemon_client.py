"""Talking to the daemon: one JSON line out, one back. Used by the spawner and applctl."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from .groups import DAEMON_SOCKET
from .protocol import read_error

# "busy": the daemon refused the connection before reading it (too many at once),
# so nothing was done and asking again is safe, for up to this long.
BUSY_RETRY = 60.0


class DaemonError(RuntimeError):
    """The daemon refused or failed; `code` and `field` say what, the message in words."""

    def __init__(self, code: str, message: str, field: str | None = None):
        self.code, self.field = code, field
        super().__init__(message)


def _reply(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise DaemonError("unavailable", "the appliance daemon closed the connection without answering")
    reply = json.loads(raw)
    if not reply.get("ok"):
        raise DaemonError(*read_error(reply))
    return reply


def _closed_early(e: OSError) -> DaemonError:
    # The daemon closed before reading the request (it refuses extra connections at
    # once), so nothing was done: retried like "busy". Its answer, if any, is lost
    # with the failed write.
    return DaemonError("busy", f"the appliance daemon closed the connection before reading the request ({e})")


def _unavailable(path: str, e: OSError) -> DaemonError:
    return DaemonError(
        "unavailable",
        f"cannot reach the appliance daemon at {path} ({e.strerror or e}); "
        "check: systemctl status jupyterhub-appliance.socket",
    )


async def call(request: dict[str, Any], path: str = DAEMON_SOCKET, timeout: float = 120,
               busy_retry: float = BUSY_RETRY) -> dict[str, Any]:
    deadline = time.monotonic() + busy_retry
    delay = 0.05
    while True:
        try:
            return await _call(request, path, timeout)
        except DaemonError as e:
            if e.code != "busy" or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _call(request: dict[str, Any], path: str, timeout: float) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError as e:
        raise _unavailable(path, e) from None
    try:
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
        except ConnectionError as e:
            raise _closed_early(e) from None
        try:
            raw = await asyncio.wait_for(reader.readline(), timeout)
        except ConnectionError as e:
            raise _unavailable(path, e) from None
    finally:
        writer.close()
    return _reply(raw)


def call_sync(request: dict[str, Any], path: str = DAEMON_SOCKET, timeout: float = 120,
              busy_retry: float = BUSY_RETRY) -> dict[str, Any]:
    deadline = time.monotonic() + busy_retry
    delay = 0.05
    while True:
        try:
            return _call_sync(request, path, timeout)
        except DaemonError as e:
            if e.code != "busy" or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _call_sync(request: dict[str, Any], path: str, timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as e:
            raise _unavailable(path, e) from None
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
        except ConnectionError as e:
            raise _closed_early(e) from None
        with s.makefile("rb") as f:
            try:
                raw = f.readline()
            except ConnectionError as e:
                raise _unavailable(path, e) from None
        return _reply(raw)
