"""The site-wide password: one user, a bcrypt hash (passwords.py), in a file only
root and the web server's group can read. nginx checks it with the system's crypt
(libxcrypt knows bcrypt), Apache with its own."""

from __future__ import annotations

import grp
from pathlib import Path

from ..passwords import PasswordError, hash_password
from .install import write_file

HTPASSWD = Path("/etc/jupyterhub-appliance/htpasswd")


def check_user(user: str) -> str:
    if not user or ":" in user or any(c.isspace() for c in user) or len(user) > 64:
        raise PasswordError(f"--user {user!r}: give a name without spaces or colons, up to 64 characters")
    return user


def line(user: str, password: str) -> str:
    return f"{check_user(user)}:{hash_password(password)}\n"


def write_entry(entry: str, group: str) -> None:
    """Readable by root and the web server's group only."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise PasswordError(f"group {group} (the web server's) does not exist") from None
    write_file(HTPASSWD, entry, 0o640, gid)


def users(path: Path = HTPASSWD) -> list[str]:
    try:
        return [ln.split(":", 1)[0] for ln in path.read_text().splitlines() if ":" in ln]
    except OSError:
        return []
