"""Root services behind a unix socket: the socket systemd passed them, and who is on
the other end of a connection (the kernel's word, never the client's)."""

from __future__ import annotations

import os
import socket
import struct
import sys


def listening_socket(service: str, unit: str) -> socket.socket:
    """The socket systemd passed (fd 3), or a clear exit naming the unit to start it with."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit(f"{service}: start it through {unit} (no socket passed)")
    return socket.socket(fileno=3)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid
