"""The appliance's own hub services, run on the hub's event loop: the idle culler
(jupyterhub-idle-culler's cull_idle), the gpu-reclaimer (reclaimer.py) and the GPU
dashboard (dashboard.py).

Each was a Python interpreter of its own, 26 to 77 MiB resident, more than half of
what the appliance held with nobody logged in (docs/benchmarks.md, "Idle
footprint"). Each is still a JupyterHub service of its own (configurer.py), with
its own role and its own API token, and acts only through the hub's REST API (the
dashboard: through its OAuth) with that token, so what each part may ask the hub
for is what its role allows, as before. What is no longer separated is the
process: they always ran as the hub's uid, with the hub's files, so a part
subverted could already read the hub's database; see docs/security.md.

A round that fails is logged and the next one comes; none of them can stop the hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from . import dashboard, reclaimer
from .configurer import DASHBOARD_SERVICE
from .stop_reasons import CULLER, RECLAIMER

log = logging.getLogger("JupyterHub")


async def every(seconds: float, work, name: str) -> None:
    """work() now, then every `seconds` after each round ends."""
    while True:
        try:
            await work()
        except Exception:  # noqa: BLE001 (a service's bug must not end it, nor the hub)
            log.exception("jupyterhub-appliance: %s: this round failed; the next in %s s", name, seconds)
        await asyncio.sleep(seconds)


def start(hub, culler: dict, reclaim_interval: float) -> list[asyncio.Future]:
    """Start the culler and the reclaimer if configurer.py registered them (`hub` is
    the running JupyterHub; the dashboard starts with JupyterHub's check of it:
    serve_dashboard); returns their tasks, which run as long as the hub."""
    api_url = hub.hub.url + "api"
    services = hub._service_map
    tasks = []
    if CULLER in services and culler:
        tasks.append(asyncio.ensure_future(every(culler["every"], cull(api_url, services[CULLER].api_token, culler),
                                                 CULLER)))
    if RECLAIMER in services and reclaim_interval:
        asked: dict[str, float] = {}  # when each user's stop was last asked for
        token = services[RECLAIMER].api_token

        async def reclaim() -> None:
            await reclaimer.run_once(api_url, token, asked, time.monotonic())

        tasks.append(asyncio.ensure_future(every(reclaim_interval, reclaim, RECLAIMER)))
    return tasks


def serve_dashboard(hub, service, interval: float) -> asyncio.Future | None:
    """The GPU dashboard, if `service` is it, serving before JupyterHub checks that
    it answers (else JupyterHub waits its timeout and warns); the sampling task."""
    if service.name != DASHBOARD_SERVICE or not interval:
        return None
    return dashboard.serve(service, hub.hub.url + "api", hub.hub.base_url, interval)


def cull(api_url: str, token: str, settings: dict):
    """One round of jupyterhub-idle-culler with the [culler] settings, as its command
    line ran it (configurer.py gives the same values). cull_idle sets the default
    timeout of tornado's HTTP clients made later (60 s, above tornado's 20 s);
    the hub's own requests set theirs."""
    from jupyterhub_idle_culler import cull_idle

    return partial(cull_idle, url=api_url, api_token=token, inactive_limit=settings["timeout"],
                   logger=logging.getLogger("JupyterHub.idle-culler"), max_age=settings["max_age"],
                   concurrency=settings["concurrency"], cull_admin_users=settings["cull_admin_users"])
