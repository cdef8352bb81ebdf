"""`applctl status`: is the appliance working, in one screen and one exit code."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import click

from .. import __version__, config, ephemeral
from ..groups import STATE_DIR
from ..net import http_url
from . import daemon_calls as daemon
from .common import config_path
from .host import DAEMON, HUB, PAM, PROXY, SOCKET, active_state, is_loaded, unit_rss
from .hub_api import Hub
from .output import Failure, emit, example, json_option, paint, table

# Reverse proxies an administrator may put in front (TLS, a shared password).
REVERSE_PROXIES = ("nginx.service", "apache2.service", "httpd.service", "caddy.service")
CHP_PACKAGE_JSON = (Path("/usr/share/nodejs/configurable-http-proxy/package.json"),
                    Path("/usr/lib/node_modules/configurable-http-proxy/package.json"))


def public_url(cfg: config.Config) -> str:
    host = cfg["hub"]["bind_address"]
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return http_url(host, cfg["hub"]["port"], "/")


def local_url(cfg: config.Config) -> str:
    """Where this machine reaches the proxy's public port."""
    host = cfg["hub"]["bind_address"]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return http_url(host, cfg["hub"]["port"], "/hub/api/")


def proxy_answers(cfg: config.Config) -> bool:
    try:
        urllib.request.urlopen(local_url(cfg), timeout=3).close()
        return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even an error, is the proxy answering
    except (urllib.error.URLError, OSError):
        return False


def chp_version() -> str | None:
    for path in CHP_PACKAGE_JSON:
        try:
            return json.loads(path.read_text())["version"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def unit_states() -> dict[str, str]:
    states = {u: active_state(u) for u in (HUB, PROXY, SOCKET, DAEMON)}
    states.update({u: active_state(u) for u in REVERSE_PROXIES if is_loaded(u)})
    return states


def footprint() -> dict[str, int]:
    """Bytes resident in each of the appliance's own units that runs a process (the
    hub with its services, the proxy, the daemon, the password checker): what it
    costs with nobody logged in. Users' servers are not counted."""
    sizes = {u: unit_rss(u) for u in (HUB, PROXY, DAEMON, PAM)}
    return {u: n for u, n in sizes.items() if n is not None}


def unit_problems(states: dict[str, str]) -> list[str]:
    problems = []
    for unit, state in states.items():
        # The daemon is socket-activated (inactive until asked); a reverse proxy is
        # the administrator's own business unless it failed.
        optional = unit == DAEMON or unit in REVERSE_PROXIES
        if state == "failed" or (state != "active" and not optional):
            problems.append(f"{unit} is {state}")
    return problems


@click.command()
@json_option
@example("applctl status\napplctl status --json")
def status(as_json: bool) -> None:
    """Is the appliance working: its units, versions, public URL, GPUs, problems.

    \b
    Exit code: 0 when everything runs and answers,
               1 when a problem was found (each is listed),
               2 for a usage error.
    GPUs are shown to root only.
    """
    problems: list[str] = []
    try:
        cfg = config.load(config_path())
    except config.ConfigError as e:
        problems.append(str(e))
        cfg = config.validate({})  # the defaults, to still report something useful
    states = unit_states()
    problems += unit_problems(states)
    hub = Hub(cfg)
    running_hub = hub.version()
    if running_hub is None:
        problems.append(f"the hub does not answer on {hub.where}")
    proxy_ok = proxy_answers(cfg)
    if not proxy_ok:
        problems.append(f"nothing answers on the public port {cfg['hub']['port']}")
    gpu, gpu_text = None, "(run as root to see them)"
    if os.geteuid() == 0:
        try:
            gpu = daemon.gpus()
            gpu_text = daemon.summary(gpu)
        except Failure as e:
            problems.append(f"no GPU report: {e.message}")
            gpu_text = "unknown (the daemon does not answer)"
    data = {
        "version": __version__,
        "jupyterhub": running_hub or metadata.version("jupyterhub"),
        "configurable_http_proxy": chp_version(),
        "url": public_url(cfg),
        "units": states,
        "hub_api": running_hub is not None,
        "proxy": proxy_ok,
        "gpus": None if gpu is None else {"summary": gpu_text, "available": gpu.available,
                                          "total": len(gpu.gpus), "free": gpu.free},
        "mode": cfg["hub"]["mode"],
        "visitors_served": visitors_served(),
        "memory": footprint(),
        "problems": problems,
    }
    emit(as_json, data, None if as_json else _human(data, gpu_text))
    sys.exit(1 if problems else 0)


def visitors_served() -> int | None:
    """The hub's count of ephemeral visitors (hub/visitors.py); None if there never was one."""
    # /var/lib/jupyterhub is the hub's: never follow a link planted there.
    try:
        fd = os.open(Path(STATE_DIR) / ephemeral.SERVED_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            return int(f.read(32).strip())
    except (OSError, ValueError):
        return None


def _human(data: dict, gpu_text: str) -> str:
    versions = f"jupyterhub-appliance {data['version']}, JupyterHub {data['jupyterhub']}"
    if data["configurable_http_proxy"]:
        versions += f", configurable-http-proxy {data['configurable_http_proxy']}"
    mode = data["mode"]
    if mode == "ephemeral" or data["visitors_served"] is not None:
        mode += f" ({data['visitors_served'] or 0} visitors served)"
    memory = data["memory"]
    shares = ", ".join(f"{u.removesuffix('.service')} {n / 2**20:.0f}" for u, n in memory.items())
    lines = [versions, f"URL:  {data['url']}", f"Mode: {mode}",
             f"GPUs: {gpu_text}",
             f"Memory: {sum(memory.values()) / 2**20:.0f} MiB resident in the appliance's own services"
             f"{f' ({shares})' if shares else ''}, users' servers not counted", "",
             table(["UNIT", "STATE"], [[u, s] for u, s in data["units"].items()], painted=(1,)), ""]
    if data["problems"]:
        lines += [f"{paint('problem')}: {p}" for p in data["problems"]]
    else:
        lines.append(f"{paint('ok')}: the hub and the proxy answer")
    return "\n".join(lines)
