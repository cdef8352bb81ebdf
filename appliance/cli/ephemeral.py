"""`applctl ephemeral`: the workshop mode's site password (hub.mode = "ephemeral").

The hash lives in a file readable by root and the hub only; the hub reads it at
every visitor's try, so changing the password needs no restart.
"""

from __future__ import annotations

import grp
import sys
from pathlib import Path

import click

from .. import config_edit, passwords
from ..groups import HUB_USER
from ..revproxy.install import write_file
from .common import config_path
from .output import Failure, emit, example, json_option, need_root, wraps_failure
from .reload import apply_configuration

PASSWORD_FILE = Path("/etc/jupyterhub/ephemeral-password")
KEY = "ephemeral.password_file"
_refusals = wraps_failure((passwords.PasswordError, config_edit.EditError))


@click.group(name="ephemeral")
def ephemeral_group() -> None:
    """Workshop mode: every visitor gets a throwaway server at once, with no
    account and nothing kept. Root (a root login, not sudo applctl) turns it on with

    \b
      applctl config set hub.mode ephemeral
      applctl reload
    and set its limits in [ephemeral] of appliance.toml (applctl config).

    \b
    Example:
      sudo applctl ephemeral password set
    """


@ephemeral_group.group(name="password")
def password_group() -> None:
    """A password visitors must give before they get a server.

    \b
    Example:
      sudo applctl ephemeral password set
      sudo applctl ephemeral password off
    """


def _apply_if_running() -> bool:
    from .host import HUB, active_state
    if active_state(HUB) != "active":
        return False
    apply_configuration()
    return True


@password_group.command(name="set")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the password from standard input")
@json_option
@example("sudo applctl ephemeral password set\necho 'a long passphrase' | sudo applctl ephemeral password set --stdin")
@_refusals
def password_set(from_stdin: bool, as_json: bool) -> None:
    """Turn the visitors' password on (or change it)."""
    need_root("ephemeral password set")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Visitors' password", hide_input=True, confirmation_prompt=True)
    hashed = passwords.hash_password(password)  # checks it before anything changes
    try:
        gid = grp.getgrnam(HUB_USER).gr_gid
    except KeyError:
        raise Failure(f"there is no group {HUB_USER}; is the package installed?") from None
    config_edit.set_key(config_path(), KEY, f'"{PASSWORD_FILE}"', dry_run=True)  # the file must take it
    write_file(PASSWORD_FILE, hashed + "\n", 0o640, gid)
    changed = config_edit.set_key(config_path(), KEY, f'"{PASSWORD_FILE}"')["changed"]
    applied = changed and _apply_if_running()
    emit(as_json, {"password": True, "file": str(PASSWORD_FILE), "reloaded": applied},
         "visitors must now give this password" + ("" if not changed or applied else
                                                    "; apply it with: sudo applctl reload"))


@password_group.command(name="off")
@json_option
@example("sudo applctl ephemeral password off")
@_refusals
def password_off(as_json: bool) -> None:
    """Let visitors in without a password."""
    need_root("ephemeral password off")
    changed = config_edit.unset_key(config_path(), KEY)["changed"]
    PASSWORD_FILE.unlink(missing_ok=True)
    applied = changed and _apply_if_running()
    emit(as_json, {"password": False, "changed": changed, "reloaded": applied},
         "visitors need no password now" if changed else "the visitors' password is already off; nothing changed")
