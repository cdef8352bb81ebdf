"""Talking to the daemon: one JSON line out, one back. Used by the spawner and applctl."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from .groups import DAEMON_SOCKET


class DaemonError(RuntimeError):
    """The daemon refused or failed; `code` and `field` say what, the message in words."""

    def __init__(self, code: str, message: str, field: str | None = None):
        self.code, self.field = code, field
        super().__init__(message)


def free_gpus(report: dict[str, Any]) -> int:
    """How many GPUs of the daemon's `gpus` report nobody holds."""
    return sum(1 for g in report.get("gpus", []) if not g.get("holder"))


def _reply(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise DaemonError("unavailable", "the appliance daemon closed the connection without answering")
    reply = json.loads(raw)
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise DaemonError(err.get("code", "error"), err.get("message", "unknown error"), err.get("field"))
    return reply


def _unavailable(path: str, e: OSError) -> DaemonError:
    return DaemonError(
        "unavailable",
        f"cannot reach the appliance daemon at {path} ({e.strerror or e}); "
        "check: systemctl status jupyterhub-appliance.socket",
    )


async def call(request: dict[str, Any], path: str = DAEMON_SOCKET, timeout: float = 120) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError as e:
        raise _unavailable(path, e) from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    return _reply(raw)


def call_sync(request: dict[str, Any], path: str = DAEMON_SOCKET, timeout: float = 120) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as e:
            raise _unavailable(path, e) from None
        s.sendall(json.dumps(request).encode() + b"\n")
        with s.makefile("rb") as f:
            return _reply(f.readline())
