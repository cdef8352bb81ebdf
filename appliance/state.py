"""The hub's secrets in /var/lib/jupyterhub: created once, 0600, owned by the hub user."""

from __future__ import annotations

import os
import pwd
import secrets
import sys
from pathlib import Path

from .groups import HUB_USER, STATE_DIR

COOKIE_SECRET = "jupyterhub_cookie_secret"
PROXY_TOKEN = "proxy_token"
# The API token of the hub service `applctl` (configurer.register_applctl_service).
APPLCTL_TOKEN = "applctl_token"


def ensure_secrets(state_dir: str = STATE_DIR, owner: str | None = HUB_USER) -> list[str]:
    """Create missing secrets; never replace one (that would log everybody out)."""
    created = []
    d = Path(state_dir)
    d.mkdir(mode=0o700, exist_ok=True)
    ids = None
    if owner is not None:
        pw = pwd.getpwnam(owner)
        ids = (pw.pw_uid, pw.pw_gid)
        os.chown(d, *ids)
    os.chmod(d, 0o700)
    for name in (COOKIE_SECRET, PROXY_TOKEN, APPLCTL_TOKEN):
        path = d / name
        if not path.exists():
            # O_EXCL + mode at creation: the secret is never readable by others, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            created.append(str(path))
        if ids:
            os.chown(path, *ids)
        os.chmod(path, 0o600)
    return created


def read_secret(path: str | Path) -> str:
    return Path(path).read_text().strip()


if __name__ == "__main__":  # run by the package's postinst
    for p in ensure_secrets():
        print(f"created {p}")
    sys.exit(0)
