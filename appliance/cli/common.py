"""Inputs every command checks the same way: the configuration, user names, accounts."""

from __future__ import annotations

import pwd
from pathlib import Path

from .. import config, privilege, users
from ..groups import ADMINS_GROUP, USERS_GROUP
from .output import Failure

# GECOS of accounts `adduser --create` made: only those may `deluser` delete.
CREATED_MARK = "created by applctl (jupyterhub-appliance)"


def config_path() -> Path:
    return config.DEFAULT_PATH


def load_config(path: Path | None = None) -> config.Config:
    try:
        return config.load(path or config_path())
    except config.ConfigError as e:
        raise Failure(str(e)) from None


def check_name(name: str) -> str:
    """The syntax only; root is never a JupyterHub user."""
    try:
        users.check_name(name)
    except users.UserError as e:
        raise Failure(str(e)) from None
    if name == "root":
        raise Failure("root can never have a server or access to JupyterHub")
    return name


def account(name: str, min_uid: int | None = None) -> pwd.struct_passwd:
    """An existing account, and (with min_uid) one that may have a server."""
    check_name(name)
    try:
        if min_uid is not None:
            return users.lookup(name, min_uid)
        return pwd.getpwnam(name)
    except users.UserError as e:
        raise Failure(str(e)) from None
    except KeyError:
        raise Failure(f"there is no user {name} on this machine") from None


def members(group: str) -> set[str]:
    try:
        return users.members(group)
    except KeyError:
        raise Failure(f"group {group} does not exist: is jupyterhub-appliance installed?") from None


def has_access(name: str) -> bool:
    return name in members(USERS_GROUP) or name in members(ADMINS_GROUP)


def refuse_privileged(name: str, cfg: config.Config, what: str) -> None:
    """Under sudo, no access or token for an account that is root in all but name."""
    try:
        privilege.check_account(name, cfg["daemon"], what)
    except privilege.PrivilegeError as e:
        raise Failure(str(e)) from None
