"""applctl(1), generated at build time from the commands' own help, so it never lags
behind them: `python -m appliance.cli.manpage VERSION > applctl.1`."""

from __future__ import annotations

import inspect
import sys

import click

from .app import cli


def _roff(text: str) -> str:
    """Text as roff: backslashes escaped, and no line starting with a control character."""
    out = []
    for line in inspect.cleandoc(text).replace("\\", "\\e").splitlines():
        if line.strip() == "\b":  # click's "do not rewrap the next paragraph"
            continue
        line = line.rstrip()
        out.append("\\&" + line if line.startswith((".", "'")) else line or ".sp")
    return "\n".join(out)


def _commands(group: click.Group, path: list[str]):
    ctx = click.Context(group, info_name=" ".join(path))
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield path + [name], command
        if isinstance(command, click.Group):
            yield from _commands(command, path + [name])


def render(version: str) -> str:
    parts = [f'.TH APPLCTL 1 "" "jupyterhub-appliance {version}" "User Commands"',
             ".SH NAME", "applctl \\- control jupyterhub-appliance: access, servers, status, configuration",
             ".SH SYNOPSIS", ".B applctl", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]...",
             ".SH DESCRIPTION", ".nf", _roff(cli.help or ""), ".fi", ".SH COMMANDS"]
    for path, command in _commands(cli, ["applctl"]):
        ctx = click.Context(command, info_name=" ".join(path))
        # Help texts are laid out by hand (examples, tables): kept as they are.
        parts += [".SS " + " ".join(path[1:]), ".nf", _roff(command.get_usage(ctx)), "",
                  _roff(command.help or command.short_help or ""), ".fi"]
        options = [p.get_help_record(ctx) for p in command.get_params(ctx) if isinstance(p, click.Option)]
        for opts, text in filter(None, options):
            parts += [".TP", f"\\fB{_roff(opts)}\\fR", _roff(text)]
    parts += [".SH FILES", "/etc/jupyterhub/appliance.toml", ".SH SEE ALSO",
              "/usr/share/doc/jupyterhub-appliance/README.md"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1] if len(sys.argv) > 1 else "0"))
