"""What the ephemeral-mode tests and benchmark do as visitors and as applctl: arrive at
the hub's address, and read the hub's users and warm pool through its REST API."""

from __future__ import annotations

import json
import re
import time

from booted import HUB_PY
from browser import Browser

VISITOR = re.compile(r"/(?:user|hub/spawn-pending)/(visitor-[a-z0-9]{10})")


def hub_api(app, method: str, path: str):
    """The hub's REST API as applctl calls it (the applctl service's token); None for a 404."""
    code = ("import json,sys; from appliance import config; from appliance.cli.hub_api import Hub, HubError\n"
            "try: print(json.dumps(Hub(config.load()).call(sys.argv[1], sys.argv[2])))\n"
            "except HubError as e:\n    print('null' if e.status == 404 else sys.exit(str(e)))")
    return json.loads(app.sh(f"{HUB_PY} -c \"{code}\" {method} {path}").stdout)


def arrive(app, b: Browser | None = None) -> tuple[Browser, str, float]:
    """A visitor opens the hub's address: (their browser, their name, seconds until
    their server's /api/status answers 200), following what a browser is sent to:
    straight into a pooled server, or the spawn-pending page and its progress."""
    b = b or Browser(app.url)
    t0 = time.perf_counter()
    r = b.get("/")
    m = VISITOR.search(r.url) or VISITOR.search(r.text)
    assert m, f"the visitor did not land in a server: {r.status_code} {r.url}\n{r.text[-800:]}"
    name = m.group(1)
    if "/hub/spawn-pending/" in r.url:
        ready, messages = b.spawn_outcome(name)
        assert ready, messages
        b.wait_for_server(name, interval=0.05)
    status = b.api_status(name).status_code
    assert status == 200, f"{name}: /api/status answered {status}"
    return b, name, time.perf_counter() - t0


def units(app) -> set[str]:
    out = app.sh("systemctl list-units --plain --no-legend 'jupyter-visitor-*.service'", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def pool(app) -> list[str]:
    group = hub_api(app, "GET", "/groups/ephemeral-pool")
    return group["users"] if group else []


def ready_pool(app, within: float = 180, want: int = 1) -> list[str]:
    """The pooled users whose server is ready, once there are `want` of them."""
    deadline = time.monotonic() + within
    while True:
        ready = [n for n in pool(app) if (hub_api(app, "GET", f"/users/{n}") or {}).get("servers", {})
                 .get("", {}).get("ready")]
        if len(ready) >= want:
            return ready
        assert time.monotonic() < deadline, f"no pooled server became ready in {within} s: pool {pool(app)}"
        time.sleep(0.5)
