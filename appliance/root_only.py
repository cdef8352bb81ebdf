"""Who is root in all but name, and which paths only root can change: what the
daemon checks at each spawn, and applctl and the configuration check as well
(privilege.py holds the checks only the administrator's side makes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import users

# Membership in any of these is root in all but name: sudo/wheel/admin run anything,
# docker/lxd/incus/incus-admin/libvirt start a root container or VM with the host mounted, disk
# writes raw block devices, shadow reads the password hashes, adm and
# systemd-journal read logs that carry secrets.
# The one default list (config.py's default of daemon.privileged_groups): a
# configuration that does not set the key gets what is added here.
PRIVILEGED_GROUPS = ("root", "sudo", "wheel", "admin", "docker", "lxd", "incus", "incus-admin", "libvirt", "disk",
                     "shadow", "adm", "systemd-journal")


def privileged_groups(name: str, groups: tuple[str, ...] | list[str]) -> list[str]:
    """Which of `groups` the account `name` belongs to (primary group included)."""
    return sorted(set(users.groups_of(name)) & set(groups))


def not_roots(st: os.stat_result, sticky_ok: bool) -> str | None:
    """Why someone but root could change this file or directory; None if only root can."""
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    sticky_dir = sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if (st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0)) and not sticky_dir:
        return "writable by others"
    return None


def replaceable(paths: tuple[str, ...], itself: bool) -> tuple[Path, str] | None:
    """The first of these paths (or, with itself=False, only the directories above
    them) that someone but root could replace, and why; None if only root can.
    A link is judged by where it leads, which is among the paths. OSError (its
    filename: the part) if one cannot be checked."""
    seen: set[str] = set()
    for p in paths:
        node = Path(p)
        for part in ((node, *node.parents) if itself else node.parents):
            if str(part) in seen:
                continue
            seen.add(str(part))
            st = part.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            why = not_roots(st, sticky_ok=True)
            if why:
                return part, why
    return None
