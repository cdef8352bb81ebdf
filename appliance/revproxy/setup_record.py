"""What applctl set up, so that status, password and remove work from it: root's
own file under /var/lib (state never lives in /etc; the hub's directory is not
root's to write in)."""

from __future__ import annotations

import json
from pathlib import Path

from .install import write_file
from .site import Site, SiteError

STATE = Path("/var/lib/jupyterhub-appliance/reverse-proxy.json")


def load(path: Path = STATE) -> tuple[Site, dict] | None:
    """(the site, the rest: bind_before, keep_direct, password_user) or None."""
    try:
        data = json.loads(path.read_text())
        return Site.from_dict(data["site"]), data
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, SiteError) as e:
        raise SiteError(f"{path} is damaged ({e}); remove it and run applctl proxy setup again") from None


def save(site: Site, rest: dict, path: Path = STATE) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_file(path, json.dumps({**rest, "site": site.as_dict()}, indent=2) + "\n", 0o644)


def forget(path: Path = STATE) -> None:
    path.unlink(missing_ok=True)


def public_url(path: str, state: Path | None = None) -> tuple[str, bool]:
    """(https://NAME[:PORT]PATH, True), NAME being what `applctl proxy setup` put TLS
    on; (https://HOSTPATH, False) when it was not run (or its record is damaged)."""
    try:
        found = load(state or STATE)
    except SiteError:
        found = None
    if not found:
        return f"https://HOST{path}", False
    site = found[0]
    port = "" if site.https_port == 443 else f":{site.https_port}"
    return f"https://{site.server_name}{port}{path}", True
