"""The gpu-reclaimer: a hub service that stops servers whose GPUs sit idle.

The daemon samples utilization and applies the [gpu] reclaim rule (it alone
knows the queue); this service only carries the answer out, through the hub's
REST API as the idle culler does, so the hub's view stays right. The hub records
the stop's reason from who asked ("gpu-reclaimer"). Its role may only stop
servers. It runs on the hub's event loop (services.py), with its own token.
"""

from __future__ import annotations

import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .. import daemon_client as client
from ..protocol import GpuReport

log = logging.getLogger("JupyterHub.gpu-reclaimer")

# A stop the hub accepted takes a while; do not ask again for the same user sooner.
REASK_AFTER = 60.0


async def stop_server(api_url: str, token: str, user: str) -> None:
    req = HTTPRequest(f"{api_url.rstrip('/')}/users/{user}/server", method="DELETE",
                      headers={"Authorization": f"token {token}"}, request_timeout=30)
    await AsyncHTTPClient().fetch(req)


async def run_once(api_url: str, token: str, asked: dict[str, float], now: float) -> list[str]:
    """One look: stop the servers the daemon's report names for reclaiming, each at
    most once every REASK_AFTER seconds."""
    try:
        report = GpuReport.read(await client.call({"op": "gpus"}, timeout=30))
    except client.DaemonError as e:
        log.warning("cannot ask the appliance daemon: %s", e)
        return []
    stopped = []
    for user in report.reclaim:
        if now - asked.get(user, -REASK_AFTER) < REASK_AFTER:
            continue
        asked[user] = now
        waiting = len(report.waiting)
        try:
            await stop_server(api_url, token, user)
        except (HTTPClientError, OSError) as e:
            log.warning("could not stop %s's server: %s", user, e)
            continue
        log.info("stopped %s's server: its GPUs were idle%s", user,
                 f" and {waiting} waiting" if waiting else "")
        stopped.append(user)
    return stopped
