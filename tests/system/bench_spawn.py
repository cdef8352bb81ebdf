"""The spawn benchmark behind scripts/bench-spawn (see there for what it measures)."""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from browser import Browser
from conftest import TOP, Appliance, free_port
from container import Container

SINGLEUSER = "/usr/lib/jupyterhub-appliance/user/bin/jupyterhub-singleuser"


def hub_spawn(app: Appliance, name: str, password: str, errors: dict[str, str]) -> float | None:
    """Seconds from submitting the login form to /user/NAME/api/status answering 200.

    As a browser does: the login form, the spawn-pending page's event stream until
    the server is ready, then the server itself (through the OAuth redirects).
    """
    b = Browser(app.url)
    page = b.get("/hub/login")
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    t0 = time.perf_counter()
    try:
        b.s.post(app.url + "/hub/login?next=", data={"_xsrf": xsrf, "username": name, "password": password},
                 timeout=300)
        ready, messages = b.spawn_outcome(name, timeout=300)
        if not ready:
            errors[name] = messages[-1] if messages else "spawn failed"
            return None
        b.wait_for_server(name, timeout=60, interval=0.05)
        status = b.api_status(name).status_code
        if status != 200:
            errors[name] = f"/api/status answered {status}"
            return None
    except (AssertionError, requests.RequestException) as e:
        errors[name] = str(e)[:300]
        return None
    return time.perf_counter() - t0


def floor_spawn(app: Appliance, name: str) -> float | None:
    """Seconds from systemd-run to a hub-less jupyterhub-singleuser answering HTTP."""
    port = free_port()
    env = {
        "JUPYTERHUB_API_TOKEN": secrets.token_hex(16), "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{name}",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{app.hub_port}/hub/api",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{name}/", "JUPYTERHUB_USER": name,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/{name}/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{name}/oauth_callback",
        "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_HOST": "",
    }
    props = " ".join(f"-E {k}={v}" for k, v in env.items())
    unit = f"floor-{name}"
    t0 = time.perf_counter()
    app.sh(f"systemd-run --quiet --unit={unit} -p Type=exec -p User={name} -p DevicePolicy=closed "
           f"-p PrivateTmp=yes -p NoNewPrivileges=yes --slice=jupyter-users.slice "
           f"--working-directory=/home/{name} {props} {SINGLEUSER}")
    url = f"http://127.0.0.1:{port}/user/{name}/api/status"
    deadline = t0 + 120
    try:
        while time.perf_counter() < deadline:
            try:
                requests.get(url, timeout=5)
                return time.perf_counter() - t0
            except requests.ConnectionError:
                time.sleep(0.02)
        return None
    finally:
        app.sh(f"systemctl stop {unit}", check=False)


def summary(samples: list[float | None]) -> dict:
    ok = sorted(s for s in samples if s is not None)
    p95 = ok[min(len(ok) - 1, int(round(0.95 * (len(ok) - 1))))] if ok else None
    return {"n": len(samples), "failures": len(samples) - len(ok),
            "median": statistics.median(ok) if ok else None, "p95": p95, "samples": samples}


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench-spawn")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--json", type=Path, default=Path("bench-spawn.json"))
    ap.add_argument("--deb", type=Path)
    args = ap.parse_args()
    if not 1 <= args.users <= 200:
        sys.exit("bench-spawn: --users takes a number from 1 to 200")
    deb = args.deb or Path(subprocess.run([str(TOP / "scripts/build-deb")], check=True, capture_output=True,
                                          text=True).stdout.strip().splitlines()[-1])
    ct = Container("bench")
    try:
        ct.boot()
        ct.install_deb(deb)
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        n = args.users
        names = [f"seq{i}" for i in range(n)] + [f"par{i}" for i in range(n)] + [f"flo{i}" for i in range(n)]
        script = "".join(f"useradd -m {u} && echo {u}:pw-{u} | chpasswd && gpasswd -a {u} jupyterhub-users "
                         f">/dev/null\n" for u in names)
        ct.run(script)
        ct.run("systemctl start jupyterhub")
        app.wait_hub()
        errors: dict[str, str] = {}
        hub_spawn(app, "seq0", "pw-seq0", {})  # warm-up: page cache, first database writes
        ct.run("applctl deluser seq0 >/dev/null && gpasswd -a seq0 jupyterhub-users >/dev/null")
        floor = [floor_spawn(app, u) for u in names[2 * n:]]
        seq = [hub_spawn(app, u, f"pw-{u}", errors) for u in names[:n]]
        with ThreadPoolExecutor(n) as pool:
            par = list(pool.map(lambda u: hub_spawn(app, u, f"pw-{u}", errors), names[n:2 * n]))
    finally:
        ct.destroy()
    result = {"users": n, "floor": summary(floor), "sequential": summary(seq), "concurrent": summary(par),
              "errors": errors}
    base = result["floor"]["median"]
    print(f"{'':<28}{'median s':>10}{'p95 s':>10}{'failures':>10}{'vs floor':>10}")
    for key, label in (("floor", "floor (singleuser, no hub)"), ("sequential", f"hub, {n} one after another"),
                       ("concurrent", f"hub, {n} at once")):
        s = result[key]
        med, p95 = s["median"], s["p95"]
        ratio = f"+{med - base:.2f}" if med is not None and base is not None and key != "floor" else ""
        print(f"{label:<28}{med or float('nan'):>10.2f}{p95 or float('nan'):>10.2f}{s['failures']:>10}{ratio:>10}")
    for name, why in errors.items():
        print(f"failed: {name}: {why}")
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
