"""applctl: the administrator's command line for jupyterhub-appliance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from typing import Any

import click

from . import __version__, config, users
from .daemon import client
from .groups import ADMINS_GROUP, USERS_GROUP

UNITS = ("jupyterhub.service", "jupyterhub-proxy.service", "jupyterhub-appliance.socket",
         "jupyterhub-appliance.service")


class Failure(click.ClickException):
    """A user mistake or a refused action: one clear line, exit 1, no traceback."""

    def show(self, file=None) -> None:
        click.echo(f"applctl: {self.message}", err=True)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Failure(f"{what} needs root: run it as root, or as a member of {ADMINS_GROUP} with: sudo applctl ...")


def emit(as_json: bool, data: Any, human: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else human)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*map(str, r)).rstrip() for r in [header] + rows)


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise Failure(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def load_config() -> config.Config:
    try:
        return config.load()
    except config.ConfigError as e:
        raise Failure(str(e)) from None


def check_name(name: str) -> str:
    try:
        return users.check_name(name)
    except users.UserError as e:
        raise Failure(str(e)) from None


def members(group: str) -> set[str]:
    import grp
    import pwd

    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise Failure(f"group {group} does not exist: is jupyterhub-appliance installed?") from None
    names = set(gr.gr_mem)
    names.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == gr.gr_gid)
    return names


def servers() -> dict[str, dict]:
    """Running servers by user name, from the daemon (root only)."""
    try:
        return {s["user"]: s for s in client.call_sync({"op": "list"}, timeout=30)["servers"]}
    except client.DaemonError as e:
        raise Failure(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="applctl")
def cli() -> None:
    """Control jupyterhub-appliance: who has access, servers, status, configuration.

    \b
    Example:
      sudo applctl adduser alice
    """


@cli.command()
@click.argument("name")
@click.option("--admin", is_flag=True, help=f"also make NAME a hub admin ({ADMINS_GROUP})")
@click.option("--create", is_flag=True, help="create the Unix account if it does not exist")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def adduser(name: str, admin: bool, create: bool, as_json: bool) -> None:
    """Give the local account NAME access to JupyterHub.

    \b
    Example:
      sudo applctl adduser alice --admin
    """
    import pwd

    check_name(name)
    need_root("adduser")
    min_uid = load_config()["daemon"]["min_uid"]
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise Failure(f"there is no user {name} on this machine; add --create to create the account") from None
        run(["useradd", "--create-home", "--shell", "/bin/bash", name])
        created = True
    try:
        users.lookup(name, min_uid)
    except users.UserError as e:
        raise Failure(str(e)) from None
    groups = [USERS_GROUP] + ([ADMINS_GROUP] if admin else [])
    added = []
    for group in groups:
        if name not in members(group):
            run(["gpasswd", "-a", name, group])
            added.append(group)
    lines = [f"{name} can now log in to JupyterHub" + (" as an admin" if admin else "")]
    if not added:
        lines = [f"{name} already had this access; nothing changed"]
    if created:
        lines.append(f"created account {name}; set its password with: passwd {name}")
    emit(as_json, {"user": name, "created": created, "added_to": added}, "\n".join(lines))


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def deluser(name: str, as_json: bool) -> None:
    """Take JupyterHub access away from NAME, stopping their server first.

    The account and its files stay. Example:  sudo applctl deluser alice
    """
    check_name(name)
    need_root("deluser")
    was_member = name in members(USERS_GROUP) or name in members(ADMINS_GROUP)
    stopped = False
    if name in servers():
        try:
            client.call_sync({"op": "stop", "user": name})
        except client.DaemonError as e:
            raise Failure(f"could not stop {name}'s server, access unchanged: {e}") from None
        stopped = True
    removed = []
    for group in (USERS_GROUP, ADMINS_GROUP):
        if name in members(group) and name in _secondary(group):
            run(["gpasswd", "-d", name, group])
            removed.append(group)
    human = f"{name} no longer has access" + (" (server stopped)" if stopped else "")
    if not was_member:
        human = f"{name} had no access; nothing changed"
    emit(as_json, {"user": name, "stopped": stopped, "removed_from": removed}, human)


def _secondary(group: str) -> set[str]:
    import grp

    return set(grp.getgrnam(group).gr_mem)


@cli.command(name="users")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_users(as_json: bool) -> None:
    """Who has access, who is an admin, whose server runs.  Example:  sudo applctl users"""
    need_root("users")
    running = servers()
    admins = members(ADMINS_GROUP)
    rows = [{"user": n, "admin": n in admins, "server": running.get(n, {}).get("state", "stopped")}
            for n in sorted(members(USERS_GROUP) | admins)]
    emit(as_json, rows, table([[r["user"], "yes" if r["admin"] else "", r["server"]] for r in rows],
                               ["USER", "ADMIN", "SERVER"]) if rows else "nobody has access yet: applctl adduser NAME")


def unit_state(unit: str) -> str:
    proc = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(as_json: bool) -> None:
    """Units, versions and the URL; exit code 0 only when everything runs.  Example:  applctl status"""
    cfg = load_config()
    states = {u: unit_state(u) for u in UNITS}
    # The daemon is socket-activated: inactive between requests is normal.
    problems = [f"{u} is {s}" for u, s in states.items()
                if s != "active" and not (u == "jupyterhub-appliance.service" and s == "inactive")]
    host = cfg["hub"]["bind_address"] or "localhost"
    data = {
        "version": __version__,
        "jupyterhub": metadata.version("jupyterhub"),
        "url": f"http://{host}:{cfg['hub']['port']}/",
        "units": states,
        "problems": problems,
    }
    human = "\n".join(
        [f"jupyterhub-appliance {data['version']} (JupyterHub {data['jupyterhub']})", f"URL: {data['url']}", ""]
        + [table([[u, s] for u, s in states.items()], ["UNIT", "STATE"])]
        + ([""] + [f"problem: {p}" for p in problems] if problems else [])
    )
    emit(as_json, data, human)
    sys.exit(1 if problems else 0)


@cli.group(name="config")
def config_group() -> None:
    """The configuration in /etc/jupyterhub/appliance.toml."""


@config_group.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def validate(file: str | None, as_json: bool) -> None:
    """Check the configuration file (default: /etc/jupyterhub/appliance.toml).

    Example:  applctl config validate /tmp/new.toml
    """
    path = file or str(config.DEFAULT_PATH)
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        if as_json:
            emit(True, {"valid": False, "file": e.path, "key": e.key, "error": str(e)}, "")
            sys.exit(1)
        raise Failure(str(e)) from None
    emit(as_json, {"valid": True, "file": path, "effective": cfg.as_dict()}, f"{path}: valid")


def main() -> None:
    cli(prog_name="applctl")


if __name__ == "__main__":
    main()
