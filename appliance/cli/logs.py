"""`applctl logs`: the journal of the hub, the proxy, the daemon, or one user's server."""

from __future__ import annotations

import os
import subprocess

import click

from .. import users
from ..tools import tool
from .common import account, check_name
from .completion import access_names
from .host import DAEMON, HUB, PAM, PAM_SOCKET, PROXY, SOCKET
from .output import Failure, example, need_root

UNITS = {"hub": [HUB], "proxy": [PROXY], "daemon": [DAEMON, SOCKET], "pam": [PAM, PAM_SOCKET]}


def journal_argv(units: list[str], since: str | None, lines: int | None, follow: bool) -> list[str]:
    argv = [tool("journalctl"), "--no-hostname"]
    for unit in units:
        argv += ["-u", unit]
    if since:
        argv += ["--since", since]
    if lines is not None or not since:
        argv += ["-n", str(lines if lines is not None else 100)]
    if follow:
        argv.append("--follow")
    return argv


def check_since(since: str) -> None:
    """journalctl's own parser decides; its refusal becomes one line with examples."""
    proc = subprocess.run([tool("journalctl"), "--quiet", "-n", "0", "--since", since], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Failure(f"--since {since[:40]!r} is not a time journalctl understands; "
                      "use e.g. '1 hour ago', 'today', 'yesterday' or '2025-01-31 14:00'")


@click.command()
@click.option("--user", "user", metavar="NAME", shell_complete=access_names, help="the journal of NAME's server")
@click.option("--unit", type=click.Choice(sorted(UNITS)),
              help="only the hub, the proxy, the daemon or the password check")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("--since", metavar="TIME", help="from TIME on, e.g. '1 hour ago', 'today', '2025-01-31 14:00'")
@click.option("-n", "--lines", type=click.IntRange(0, 1_000_000), help="the last N lines (default 100)")
@example("sudo applctl logs --since '10 min ago'\nsudo applctl logs --user alice --follow\n"
         "sudo applctl logs --unit proxy -n 20")
def logs(user: str | None, unit: str | None, follow: bool, since: str | None, lines: int | None) -> None:
    """Print the journal of the hub, the proxy, the daemon and the password check, or of one user's server."""
    if user and unit:
        raise click.UsageError("give --user or --unit, not both")
    if user:
        check_name(user)
    need_root("logs")
    if user:
        account(user)
        units = [users.unit_name(user)]
    else:
        units = UNITS[unit] if unit else [u for us in UNITS.values() for u in us]
    if since:
        check_since(since)
    argv = journal_argv(units, since, lines, follow)
    # journalctl pages and follows as people expect; under sudo its pager must not
    # offer a root shell (less's !cmd): secure mode.
    os.execve(argv[0], argv, {**os.environ, "SYSTEMD_PAGERSECURE": "1"})
