"""`applctl reload`: apply a configuration change and wait until the hub answers."""

from __future__ import annotations

import subprocess
import time

import click

from .. import config, held_ports
from ..chp import command as proxy_command
from ..tools import tool
from .common import config_path
from .host import (
    DAEMON,
    HUB,
    PROXY,
    SOCKET,
    active_state,
    held_by_systemd,
    last_run_journal,
    listeners,
    main_pid_argv,
    systemctl,
    unit_props,
)
from .hub_api import Hub
from .output import Failure, emit, example, json_option, need_root
from .status import proxy_answers


def proxy_settings_changed(cfg: config.Config) -> bool:
    """Compare the running proxy's command line with the one the file asks for;
    a proxy that does not run must be started anyway."""
    argv = main_pid_argv(PROXY)
    if not argv:
        return True
    wanted = proxy_command(cfg)
    at = next((i for i, a in enumerate(argv) if a == wanted[0]), None)
    return at is None or argv[at + 1:] != wanted[1:]


def move_held_ports(cfg: config.Config) -> list[str]:
    """Let the generator write the port sockets from the file, and restart those
    that do not yet hold every port it asks for, with the service they serve
    stopped first (it holds the old ports too). The services whose sockets moved."""
    systemctl("daemon-reload")
    listening = listeners()
    moved = []
    for unit, addrs in held_ports.wanted(cfg).items():
        if all(held_by_systemd(port, listening) for _, port in addrs):
            continue
        service = HUB if unit == held_ports.HUB_SOCKET else PROXY
        systemctl("stop", service, held_ports.HOLDERS[unit])
        systemctl("restart", unit)
        moved.append(service)
    return moved


def wait_for_hub(hub: Hub, deadline: float) -> str | None:
    """None once the hub answers; else why it will not (failed, crash loop, timeout)."""
    while True:
        if hub.version(timeout=2) is not None:
            return None
        props = unit_props(HUB, "ActiveState", "SubState")
        if props.get("ActiveState") == "failed" or props.get("SubState") == "auto-restart":
            return f"{HUB} did not come up ({props.get('ActiveState')}/{props.get('SubState')})"
        if time.monotonic() > deadline:
            return f"the hub did not answer on {hub.where} in time ({HUB} is {props.get('ActiveState')})"
        time.sleep(0.3)


@click.command()
@click.option("--timeout", type=click.IntRange(5, 3600), default=90, show_default=True,
              help="seconds to wait for the hub to answer")
@json_option
@example("sudo applctl config set limits.mem_limit 8G\nsudo applctl reload")
def reload(timeout: int, as_json: bool) -> None:
    """Apply the configuration: restart the hub and the daemon (they read it when
    they start), and the proxy only if its settings changed; then wait until the
    hub answers.

    Users' servers keep running, and so do their open connections unless the
    proxy had to restart. An invalid file restarts nothing.
    """
    need_root("reload")
    r = apply_configuration(timeout)
    kept = "" if r["proxy_restarted"] else "; the proxy kept running (its settings did not change)"
    emit(as_json, r, f"restarted {', '.join(r['restarted'])}{kept}\n"
                     f"the hub answers on {r['where']} after {r['seconds']} s")


def apply_configuration(timeout: int = 90) -> dict:
    """What `applctl reload` does, for the commands that change the file first."""
    try:
        cfg = config.load(config_path())
    except config.ConfigError as e:
        raise Failure(f"{e}\nnothing was restarted; fix it with: sudo applctl config edit") from None
    spawner = cfg["spawner"]
    if spawner["environment_file"]:  # as the daemon reads it at every spawn
        try:
            config.read_environment_file(spawner["environment_file"], spawner["environment"])
        except config.EnvFileError as e:
            raise Failure(f"{e}\nnothing was restarted") from None
    if config.sso_in_use(cfg):  # as systemd hands it to the hub (held_ports.sso_dropin)
        try:
            config.read_client_secret(cfg["oidc"]["client_secret_file"])
        except config.RootFileError as e:
            raise Failure(f"{e}\nnothing was restarted") from None
    start = time.monotonic()
    restarted = []
    # An administrator's reload is deliberate: an earlier burst of restarts (systemd's
    # start rate limit) or a failed state must not refuse it.
    subprocess.run([tool("systemctl"), "reset-failed", HUB, PROXY, DAEMON, SOCKET, *held_ports.HOLDERS,
                    *held_ports.HOLDERS.values()], capture_output=True, check=False)
    if active_state(SOCKET) != "active":
        systemctl("start", SOCKET)
    moved = move_held_ports(cfg)
    if PROXY in moved or proxy_settings_changed(cfg):
        systemctl("restart", PROXY)
        restarted.append(PROXY)
    if active_state(DAEMON) == "active":
        systemctl("try-restart", DAEMON)
        restarted.append(DAEMON)
    try:
        systemctl("restart", HUB)
    except Failure:
        pass  # the unit's state and journal below say why, better than systemctl does
    restarted.append(HUB)
    hub = Hub(cfg)
    why = wait_for_hub(hub, start + timeout)
    if why is None and PROXY in restarted:
        while not proxy_answers(cfg) and time.monotonic() < start + timeout:
            time.sleep(0.3)
        if not proxy_answers(cfg):
            why = f"the proxy does not answer on port {cfg['hub']['port']}"
    if why:
        unit = PROXY if why.startswith("the proxy") else HUB
        said = last_run_journal(unit)
        raise Failure(f"{why}; its journal says:\n" + "\n".join("    " + line for line in said)
                      + f"\n(more: sudo applctl logs --unit {'proxy' if unit == PROXY else 'hub'})")
    return {"restarted": restarted, "proxy_restarted": PROXY in restarted,
            "seconds": round(time.monotonic() - start, 1), "hub_version": hub.version(), "where": hub.where}
