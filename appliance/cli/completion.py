"""Dynamic shell completion (click runs these when bash or zsh asks): user names,
configuration keys, kernel names. Never an error: completion must stay quiet."""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

from .. import config
from ..groups import ADMINS_GROUP, SYSTEM_KERNELS, USERS_GROUP


def _match(words, incomplete: str) -> list[str]:
    return sorted(w for w in set(words) if w.startswith(incomplete))


def local_accounts(ctx, param, incomplete: str) -> list[str]:
    return _match((p.pw_name for p in pwd.getpwall() if 1000 <= p.pw_uid < 65534), incomplete)


def access_names(ctx, param, incomplete: str) -> list[str]:
    names: set[str] = set()
    for group in (USERS_GROUP, ADMINS_GROUP):
        try:
            names.update(grp.getgrnam(group).gr_mem)
        except KeyError:
            pass
    return _match(names, incomplete)


def config_keys(ctx, param, incomplete: str) -> list[str]:
    return _match((f"{s}.{k}" for s, fields in config.SCHEMA.items() for k in fields), incomplete)


def kernel_names(ctx, param, incomplete: str) -> list[str]:
    try:
        return _match((d.name for d in Path(SYSTEM_KERNELS).iterdir() if (d / "kernel.json").exists()), incomplete)
    except OSError:
        return []
