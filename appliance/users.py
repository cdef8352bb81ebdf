"""Who may have a server: name syntax, account lookup and group membership.

Shared by the privileged daemon (which trusts nothing the hub sends) and applctl.
"""

from __future__ import annotations

import grp
import os
import pwd
import re

# Debian's default NAME_REGEX (adduser.conf) without the trailing '$' of machine
# accounts, which is not allowed in a systemd unit name.
NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
NAME_RULE = (
    "a user name is 1 to 32 characters: lowercase letters, digits, '_' and '-', "
    "starting with a letter or '_'"
)


class UserError(ValueError):
    """A user that may not have a server, with the reason in words."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40] + "...")
        raise UserError(f"{shown} is not a valid user name: {NAME_RULE}")
    return name


def lookup(name: object, min_uid: int) -> pwd.struct_passwd:
    """The account of a regular user, or UserError saying why not."""
    name = check_name(name)
    if name == "root":
        raise UserError("root can never have a server")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"there is no user {name} on this machine") from None
    if pw.pw_uid == 0:
        raise UserError(f"{name} has uid 0 and can never have a server")
    if pw.pw_uid < min_uid:
        raise UserError(
            f"{name} is a system account (uid {pw.pw_uid}); only uids from {min_uid} up "
            "are accepted (daemon.min_uid in appliance.toml)"
        )
    return pw


def members(group: str) -> set[str]:
    """Members through the group list or through their primary group; KeyError if
    there is no such group."""
    gr = grp.getgrnam(group)
    return set(gr.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == gr.gr_gid}


def is_member(name: str, group: str) -> bool:
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        return False
    if name in gr.gr_mem:
        return True
    try:  # the primary group, without listing every account
        return pwd.getpwnam(name).pw_gid == gr.gr_gid
    except KeyError:
        return False


def unit_name(name: str) -> str:
    """The one place a user's unit name is derived; the name is checked first."""
    return f"jupyter-{check_name(name)}.service"


def user_of_unit(unit: str) -> str | None:
    m = re.fullmatch(r"jupyter-(" + NAME_RE.pattern + r")\.service", unit)
    return m.group(1) if m else None


def groups_of(name: str) -> list[str]:
    pw = pwd.getpwnam(name)
    return [grp.getgrgid(g).gr_name for g in os.getgrouplist(name, pw.pw_gid) if _has_gid(g)]


def _has_gid(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False
