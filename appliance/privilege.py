"""What would turn `sudo applctl` or a compromised hub into root, in one place.

A member of jupyterhub-admins may run applctl as root and nothing else; the hub may
start servers. Either becomes root if it can reach an account that is root in all
but name (a member of sudo, docker, disk, ...), lower daemon.min_uid onto system
accounts, or make every user run an interpreter it controls. Root itself (no sudo)
may still do these things on purpose; the daemon enforces the part that matters
whenever a server starts.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from . import root_grants
from .root_only import not_roots, privileged_groups, replaceable

LOGIN_DEFS = Path("/etc/login.defs")


class PrivilegeError(ValueError):
    """A change that would lead to root, worded for the administrator."""


def sudo_uid() -> int | None:
    """The uid of the person behind `sudo applctl`; None when root itself runs it."""
    uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid.isdigit() or int(uid) == 0:
        return None
    return int(uid)


def uid_min(path: Path = LOGIN_DEFS) -> int:
    """UID_MIN of login.defs: where ordinary accounts start (1000 on Debian and Arch)."""
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "UID_MIN" and words[1].isdigit():
                return int(words[1])
    except OSError:
        pass
    return 1000


def root_equivalent(name: str, daemon_cfg: dict, grants: list[str] | None = None) -> list[str]:
    """Why NAME is root in all but name: its privileged groups, what sudo grants it,
    the polkit rules that name it or its groups ([]: none of these). `grants`:
    root_grants' reasons if already known; asked now otherwise (root only: sudo -l
    -U and polkit's rules need it)."""
    found = privileged_groups(name, daemon_cfg["privileged_groups"])
    return ([f"a member of {', '.join(found)}"] if found else []) + \
        (root_grants.reasons(name) if grants is None else grants)


def check_account(name: str, daemon_cfg: dict, what: str) -> None:
    """Refuse, under sudo, to `what` (e.g. "give access to") a root-equivalent account."""
    if sudo_uid() is None:
        return
    why = root_equivalent(name, daemon_cfg)
    if why:
        raise PrivilegeError(
            f"{name} is root in all but name ({'; '.join(why)}): a jupyterhub-admin may "
            f"not {what} such an account; root may (sudo -i), and the daemon then also needs "
            "daemon.allow_privileged_users = true")


def check_config_change(old: dict, new: dict) -> None:
    """Refuse, under sudo, a configuration change that opens a way to root.

    `old` and `new` are the [daemon] tables before and after. A setting root made
    earlier stays as it is: only a change is judged."""
    if sudo_uid() is None:
        return
    floor = uid_min()
    if new["min_uid"] != old["min_uid"] and new["min_uid"] < floor:
        raise PrivilegeError(
            f"daemon.min_uid = {new['min_uid']} would give servers to system accounts (UID_MIN is {floor} "
            f"in {LOGIN_DEFS}); under sudo it may be {floor} or more; root may set it lower")
    if new["allow_privileged_users"] and not old["allow_privileged_users"]:
        raise PrivilegeError("daemon.allow_privileged_users = true lets the hub run code as root-equivalent "
                             "accounts; only root (not sudo applctl) may turn it on")
    dropped = sorted(set(old["privileged_groups"]) - set(new["privileged_groups"]))
    if dropped:
        raise PrivilegeError(f"removing {', '.join(dropped)} from daemon.privileged_groups would let "
                             "root-equivalent accounts have servers; under sudo the list may only grow; "
                             "root may shorten it")


# Interpreters whose environment is the system's own (packaged, root's): only the
# interpreter and the directories above it are checked, not all of /usr.
SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")


def check_executable(path: str) -> None:
    """Refuse, under sudo, an interpreter whose environment anyone but root could change.

    Every user who opens the kernel runs it, so whoever can replace it (or a
    directory on its way, or what its symlinks point to), or any file of its
    environment (a module, a .pth file), runs code as all of them."""
    if sudo_uid() is None:
        return
    try:
        found = replaceable((os.path.abspath(path), os.path.realpath(path)), itself=True)
        prefix = os.path.dirname(os.path.dirname(os.path.abspath(path)))  # ENV of ENV/bin/python
        if not found and prefix not in SYSTEM_PREFIXES:
            found = replaceable_in_tree(prefix)
    except OSError as e:
        raise PrivilegeError(f"{path}: cannot check {e.filename} ({e.strerror})") from None
    if found:
        part, why = found
        raise PrivilegeError(
            f"{path}: {part} is {why}; every user's kernel would run what its owner puts there. Under sudo, the "
            "interpreter, every file and directory of its environment and every directory above them must belong "
            "to root and be writable only by root; root may register it anyway")


def redirectable(path: str) -> tuple[Path, str] | None:
    """Whether someone but root could make the absolute `path` lead elsewhere or
    change what is there: the first directory the kernel looks a name up in while
    resolving it (links followed one hop at a time, wherever they lead), or the file
    itself, that someone but root could change, and why; None if only root can.
    OSError if it cannot be resolved."""
    looked_in: list[str] = []
    done, todo, hops = "/", [p for p in path.split("/") if p], 0
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            done = os.path.dirname(done)
            continue
        looked_in.append(done)
        entry = os.path.join(done, name)
        if os.path.islink(entry):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(entry)
            done = "/" if target.startswith("/") else done
            todo = [p for p in target.split("/") if p] + todo
        else:
            done = entry
    for part in dict.fromkeys([*looked_in, done]):  # each once, in order
        why = not_roots(os.lstat(part), sticky_ok=True)
        if why:
            return Path(part), why
    return None


def replaceable_in_tree(top: str) -> tuple[Path, str] | None:
    """The first file or directory in the tree `top` that someone but root could
    change, and why; None if only root can. The walk follows no link: a link is
    judged by where it leads (a directory it leads to outside the tree is walked too,
    once). A sticky directory counts as writable here: anyone could add a module."""
    todo, walked = [Path(top)], {os.path.realpath(top)}
    while todo:
        d = todo.pop()
        why = not_roots(d.lstat(), sticky_ok=False)
        if why:
            return d, why
        with os.scandir(d) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                path = Path(e.path)
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    walked.add(os.path.realpath(path))
                    todo.append(path)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    target = os.path.realpath(path)
                    if any(target == w or target.startswith(w.rstrip("/") + "/") for w in walked):
                        continue  # in a tree walked anyway
                    found = replaceable((target,), itself=True)
                    if found:
                        return path, f"a link to {found[0]}, which is {found[1]}"
                    if os.path.isdir(target):
                        walked.add(target)
                        todo.append(Path(target))
                    continue
                why = not_roots(st, sticky_ok=False)
                if why:
                    return path, why
    return None


# What ephemeral.shared_dir may never show an anonymous visitor, nor hold: the host's
# processes and their views (/proc/1/root is the whole host, past the sandbox),
# kernel and devices, runtime state (sockets, credentials), people's homes, and the
# system's configuration and state (the hub's database and secrets). The server's
# bind mount is made outside its sandbox, so it shows what ProtectHome= and
# ProtectProc= hide.
SHARED_DIR_REFUSED = ("/proc", "/sys", "/dev", "/run", "/home", "/root", "/etc", "/var/lib")
_SHARED_DIR_ACCEPTED = (
    "accepted under sudo: an existing directory outside " + ", ".join(SHARED_DIR_REFUSED[:-1])
    + f" and {SHARED_DIR_REFUSED[-1]}, owned by root and writable only by root, in directories only root can "
    "change (e.g. /srv/workshop, made by root), or \"\" for none; root may set another (a root login, not sudo "
    "applctl)")


def check_shared_dir(path: str) -> None:
    """Refuse, under sudo, an ephemeral.shared_dir that would show anonymous visitors
    what they must not see, or that anyone but root could fill or swap for a link."""
    if sudo_uid() is None or not path:
        return

    def refuse(why: str) -> None:
        raise PrivilegeError(f"ephemeral.shared_dir = {path!r} is not accepted: {why}; {_SHARED_DIR_ACCEPTED}")

    def judge(p: str, subject: str) -> None:
        for top in SHARED_DIR_REFUSED:
            if p == top:
                refuse(f"it is {top}" if subject == "it" else f"it leads to {top}")
            if p.startswith(top + "/"):
                refuse(f"{subject} is inside {top}")
            if top.startswith(p.rstrip("/") + "/"):
                refuse(f"{subject} holds {top}")

    judge(os.path.abspath(path), "it")  # before following any link: /proc/1/root may not resolve
    try:
        real = os.path.realpath(path, strict=False)
    except OSError as e:
        refuse(f"it cannot be resolved ({e.strerror})")
    judge(real, f"it leads to {real}, which")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        refuse("it does not exist")
    except OSError as e:
        refuse(f"it cannot be used ({e.strerror})")
    if not stat.S_ISDIR(st.st_mode):
        refuse("it is not a directory")
    if st.st_uid != 0:
        refuse(f"it is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        refuse(f"it is writable by {'others' if st.st_mode & 0o002 else 'its group'} "
               f"(mode {stat.S_IMODE(st.st_mode):04o})")
    # Whoever may change a directory above it may put another folder (or a link) in its place.
    try:
        found = replaceable((os.path.abspath(path), real), itself=False)
    except OSError as e:
        refuse(f"{e.filename} above it cannot be checked ({e.strerror})")
    if found:
        refuse(f"{found[0]} above it is {found[1]}")
