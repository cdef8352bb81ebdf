"""One structured journal entry, over journald's native protocol.

The hub's ordinary log goes to the journal through stdout, where every line is just
MESSAGE; an entry with its own fields (APPLIANCE_STOP_REASON=idle) needs the native
socket. python-systemd is not in the bundled environment, and the protocol for
one-line values is this simple: KEY=value lines in one datagram.
"""

from __future__ import annotations

import os
import re
import socket

SOCKET = "/run/systemd/journal/socket"
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")


def send(message: str, priority: int = 6, **fields: str) -> bool:
    """Send MESSAGE with extra FIELDS; False when there is no journal to send to."""
    entry = {"MESSAGE": message, "PRIORITY": str(priority),
             "SYSLOG_IDENTIFIER": os.environ.get("SYSLOG_IDENTIFIER", "jupyterhub"), **fields}
    lines = []
    for key, value in entry.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"journal field names are upper case: {key!r}")
        value = str(value).replace("\n", " ")
        lines.append(f"{key}={value}\n")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto("".join(lines).encode(), SOCKET)
        return True
    except OSError:
        return False
