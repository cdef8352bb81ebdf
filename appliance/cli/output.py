"""What every command shares: refusals, the root check, --json, tables and colour."""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from typing import Any, Callable

import click

from ..groups import ADMINS_GROUP


class Failure(click.ClickException):
    """A user mistake or a refused action: one or two lines, exit 1, no traceback."""

    def show(self, file=None) -> None:
        click.echo(f"applctl: {self.message}", err=True)


def need_root(command: str) -> None:
    if os.geteuid() != 0:
        raise Failure(f"{command} needs root: run it as root, or as a member of {ADMINS_GROUP} "
                      f"with: sudo applctl {command} ...")


def json_option(f: Callable) -> Callable:
    """--json on a command that reports: passed to it as `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON for scripts instead of text")(f)


def emit(as_json: bool, data: Any, human: str | None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif human:
        click.echo(human)


def note(text: str) -> None:
    """A side remark on stderr, so stdout stays what a script parses."""
    click.echo(click.style(text, fg="yellow"), err=True)


# Words that get a colour in tables; click.echo drops colour when not on a terminal.
_COLOURS = {"active": "green", "ok": "green", "yes": "green", "running": "green",
            "failed": "red", "FAIL": "red", "problem": "red", "warn": "yellow",
            "inactive": "yellow", "activating": "yellow", "deactivating": "yellow", "stopped": None}


def paint(word: str) -> str:
    colour = _COLOURS.get(word)
    return click.style(word, fg=colour) if colour else word


def table(header: list[str], rows: list[list[Any]], painted: tuple[int, ...] = ()) -> str:
    """Aligned columns; widths from the plain text, so colour never shifts them."""
    cells = [[("-" if c is None or c == "" else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header] + cells) for i in range(len(header))]
    def line(row: list[str], style) -> str:
        last = len(row) - 1
        return "  ".join(style(i, c) + ("" if i == last else " " * (w - len(c)))
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))
    lines = [line(header, lambda i, c: click.style(c, bold=True))]
    lines += [line(r, lambda i, c: paint(c) if i in painted else c) for r in cells]
    return "\n".join(lines)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 10 else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def ago(iso: str | None, now: float | None = None) -> str:
    """'2024-05-01T10:00:00.000Z' -> '3h 05m ago'; None -> 'never'."""
    if not iso:
        return "never"
    from datetime import datetime

    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return iso
    return human_duration((now or time.time()) - t) + " ago"


def example(text: str) -> Callable:
    """Append an example to a command's help (every command has one)."""
    def deco(f: Callable) -> Callable:
        f.__doc__ = inspect.cleandoc(f.__doc__ or "") + "\n\n\b\nExample:\n" + "\n".join(
            "  " + line for line in text.strip().splitlines())
        return f
    return deco


def wraps_failure(exc_types: tuple[type[Exception], ...]) -> Callable:
    """Turn the given library errors into a Failure with their own words."""
    def deco(f: Callable) -> Callable:
        @functools.wraps(f)
        def inner(*a, **kw):
            try:
                return f(*a, **kw)
            except exc_types as e:
                raise Failure(str(e)) from None
        return inner
    return deco
