"""applctl's entry point as installed: the environment is reset before anything runs.

Members of jupyterhub-admins run `sudo applctl`, as root, with whatever environment
sudo lets through (where sudoers has neither env_reset nor secure_path: all of it).
The interpreter itself is started isolated (`python -I`, the first line of
/usr/bin/applctl, written by scripts/stage-tree), so no PYTHON* variable, user
site-packages or current directory steers it; this module then keeps only the
harmless variables and sets PATH to the system's own directories, before applctl's
commands are even imported. Everything applctl runs is also named by absolute path
(appliance/tools.py): this is the second lock, not the only one.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

from ..tools import SAFE_PATH

# Variables that only change how output looks or which language it is in, say who
# called through sudo, or complete the command line (click's protocol).
KEEP = frozenset({
    "TERM", "COLORTERM", "NO_COLOR", "COLUMNS", "LINES", "LANG", "LANGUAGE", "TZ",
    "SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND",
    "_APPLCTL_COMPLETE", "COMP_WORDS", "COMP_CWORD",
    # applctl config edit runs the editor as the person behind sudo (sudoedit's way),
    # never as root for them; root without sudo chooses its own.
    "SUDO_EDITOR", "VISUAL", "EDITOR",
})


def _safe(key: str, value: str) -> bool:
    """As sudo's env_check: a locale or time zone that is a path would make the C
    library load a file the caller wrote."""
    if key in ("LANG", "LANGUAGE") or key.startswith("LC_"):
        return "/" not in value and "%" not in value
    if key == "TZ":
        return not value.startswith("/") and ".." not in value and "%" not in value
    return True


def clean_environment(environ: Mapping[str, str], euid: int | None = None) -> dict[str, str]:
    """What of `environ` applctl keeps, with PATH, HOME, USER and LOGNAME its own."""
    out = {k: v for k, v in environ.items()
           if (k in KEEP or (k.startswith("LC_") and k[3:].isalpha())) and _safe(k, v)}
    uid = os.geteuid() if euid is None else euid
    try:
        pw = pwd.getpwuid(uid)
        home, name = pw.pw_dir or "/", pw.pw_name
    except KeyError:
        home, name = "/", str(uid)
    out.update(PATH=SAFE_PATH, HOME=home, USER=name, LOGNAME=name)
    return out


def reset_environment() -> None:
    clean = clean_environment(os.environ)
    os.environ.clear()
    os.environ.update(clean)


def main() -> None:
    reset_environment()
    from .app import main as run  # only now: nothing of applctl saw the caller's environment
    run()
