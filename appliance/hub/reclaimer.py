"""The gpu-reclaimer: a hub-managed service that stops servers whose GPUs sit idle.

The daemon samples utilization and applies the [gpu] reclaim rule (it alone
knows the queue); this service only carries the answer out, through the hub's
REST API as the idle culler does, so the hub's view stays right. The hub records
the stop's reason from who asked ("gpu-reclaimer"). Its role may only stop
servers.

    python -m appliance.hub.reclaimer --interval 10
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import urllib.error
import urllib.request

from .. import daemon_client as client
from ..protocol import GpuReport
from .service_life import die_with_parent

log = logging.getLogger("gpu-reclaimer")

SERVICE = "gpu-reclaimer"
# A stop the hub accepted takes a while; do not ask again for the same user sooner.
REASK_AFTER = 60.0


def stop_server(api_url: str, token: str, user: str) -> None:
    req = urllib.request.Request(f"{api_url.rstrip('/')}/users/{user}/server", method="DELETE",
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30):
        pass


def run_once(api_url: str, token: str, asked: dict[str, float], now: float) -> list[str]:
    report = GpuReport.read(client.call_sync({"op": "gpus"}, timeout=30))
    stopped = []
    for user in report.reclaim:
        if now - asked.get(user, -REASK_AFTER) < REASK_AFTER:
            continue
        asked[user] = now
        waiting = len(report.waiting)
        try:
            stop_server(api_url, token, user)
        except (urllib.error.URLError, OSError) as e:
            log.warning("could not stop %s's server: %s", user, e)
            continue
        log.info("stopped %s's server: its GPUs were idle%s", user,
                 f" and {waiting} waiting" if waiting else "")
        stopped.append(user)
    return stopped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpu-reclaimer")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between looks (the sample interval)")
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s gpu-reclaimer] %(message)s")
    api_url, token = os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]
    asked: dict[str, float] = {}
    while True:
        try:
            run_once(api_url, token, asked, time.monotonic())
        except client.DaemonError as e:
            log.warning("cannot ask the appliance daemon: %s", e)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
