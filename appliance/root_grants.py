"""Root in all but name through sudo or polkit, beyond group membership.

root_only.privileged_groups() sees groups. An account may also be root-equivalent
because sudo grants it a command (`sudo -l -U NAME` lists any), or because a polkit
rule names it or one of its groups (polkit actions manage units, disks, networks
and packages). Both are judged here.

The root daemon cannot run this check: it has no capabilities and its seccomp filter
kills sudo (setgroups, setrlimit), and /etc/polkit-1/rules.d is polkitd's. So
`python -m appliance.root_grants` (jupyterhub-appliance-rootcheck.service: root
with the capabilities sudo needs) judges every member of jupyterhub-users and jupyterhub-admins and writes the
verdict, root-owned 0600, to VERDICTS. The daemon runs that unit when it starts,
a path unit runs it when sudoers, polkit rules, /etc/group or /etc/passwd change, and the daemon
runs it again for a name the verdict has not judged yet; it refuses a server to a
name the verdict does not clear. applctl judges a name live.

What it cannot see: polkit rules that compute who (a variable, a function, a
netgroup), rules in files it cannot read (named as unread), sudo rules sudo itself
does not list (a source that is down), and any other way to root (root's
authorized_keys, a setuid binary, a writable root-run script).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import users
from .groups import ADMINS_GROUP, USERS_GROUP
from .root_verdicts import write_verdicts
from .tools import tool

POLKIT_RULES = (Path("/etc/polkit-1/rules.d"), Path("/usr/share/polkit-1/rules.d"))
POLKIT_PKLA = (Path("/etc/polkit-1/localauthority"), Path("/var/lib/polkit-1/localauthority"))
# The appliance's own sudoers rule (etc/sudoers.d/jupyterhub-appliance) is no grant.
OWN_SUDO_RULE = "(root) /usr/bin/applctl"
JUDGES = 8  # names judged at a time

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?|\*"
_UNIX_ID = re.compile(r"unix-(user|group):(" + _NAME + ")")
_USER_IS = re.compile(r"""\.user\s*===?\s*["'](""" + _NAME + r""")["']|["'](""" + _NAME
                      + r""")["']\s*===?\s*subject\.user\b""")
_IN_GROUP = re.compile(r"""isInGroup\(\s*["'](""" + _NAME + r""")["']\s*\)""")
_JS_COMMENT = re.compile(r"/\*.*?\*/|^\s*//.*?$", re.S | re.M)


@dataclass
class PolkitNames:
    """Who the polkit rules on this machine name: name -> the file that names it.
    "*" (pkla's unix-user:*) names everyone."""
    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)  # files or directories it could not read


def parse_rules(text: str) -> tuple[set[str], set[str]]:
    """(users, groups) a polkit JavaScript rules file names, comments aside."""
    text = _JS_COMMENT.sub("", text)
    named_users = {m[0] or m[1] for m in _USER_IS.findall(text)}
    named_groups = set(_IN_GROUP.findall(text))
    for kind, name in _UNIX_ID.findall(text):
        (named_users if kind == "user" else named_groups).add(name)
    return named_users, named_groups


def parse_pkla(text: str) -> tuple[set[str], set[str]]:
    """(users, groups) of the Identity= lines of a polkit .pkla file."""
    named_users: set[str] = set()
    named_groups: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() != "Identity":
            continue
        for kind, name in _UNIX_ID.findall(value):
            (named_users if kind == "user" else named_groups).add(name)
    return named_users, named_groups


def polkit_names(rules_dirs: tuple[Path, ...] = POLKIT_RULES, pkla_dirs: tuple[Path, ...] = POLKIT_PKLA) -> PolkitNames:
    found = PolkitNames()

    def read(files: list[Path], parse) -> None:
        for f in files:
            try:
                named_users, named_groups = parse(f.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                found.unread.append(str(f))
                continue
            for n in named_users:
                found.users.setdefault(n, str(f))
            for n in named_groups:
                found.groups.setdefault(n, str(f))

    def listing(d: Path, suffix: str, depth: int) -> list[Path]:
        """Files ending in suffix, in d (depth 0) or in its directories (depth 1)."""
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError:
            found.unread.append(str(d))
            return []
        if depth:
            return [f for e in entries if e.is_dir() for f in listing(Path(e.path), suffix, depth - 1)]
        return [Path(e.path) for e in entries if e.name.endswith(suffix) and e.is_file()]

    for d in rules_dirs:
        read(listing(d, ".rules", 0), parse_rules)
    for d in pkla_dirs:
        read(listing(d, ".pkla", 1), parse_pkla)
    return found


def polkit_reasons(name: str, groups: list[str], names: PolkitNames) -> list[str]:
    out = [f"polkit rule {names.users[n]} names {'every user' if n == '*' else 'it'}"
           for n in (name, "*") if n in names.users]
    out += [f"polkit rule {names.groups[g]} names its group {g}" for g in groups if g in names.groups]
    if "*" in names.groups:
        out.append(f"polkit rule {names.groups['*']} names every group")
    return out


def parse_sudo_list(name: str, rc: int, out: str) -> list[str] | None:
    """What `LC_ALL=C sudo -l -U NAME` grants NAME beyond the appliance's own rule:
    [] nothing, a list of entries, or None when the output cannot be read."""
    lines = out.splitlines()
    if rc != 0:
        return None
    if any(line.startswith(f"User {name} is not allowed to run sudo on ") for line in lines):
        return []
    head = [i for i, line in enumerate(lines) if line.startswith(f"User {name} may run the following commands on ")]
    if not head:
        return None
    entries = []
    for line in lines[head[0] + 1:]:
        if line and not line[0].isspace():
            break
        entry = line.strip()
        if entry and entry != OWN_SUDO_RULE:
            entries.append(entry)
    return entries


def sudo_reasons(name: str) -> list[str]:
    """Why sudo makes NAME root-equivalent: [] if it grants nothing (or sudo is not
    installed); a reason that says so if sudo's answer cannot be read."""
    try:
        r = subprocess.run([tool("sudo"), "-n", "-l", "-U", name], capture_output=True, text=True, timeout=30,
                           env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return []
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"sudo -l -U {name} could not be run ({e}), so sudo's grants are unknown"]
    entries = parse_sudo_list(name, r.returncode, r.stdout)
    if entries is None:
        said = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[0]
        return [f"sudo -l -U {name} gave no answer this check can read ({said[:120]}), so sudo's grants are unknown"]
    if entries:
        return [f"sudo grants it {'; '.join(entries[:3])}{' ...' if len(entries) > 3 else ''}"]
    return []


def reasons(name: str, names: PolkitNames | None = None) -> list[str]:
    """Why NAME is root-equivalent through sudo or polkit ([]: neither). Root only."""
    try:
        groups = users.groups_of(name)
    except KeyError:
        return []
    return sudo_reasons(name) + polkit_reasons(name, groups, names if names is not None else polkit_names())


def judge_all() -> dict:
    """The verdict on every member of jupyterhub-users and jupyterhub-admins."""
    names = polkit_names()
    checked: set[str] = set()
    for group in (USERS_GROUP, ADMINS_GROUP):
        try:
            checked |= users.members(group)
        except KeyError:
            pass
    # sudo -l -U asks the name services (files, sssd, LDAP), which can take seconds
    # per name: several at a time, or a machine with hundreds of members waits minutes.
    ordered = sorted(checked)
    with ThreadPoolExecutor(JUDGES) as pool:
        found = pool.map(lambda n: reasons(n, names), ordered)
        granted = {n: r for n, r in zip(ordered, found, strict=True) if r}
    return {"time": time.time(), "checked": sorted(checked), "granted": granted, "unread": names.unread}


# What the .path unit watches (units/jupyterhub-appliance-rootcheck.path).
WATCHED = (Path("/etc/sudoers"), Path("/etc/sudoers.d"), Path("/etc/group"), Path("/etc/passwd"),
           *POLKIT_RULES, *POLKIT_PKLA)


def changed_since(t: float, paths: tuple[Path, ...] = WATCHED) -> bool:
    """Whether any of these (or a file or directory in them, two levels down) changed at or after t."""
    def newest(p: Path, depth: int) -> float:
        try:
            m = p.stat().st_mtime
        except OSError:
            return 0.0
        if depth and p.is_dir():
            try:
                m = max([m, *(newest(c, depth - 1) for c in p.iterdir())])
            except OSError:
                pass
        return m
    return any(newest(p, 2) >= t for p in paths)


def main() -> int:
    # A change made while a run reads the files starts no new run (systemd joins
    # the start to the running one): judge again until nothing changed meanwhile.
    for _ in range(5):
        began = time.time()
        verdict = judge_all()
        write_verdicts(verdict)
        if not changed_since(began):
            break
    for n, why in verdict["granted"].items():
        print(f"{n} is root-equivalent: {'; '.join(why)}", file=sys.stderr)
    if verdict["unread"]:
        print(f"could not read: {', '.join(verdict['unread'])}", file=sys.stderr)
    print(f"judged {len(verdict['checked'])} account(s); {len(verdict['granted'])} root-equivalent", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
