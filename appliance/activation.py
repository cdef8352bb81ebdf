"""Root services behind a unix socket: the socket systemd passed them, and who is on
the other end of a connection (the kernel's word, never the client's)."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import struct
import sys
from typing import Awaitable, Callable

from .groups import HUB_USER


def listening_socket(service: str, unit: str) -> socket.socket:
    """The socket systemd passed (fd 3), or a clear exit naming the unit to start it with."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit(f"{service}: start it through {unit} (no socket passed)")
    return socket.socket(fileno=3)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def hub_uid(service: str) -> int:
    """The hub's uid, the peer these services answer; a clear exit without it."""
    try:
        return pwd.getpwnam(HUB_USER).pw_uid
    except KeyError:
        sys.exit(f"{service}: no user {HUB_USER}; is the package installed?")


def run(amain: Callable[[], Awaitable[None]]) -> None:
    """A root service's main: log to the journal as LEVEL message, run until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    asyncio.run(amain())
