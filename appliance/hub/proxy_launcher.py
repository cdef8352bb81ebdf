"""ExecStart of jupyterhub-proxy.service: configurable-http-proxy with our settings.

The ports come from appliance.toml, the API token from the credential systemd loads
for this unit (LoadCredential=), handed to CHP in its own process environment only.
"""

from __future__ import annotations

import os
import sys

from .. import config
from ..net import http_url
from .configurer import proxy_token

CHP = "/usr/bin/configurable-http-proxy"


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
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    env.setdefault("NODE_PATH", "/usr/share/nodejs")
    argv = command(cfg)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
