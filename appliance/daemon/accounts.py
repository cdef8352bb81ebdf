"""[oidc] accounts = "create": the local account of a person who signed in through
single sign-on, made by root at the first login ({"op": "account", "user": NAME}).

The hub only names the person; the daemon decides. It refuses unless its own
appliance.toml says accounts = "create"; it normalises and checks the name itself;
it makes an account only in [oidc] uid_min..uid_max with the primary group [oidc]
group, never takes over a name (or a home) that exists, and refuses once the range
is full: that range is the cap on what a hub's uid can make. The account has a
locked password and a nologin shell (useradd's defaults, and -s), so only its
servers run as it; it joins jupyterhub-users, like `applctl adduser`.

The daemon itself cannot write /etc (ProtectSystem=strict, no capabilities): passwd's
useradd does it, in a transient unit of its own, one at a time.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import re

from dbus_fast import Variant

from .. import ephemeral
from ..config import Config
from ..groups import HUB_USER, USERS_GROUP
from ..protocol import RequestError
from .systemd import Systemd

log = logging.getLogger("jupyterhub-appliance")

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # POSIX-portable, lowercase, no leading '-' or '_'
NAME_RULE = "1 to 32 letters a-z, digits, '_' and '-', starting with a letter"
# Names a package or an administrator may want later, besides every name NSS knows now.
RESERVED = frozenset({"root", "daemon", "bin", "sys", "sync", "adm", "admin", "administrator", "sudo", "wheel",
                      "staff", "users", "nobody", "nogroup", "operator", "shadow", "disk", "kmem", "tty", "video",
                      "render", "audio", "input", "kvm", "docker", "lxd", "libvirt", "sshd", "ssh", "www-data",
                      "mail", "postmaster", "hostmaster", "webmaster", "abuse", "messagebus", "polkitd", "nvidia"})
RESERVED_PREFIXES = ("jupyter", "systemd-", ephemeral.PREFIX)
USERADD = "/usr/sbin/useradd"
UNIT = "jupyterhub-appliance-useradd.service"
TIMEOUT = 60.0


def normalise(name: object) -> str:
    """The account name for the provider's NAME: ASCII lowercased (before lowercasing,
    so no Unicode lookalike such as the Kelvin sign becomes a 'k'), then checked."""
    if not isinstance(name, str) or not name.isascii() or not NAME_RE.fullmatch(name.lower()):
        shown = repr(name)[:48]
        raise RequestError("account", f"{shown} cannot be an account name here: {NAME_RULE}", "user")
    name = name.lower()
    if name in RESERVED or name == HUB_USER or name.startswith(RESERVED_PREFIXES):
        raise RequestError("account", f"{name} is a name this machine keeps for itself", "user")
    return name


def made_here(pw: pwd.struct_passwd, oidc: dict) -> bool:
    """An account single sign-on made: uid in the range, primary group the SSO group."""
    try:
        gid = grp.getgrnam(oidc["group"]).gr_gid
    except KeyError:
        return False
    return oidc["uid_min"] <= pw.pw_uid <= oidc["uid_max"] and pw.pw_gid == gid


def check_new(name: str, oidc: dict) -> None:
    """Refuse a name that exists in any form, and a full range (lookups only)."""
    try:
        grp.getgrnam(oidc["group"])
    except KeyError:
        raise RequestError("config", f"there is no group {oidc['group']} ([oidc] group): groupadd --system "
                           f"{oidc['group']}", "user") from None
    try:
        grp.getgrnam(name)
        taken = "a group"
    except KeyError:
        taken = "a home directory" if os.path.lexists(f"/home/{name}") else None
    if taken:
        raise RequestError("account", f"{name} is already {taken} on this machine; single sign-on never takes "
                           "one over", "user")
    size = oidc["uid_max"] - oidc["uid_min"] + 1
    if sum(oidc["uid_min"] <= p.pw_uid <= oidc["uid_max"] for p in pwd.getpwall()) >= size:
        raise RequestError("account", f"the {size} uids of single sign-on accounts ([oidc] uid_min..uid_max) are "
                           "all taken: no more accounts until root widens the range", "user")


def useradd_argv(name: str, oidc: dict) -> list[str]:
    # No password (useradd locks it: "!"), no login shell, no subordinate uids (they
    # would be a range of uids this person's containers could act as).
    return [USERADD, "--create-home", "--home-dir", f"/home/{name}", "--shell", "/usr/sbin/nologin",
            "--gid", oidc["group"], "--groups", USERS_GROUP, "--comment", "single sign-on (jupyterhub-appliance)",
            "-K", f"UID_MIN={oidc['uid_min']}", "-K", f"UID_MAX={oidc['uid_max']}", "-K", "HOME_MODE=0700",
            "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "--", name]


class Accounts:
    def __init__(self, cfg: Config, systemd: Systemd):
        self.cfg, self.systemd = cfg, systemd
        self._lock = asyncio.Lock()  # one at a time: the range check and useradd go together

    async def ensure(self, req: dict) -> dict:
        if self.cfg["auth"]["type"] != "oidc" or self.cfg["oidc"]["accounts"] != "create" \
                or self.cfg["hub"]["mode"] != "accounts":
            raise RequestError("config", 'this appliance makes no accounts: appliance.toml does not say [auth] '
                               'type = "oidc" with [oidc] accounts = "create"', "user")
        oidc = self.cfg["oidc"]
        name = normalise(req.get("user"))
        async with self._lock:
            try:
                pw = await asyncio.to_thread(pwd.getpwnam, name)
            except KeyError:
                pw = None
            if pw is not None:
                if not made_here(pw, oidc):
                    raise RequestError("account", f"{name} is already an account on this machine that single "
                                       "sign-on did not make; it never takes one over", "user")
                return {"ok": True, "user": name, "created": False}
            await asyncio.to_thread(check_new, name, oidc)
            await self._useradd(name, oidc)
            try:
                pw = await asyncio.to_thread(pwd.getpwnam, name)
            except KeyError:
                pw = None
            if pw is None or not made_here(pw, oidc):
                raise RequestError("account", f"useradd did not make the account {name}; see: journalctl -u {UNIT}",
                                   "user")
        log.info("made the single sign-on account %s (uid %d)", name, pw.pw_uid)
        return {"ok": True, "user": name, "created": True}

    async def _useradd(self, name: str, oidc: dict) -> None:
        await self.systemd.reset_failed(UNIT)  # a failed run before keeps the name loaded
        job = await self.systemd.start_transient(UNIT, [
            ("Description", Variant("s", f"jupyterhub-appliance: the single sign-on account {name}")),
            ("Type", Variant("s", "oneshot")),
            ("ExecStart", Variant("a(sasb)", [(USERADD, useradd_argv(name, oidc), False)])),
        ])
        state = await self.systemd.wait_for(UNIT, ("inactive", "failed"), TIMEOUT, job)
        if state == "failed":
            await self.systemd.reset_failed(UNIT)
