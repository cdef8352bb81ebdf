"""The verdict of jupyterhub-appliance-rootcheck.service (root_grants.py) on who is
root in all but name: written by root's check, read by the daemon before a spawn.
Apart from root_grants.py, which the daemon never runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import write_atomic
from .groups import RUNTIME_DIR

VERDICTS = Path(RUNTIME_DIR) / "root-grants.json"
UNIT = "jupyterhub-appliance-rootcheck.service"


def write_verdicts(verdict: dict, path: Path = VERDICTS) -> None:
    """Root's file in root's directory (made 0755 if missing), replaced atomically."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = path.parent.lstat()
    if st.st_uid != 0 or st.st_mode & 0o022 or not os.path.isdir(path.parent) or path.parent.is_symlink():
        raise OSError(f"{path.parent} is not a directory only root can write")
    write_atomic(path, json.dumps(verdict), 0o600)


def read_verdicts(path: Path = VERDICTS) -> dict | None:
    """The last verdict, or None if there is none that root wrote."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if st.st_uid != 0 or st.st_mode & 0o022:
            return None
        try:
            verdict = json.load(f)
        except ValueError:
            return None
    ok = isinstance(verdict, dict) and isinstance(verdict.get("checked"), list) and \
        isinstance(verdict.get("granted"), dict)
    return verdict if ok else None
