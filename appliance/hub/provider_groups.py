"""Single sign-on: each person's groups at the identity provider, as their last
login gave them, kept in the hub's state (0600) so that a hub restart keeps them.

They count for the GPU quota and [limits] like local groups of the same name (the
spawner sends them; the daemon bounds them). Not JupyterHub's own groups: a hub
admin can edit those through the REST API, and so could give themselves a
group's GPUs; these change only at a login, so a change at the provider takes
effect at the person's next login.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_atomic
from ..groups import STATE_DIR

FILE = Path(STATE_DIR) / "sso-groups.json"
MAX_GROUPS, MAX_LENGTH = 256, 256  # as the daemon accepts them (daemon/validate.py)


def _all(path: Path | None) -> dict[str, list[str]]:
    try:
        data = json.loads((path or FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(name: str, groups, path: Path | None = None) -> None:
    kept = sorted(g for g in groups if isinstance(g, str) and 1 <= len(g) <= MAX_LENGTH and g.isprintable())
    known = _all(path)
    if known.get(name) != kept[:MAX_GROUPS]:
        known[name] = kept[:MAX_GROUPS]
        write_atomic(path or FILE, json.dumps(known, sort_keys=True), 0o600)


def of(name: str, path: Path | None = None) -> list[str]:
    groups = _all(path).get(name, [])
    return [g for g in groups if isinstance(g, str)][:MAX_GROUPS] if isinstance(groups, list) else []
