"""The root command and the one place errors are turned into words."""

from __future__ import annotations

import sys

import click

from .. import __version__
from .access import adduser, admin, deluser, list_users
from .apps import apps
from .cluster import cluster_group
from .configcmd import config_group
from .doctor import doctor
from .ephemeral import ephemeral_group
from .kernels import kernels
from .link import link
from .logs import logs
from .output import Failure
from .proxy import proxy_group
from .reload import reload
from .servers import gpus, servers, stop
from .sso import sso_group
from .status import status
from .token import token

COMMANDS = (adduser, deluser, list_users, admin, stop, servers, status, gpus, config_group, reload, token,
            kernels, apps, link, logs, doctor, proxy_group, ephemeral_group, sso_group,
            cluster_group)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="applctl")
def cli() -> None:
    """Control jupyterhub-appliance: access, servers, status, configuration.

    Most commands need root; members of jupyterhub-admins run them with sudo.
    Every command has --help with an example; those that report have --json.

    \b
    Example:
      sudo applctl adduser alice
      applctl status
    """


for _command in COMMANDS:
    cli.add_command(_command)


def usage_error(e: click.UsageError) -> str:
    """Two lines: what was wrong, and where the accepted forms are."""
    path = e.ctx.command_path if e.ctx else "applctl"
    message = e.format_message()
    return f"{path}: {message[:1].lower()}{message[1:]}\nsee: {path} --help"


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(argv, prog_name="applctl", standalone_mode=False)
    except click.UsageError as e:
        click.echo(usage_error(e), err=True)
        sys.exit(2)
    except Failure as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("applctl: interrupted", err=True)
        sys.exit(130)
    except (KeyboardInterrupt, EOFError):
        click.echo("\napplctl: interrupted", err=True)
        sys.exit(130)
    except PermissionError as e:
        click.echo(f"applctl: permission denied: {e.filename or e}; run it as root (sudo applctl ...)", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(0)  # e.g. applctl users | head
    sys.exit(code if isinstance(code, int) else 0)
