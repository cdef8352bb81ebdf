"""The site-wide password: one user, a bcrypt hash, in a file only root and the
web server's group can read. nginx checks it with the system's crypt (libxcrypt
knows bcrypt), Apache with its own; both accept the $2y$ form."""

from __future__ import annotations

import grp
from pathlib import Path

import bcrypt

from .install import write_file

HTPASSWD = Path("/etc/jupyterhub-appliance/htpasswd")
MAX_BYTES = 72  # bcrypt ignores anything longer


class PasswordError(ValueError):
    pass


def check_password(password: str) -> str:
    if not password:
        raise PasswordError("the password is empty")
    if "\n" in password or "\r" in password:
        raise PasswordError("the password has a line break in it")
    if len(password.encode()) > MAX_BYTES:
        raise PasswordError(f"the password is longer than {MAX_BYTES} bytes (bcrypt's limit)")
    if len(password) < 8:
        raise PasswordError("the password is shorter than 8 characters")
    return password


def check_user(user: str) -> str:
    if not user or ":" in user or any(c.isspace() for c in user) or len(user) > 64:
        raise PasswordError(f"--user {user!r}: give a name without spaces or colons, up to 64 characters")
    return user


def hash_password(password: str) -> str:
    """A checked password's bcrypt hash, in the $2y$ form web servers know ($2b$ and
    $2y$ are the same algorithm); ephemeral mode's site password uses it too."""
    hashed = bcrypt.hashpw(check_password(password).encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"$2y${hashed[4:]}"


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
