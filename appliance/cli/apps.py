"""`applctl apps`: the web apps of [apps.NAME] (docs/apps.md), and whether each one
starts and answers.

`check` runs each app once as a throwaway user (a transient unit with DynamicUser=,
a uid that exists only while it runs), sandboxed as a server is (no TCP port but the
one an app on {port} binds in its own network), and asks it for / over its unix
socket, as jupyter-server-proxy does: any HTTP answer is an answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time

import click

from ..daemon.units import APP_PORT, SERVER_PATH
from ..groups import USER_ENV
from ..tools import tool
from .common import load_config
from .output import Failure, emit, example, json_option, need_root, table

BRIDGE = f"{USER_ENV}/bin/appliance-app"
CHECK_BASE_URL = "/user/appliance-check/"


def program_of(app: dict) -> str | None:
    """Where a server finds the app's program (its PATH), or None."""
    return shutil.which(app["command"][0], path=SERVER_PATH)


def listens_on(app: dict) -> str:
    return "port" if any("{port}" in a for a in app["command"]) else "unix socket"


@click.group()
@example("applctl apps list\nsudo applctl apps check")
def apps() -> None:
    """Web apps beside JupyterLab ([apps.NAME] in appliance.toml; docs/apps.md)."""


@apps.command(name="list")
@json_option
@example("applctl apps list")
def list_apps(as_json: bool) -> None:
    """Each app: whether servers offer it, its program, and whether that is installed."""
    cfg = load_config()
    rows = [{"name": name, "title": app["title"], "enabled": app["enabled"], "program": app["command"][0],
             "installed": program_of(app) is not None, "listens_on": listens_on(app), "timeout": app["timeout"]}
            for name, app in cfg["apps"].items()]
    human = table(["NAME", "TITLE", "ENABLED", "PROGRAM", "INSTALLED", "LISTENS ON"],
                  [[r["name"], r["title"], "yes" if r["enabled"] else "no", r["program"],
                    "yes" if r["installed"] else "no: left off every server", r["listens_on"]] for r in rows],
                  painted=(2, 4)) if rows else "no apps: add [apps.NAME] to appliance.toml (docs/apps.md)"
    emit(as_json, rows, human)


def check_argv(name: str, app: dict, program: str, run_dir: str) -> list[str]:
    """The transient unit that runs the app as a throwaway user: systemd-run's argv."""
    sock = f"{run_dir}/socket"
    command = [program, *app["command"][1:]]
    command = [a.replace("{base_url}", CHECK_BASE_URL).replace("{unix_socket}", sock)
               .replace("{port}", str(APP_PORT)) for a in command]
    props = ["DynamicUser=yes", f"RuntimeDirectory={run_dir.removeprefix('/run/')}", "RuntimeDirectoryMode=0755",
             f"WorkingDirectory={run_dir}", "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=tmpfs",
             "SocketBindDeny=any"]
    if listens_on(app) == "port":
        props.append(f"SocketBindAllow=tcp:{APP_PORT}")
        command = [BRIDGE, "--socket", sock, "--port", str(APP_PORT), "--", *command]
    env = {"PATH": SERVER_PATH, "HOME": run_dir, **app["environment"]}
    return [tool("systemd-run"), f"--unit={check_unit(name)}", "--collect", "--quiet",
            *(f"--property={p}" for p in props), *(f"--setenv={k}={v}" for k, v in env.items()), "--", *command]


def check_unit(name: str) -> str:
    return f"appliance-app-check-{name}.service"


def answers(path: str) -> str | None:
    """The status line of the app's answer to GET / on its unix socket, or None.

    The socket's directory belongs to the app's throwaway uid, which could put a link
    there to a socket only root may use (the daemon's): root connects only to the
    socket file itself, opened without following a link, through /proc/self/fd."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(f"/proc/self/fd/{fd}")
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            first = s.recv(256).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError:
        return None
    finally:
        os.close(fd)
    return first if first.startswith("HTTP/") else None


def unit_state(unit: str) -> str:
    out = subprocess.run([tool("systemctl"), "show", "-p", "ActiveState", "--value", unit],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "inactive"


def check_one(name: str, app: dict) -> dict:
    program = program_of(app)
    if program is None:
        return {"name": name, "ok": False,
                "why": f"its program {app['command'][0]} is not installed (not on the servers' PATH)"}
    unit, run_dir = check_unit(name), f"/run/appliance-app-check-{name}"
    subprocess.run([tool("systemctl"), "stop", unit], capture_output=True, check=False)
    subprocess.run([tool("systemctl"), "reset-failed", unit], capture_output=True, check=False)
    started = subprocess.run(check_argv(name, app, program, run_dir), capture_output=True, text=True, check=False)
    if started.returncode != 0:
        return {"name": name, "ok": False, "why": "systemd-run failed: " + (started.stderr.strip() or "?")}
    began = time.monotonic()
    try:
        while time.monotonic() - began < app["timeout"]:
            status = answers(f"{run_dir}/socket")
            if status:
                return {"name": name, "ok": True, "why": f"answered {status} after {time.monotonic() - began:.1f} s"}
            if unit_state(unit) not in ("active", "activating"):
                return {"name": name, "ok": False, "why": f"it ended before it answered; see: journalctl -u {unit}"}
            time.sleep(0.5)
        return {"name": name, "ok": False,
                "why": f"no answer within its timeout of {app['timeout']} s; see: journalctl -u {unit}"}
    finally:
        subprocess.run([tool("systemctl"), "stop", unit], capture_output=True, check=False)


@apps.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@json_option
@example("sudo applctl apps check\nsudo applctl apps check tensorboard")
def check(names: tuple[str, ...], as_json: bool) -> None:
    """Start each enabled app (or those named) once, as a throwaway user, and say
    whether it answered; exit 1 if any did not."""
    need_root("apps check")
    cfg = load_config()
    for n in names:
        if n not in cfg["apps"]:
            raise Failure(f"there is no app {n[:60]!r} in [apps]: " + (", ".join(cfg["apps"]) or "none is configured"))
    chosen = {n: a for n, a in cfg["apps"].items() if (n in names if names else a["enabled"])}
    if not chosen:
        raise Failure("no enabled app to check: add [apps.NAME] to appliance.toml (docs/apps.md)")
    results = [check_one(n, a) for n, a in chosen.items()]
    emit(as_json, results, "\n".join(f"{r['name']}: {'ok' if r['ok'] else 'FAIL'}: {r['why']}" for r in results))
    if not all(r["ok"] for r in results):
        raise SystemExit(1)
