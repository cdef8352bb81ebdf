"""The programs applctl runs as root, found only in the system's own directories.

`sudo applctl` must not run a program the caller chose: where sudoers has no
secure_path, a bare "systemctl" would be looked up in the caller's PATH, and a
member of jupyterhub-admins could plant $HOME/bin/systemctl and be root. So every
helper is named here and resolved against SAFE_PATH, never against the environment;
applctl's entry (cli/entry.py) also sets PATH to SAFE_PATH before anything else.

Resolved when called, not once: the same names live in /usr/bin on Arch (where
/usr/sbin, /bin and /sbin are links to it) and in /usr/bin or /usr/sbin on Debian 12
and 13 (merged /usr: /bin and /sbin are links), and a web server may be installed
while the appliance runs.
"""

from __future__ import annotations

import os
import shutil

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Every program applctl (and what it calls: appliance/revproxy) starts by name.
TOOLS = frozenset({
    "systemctl", "journalctl",                        # the units and their journal
    "systemd-run",                                    # applctl apps check: each app as a throwaway user
    "useradd", "userdel", "gpasswd",                  # applctl adduser, deluser, admin
    "openssl",                                        # certificates (applctl proxy)
    "nginx", "apache2ctl", "apachectl", "a2enmod",    # the reverse proxy's check and modules
    "visudo", "test",                                 # applctl doctor
    "sudo",                                           # who sudo grants anything (root_grants.py)
    "sinfo",                                          # applctl cluster check: what Slurm has
})
# (applctl config edit's editor is no helper of root's: configcmd.editor_command.)


def tool(name: str) -> str:
    """The absolute path of the helper `name`, from SAFE_PATH only. When it is not
    installed, a path in SAFE_PATH where it is not: running that fails with
    FileNotFoundError, which the callers word as "not installed"."""
    if name not in TOOLS:
        raise ValueError(f"{name} is not one of the helpers applctl may run (appliance/tools.py)")
    return shutil.which(name, path=SAFE_PATH) or os.path.join(SAFE_PATH.split(":")[0], name)


def resolved(argv: list[str] | tuple[str, ...]) -> list[str]:
    """argv with its program, if a bare helper name, replaced by its absolute path."""
    argv = list(argv)
    if argv and not os.path.isabs(argv[0]):
        argv[0] = tool(argv[0])
    return argv
