"""Ephemeral (workshop) mode: what the hub, the daemon and applctl agree on.

A visitor has no account. The hub gives each one a random name of the form
VISITOR_RE; the daemon runs that name's server as a transient uid (DynamicUser=)
whose home is a StateDirectory it removes when the server stops. Names of this form
are never real accounts, and real accounts never get this form of server.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

PREFIX = "visitor-"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_LENGTH = 10  # 36**10: a name is never guessed nor reused
VISITOR_RE = re.compile(PREFIX + "[a-z0-9]{%d}" % _LENGTH)
VISITOR_RULE = f"a visitor name is {PREFIX!r} and {_LENGTH} lowercase letters or digits"

# systemd puts a DynamicUser's StateDirectory= here and links /var/lib/NAME to it.
STATE_ROOT = Path("/var/lib")
PRIVATE_ROOT = STATE_ROOT / "private"
# The hub's count of visitors served (2i2c keep users only to count them).
SERVED_FILE = "visitors-served"
# The hub group of servers started ahead of any visitor (the warm pool).
POOL_GROUP = "ephemeral-pool"
FULL_MESSAGE = "This hub is full; try again in a few minutes."
# [ephemeral] network: what a visitor's server may reach (the addresses of each are
# appliance/daemon/units.py's VISITOR_NETWORKS).
NETWORKS = ("none", "loopback", "internet")
# Where a machine keeps data and software of its own: a visitor sees none of it,
# but ephemeral.shared_dir and ephemeral.visible_paths.
HIDDEN = ("/srv", "/opt", "/mnt", "/media", "/data")


def new_name() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


def is_visitor(name: object) -> bool:
    return isinstance(name, str) and VISITOR_RE.fullmatch(name) is not None


def state_name(name: str) -> str:
    """The StateDirectory= of a visitor's server, relative to /var/lib."""
    if not is_visitor(name):
        raise ValueError(f"{name!r}: {VISITOR_RULE}")
    return f"jupyter-{name}"


def home(name: str) -> str:
    """Where the visitor's server sees its home."""
    return str(STATE_ROOT / state_name(name))


def home_paths(name: str) -> list[str]:
    """What a visitor's server leaves on disk: systemd's StateDirectory= of a
    DynamicUser in /var/lib/private, and its link in /var/lib."""
    return [str(PRIVATE_ROOT / state_name(name)), str(STATE_ROOT / state_name(name))]


def forget_argv(name: str) -> list[str]:
    """Deletes a stopped visitor's home; as root, since the home is another uid's.
    GNU rm never follows a link it finds in the tree."""
    return ["/usr/bin/rm", "-rf", "--one-file-system", "--", *home_paths(name)]


def cleaner_unit(name: str) -> str:
    """The one-shot unit that deletes a stopped visitor's home. Not jupyter-*: it must
    never be taken for a server."""
    return f"appliance-forget-{state_name(name)}.service"


def leftover_homes(private_root: Path = PRIVATE_ROOT) -> list[str]:
    """Visitor names whose home is still on disk."""
    try:
        entries = os.listdir(private_root)
    except FileNotFoundError:
        return []
    return sorted(e[len("jupyter-"):] for e in entries if e.startswith("jupyter-") and is_visitor(e[len("jupyter-"):]))


def main(argv: list[str] | None = None) -> int:
    """`python -m appliance.ephemeral forget-homes`: the package's removal, once every
    server is stopped, deletes what visitors left (the daemon that would is gone)."""
    if (argv if argv is not None else sys.argv[1:]) != ["forget-homes"]:
        print("usage: python -m appliance.ephemeral forget-homes", file=sys.stderr)
        return 2
    failed = 0
    for name in leftover_homes():
        failed |= subprocess.run(forget_argv(name), check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
