"""ExecStart of jupyterhub-proxy.service: configurable-http-proxy with our settings.
Another process than the hub: it imports nothing of the hub's.

The ports come from appliance.toml, the API token from the credential systemd loads
for this unit (LoadCredential=), handed to CHP in its own process environment only.
CHP binds no port itself: listen_fds.js, preloaded into node, makes it listen on the
sockets systemd holds for it (held_ports.py), so the ports are never free.
route_store.js keeps CHP's routes in the unit's runtime directory as well, so a
restarted proxy starts with them: servers answer through it from its first request;
graceful_stop.js makes it answer what it has begun before it exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import config, held_ports
from .net import http_url
from .state import proxy_token

CHP = "/usr/bin/configurable-http-proxy"
# Shipped beside the hub's templates (package data of appliance.hub).
PRELOAD = Path(__file__).parent / "hub" / "listen_fds.js"
GRACEFUL_STOP = Path(__file__).parent / "hub" / "graceful_stop.js"
ROUTE_STORE = Path(__file__).parent / "hub" / "route_store.js"
ROUTES_FILE = "routes.json"  # in $RUNTIME_DIRECTORY (RuntimeDirectory=jupyterhub-proxy)


def command(cfg: config.Config) -> list[str]:
    hub = cfg["hub"]
    hub_url = http_url("127.0.0.1", hub["hub_port"])
    argv = [
        CHP,
        "--port", str(hub["port"]),
        "--api-ip", "127.0.0.1",
        "--api-port", str(hub["proxy_api_port"]),
        "--default-target", hub_url,
        "--error-target", f"{hub_url}/hub/error",
        "--log-level", "info",
        "--storage-backend", str(ROUTE_STORE),
    ]
    if hub["bind_address"]:
        argv[1:1] = ["--ip", hub["bind_address"]]
    return argv


def main() -> None:
    cfg = config.exit_if_invalid("jupyterhub-proxy")
    try:
        token = proxy_token()
    except OSError as e:
        sys.exit(f"jupyterhub-proxy: cannot read the proxy token ({e}); reinstall the package to create it")
    try:
        held = held_ports.check(held_ports.PROXY_SOCKET, held_ports.wanted(cfg)[held_ports.PROXY_SOCKET])
    except held_ports.HeldPortError as e:
        print(f"jupyterhub-proxy: {e}", file=sys.stderr, flush=True)
        raise SystemExit(config.EX_CONFIG) from None
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    env.setdefault("NODE_PATH", "/usr/share/nodejs")
    # The ports by number: CHP listens on each port once (public, API).
    env["APPLIANCE_LISTEN_FDS"] = ",".join(f"{s.getsockname()[1]}={s.fileno()}" for s in held)
    env["APPLIANCE_REQUIRE_HELD"] = "1"
    env["NODE_OPTIONS"] = f"--require={PRELOAD} --require={GRACEFUL_STOP}"
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if not runtime:
        sys.exit("jupyterhub-proxy: no RUNTIME_DIRECTORY for its routes (RuntimeDirectory= of its unit)")
    env["APPLIANCE_ROUTES_FILE"] = str(Path(runtime) / ROUTES_FILE)
    for s in held:
        os.set_inheritable(s.fileno(), True)
    argv = command(cfg)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
