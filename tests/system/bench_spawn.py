"""The spawn benchmark behind scripts/bench-spawn (see there for what it measures)."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import debs
import previous
import requests
import stock_hub
from booted import HUB_PY, Appliance, free_port
from browser import Browser
from container import DEFAULT_RELEASE, RELEASES, Container

from appliance.daemon.units import SINGLEUSER  # what our server units run

SERVER_PY = "/usr/lib/jupyterhub-appliance/user/bin/python"
# The package when issue 16 ("Start faster") was filed: its goal for N at once is
# at most 0.6 of this one's median.
FILING_TIME_REF = "687fb8a"


def hub_spawn(url: str, name: str, password: str, errors: dict[str, str]) -> float | None:
    """Seconds from submitting the login form to /user/NAME/api/status answering 200.

    As a browser does: the login form, the spawn-pending page's event stream until
    the server is ready, then the server itself (through the OAuth redirects).
    """
    b = Browser(url)
    page = b.get("/hub/login")
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    t0 = time.perf_counter()
    try:
        b.s.post(url + "/hub/login?next=", data={"_xsrf": xsrf, "username": name, "password": password},
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
    """Seconds from systemd-run to a hub-less server answering HTTP: the same command
    our server units run (appliance-singleuser), so "vs floor" is what the hub adds."""
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


def restart_gap(app: Appliance) -> float:
    """Seconds the hub's API, polled every 20 ms through the proxy, went unanswered
    across one `systemctl restart jupyterhub` (from the first miss to the next answer)."""
    def answers() -> bool:
        try:
            return requests.get(app.url + "/hub/api/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    app.wait_hub()
    restart = subprocess.Popen(["nsenter", "-t", str(app.ct.pid), "-a", "--", "systemctl", "restart", "jupyterhub"],
                               start_new_session=True)
    first_miss = None
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        if not answers():
            first_miss = first_miss or t
        elif first_miss is not None or restart.poll() is not None:  # back, or never gone long enough to see
            break
        time.sleep(0.02)
    restart.wait()
    return 0.0 if first_miss is None else t - first_miss


def proxy_restart_gap(app: Appliance, b: Browser, name: str, kept: bool) -> tuple[float, int]:
    """Across one `systemctl restart jupyterhub-proxy`: the longest time NAME's running
    server, asked through the proxy every 20 ms, went without answering (a request
    waiting in the held socket counts until it is answered), and how many requests
    the hub answered instead (no route). Not `kept`: the routes file is removed first,
    so the proxy starts without routes, as 0.2.0's did; the hub's route check then
    puts them back."""
    if not kept:
        app.sh("rm -f /run/jupyterhub-proxy/routes.json")
    restart = subprocess.Popen(["nsenter", "-t", str(app.ct.pid), "-a", "--", "systemctl", "restart",
                                "jupyterhub-proxy"], start_new_session=True)
    last = time.perf_counter()
    gap, misses, restarted = 0.0, 0, False
    deadline = last + 120
    while time.perf_counter() < deadline:
        try:
            r = b.get(f"/user/{name}/api/status", allow_redirects=False, timeout=60)
            ok = r.status_code == 200 and "json" in r.headers.get("Content-Type", "")
        except requests.RequestException:
            ok = False
        now = time.perf_counter()
        if ok:
            gap, last = max(gap, now - last), now
            if restarted:
                break
            restarted = restart.poll() is not None  # one answer after the restart ended: done
        else:
            misses += 1
        time.sleep(0.02)
    restart.wait()
    return gap, misses


IMPORTS = {  # what each hub and each server imports at start, in each environment
    "server": "import jupyterhub.singleuser, jupyterlab, jupyter_server.serverapp",
    "hub": "import jupyterhub.app",
}


def import_profile(ct: Container, python: str, what: str) -> dict:
    """`python -X importtime` of IMPORTS[what], median total of three runs, with the
    five packages whose modules cost the most to import (their own time, summed),
    and whether rfc3987_syntax ended up imported (an import that failed, as
    jsonschema's attempt does where it is left out, still gets a line)."""
    probe = IMPORTS[what] + "; import sys; print(chr(1) if 'rfc3987_syntax' in sys.modules else '')"
    runs = []
    for _ in range(3):
        r = ct.run(f"cd /tmp && {python} -X importtime -c \"{probe}\"", user="nobody")
        per_package: dict[str, float] = {}
        for line in r.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", line)
            if m:
                package = m.group(2).split(".")[0]
                per_package[package] = per_package.get(package, 0.0) + int(m.group(1)) / 1e6
        runs.append((sum(per_package.values()), per_package, "\x01" in r.stdout))
    runs.sort(key=lambda run: run[0])
    total, per_package, rfc = runs[1]
    top = sorted(per_package.items(), key=lambda kv: kv[1], reverse=True)[:5]
    return {"total": total, "top": [{"package": name, "seconds": c} for name, c in top], "rfc3987_syntax": rfc}


def boot_appliance(ct: Container, deb: Path, users: list[str], newer_ports: bool = True) -> Appliance:
    """`deb` installed in the booted container `ct`, on free ports, with `users`
    (password pw-NAME) in jupyterhub-users; the hub started and answering."""
    ct.boot()
    ct.install_deb(deb)
    app = Appliance(ct, free_port(), free_port(), free_port())
    ct.write("/etc/jupyterhub/appliance.toml", app.config_text(newer_ports=newer_ports))
    add_users(ct, users, group="jupyterhub-users")
    ct.run("systemctl daemon-reload && systemctl start jupyterhub")
    app.wait_hub()
    return app


def add_users(ct: Container, users: list[str], group: str | None = None) -> None:
    ct.run("".join(f"useradd -m {u} && echo {u}:pw-{u} | chpasswd\n" for u in users))
    if group:
        ct.run("".join(f"gpasswd -a {u} {group} >/dev/null\n" for u in users))


def at_once(url: str, users: list[str], errors: dict[str, str]) -> list[float | None]:
    """hub_spawn for all `users` at the same time."""
    with ThreadPoolExecutor(len(users)) as pool:
        return list(pool.map(lambda u: hub_spawn(url, u, f"pw-{u}", errors), users))


def older_package_at_once(ref: str, n: int, errors: dict[str, str]) -> list[float | None]:
    """N at once on the package built from `ref` with its own scripts/build-deb
    (previous.py), in a container of its own booted after ours, after one warm-up
    spawn as ours had."""
    ct = Container(f"bench-ref{os.getpid()}", release=previous.PREVIOUS_RELEASE)  # what its build-deb made
    try:
        app = boot_appliance(ct, previous.deb(ref), [f"old{i}" for i in range(n + 1)], newer_ports=False)
        hub_spawn(app.url, f"old{n}", f"pw-old{n}", {})
        return at_once(app.url, [f"old{i}" for i in range(n)], errors)
    finally:
        ct.destroy()


class LoopLag:
    """The hub's event loop as a person waiting on it sees it: /hub/api/ (answered by
    the hub alone, no database) asked every 20 ms from a thread; the slowest answer
    is how long the loop was held at most (a request waits for every callback
    queued before it)."""

    def __init__(self, url: str):
        self.url, self.samples, self._stop = url + "/hub/api/", [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    s.get(self.url, timeout=30)
                    self.samples.append(time.perf_counter() - t0)
                except requests.RequestException:
                    self.samples.append(30.0)
                time.sleep(0.02)

    def __enter__(self) -> LoopLag:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def big_nss(ct: Container, groups: int) -> None:
    """A directory as large as a site's LDAP, in files: `groups` groups of 20 members
    each (and their accounts) placed before every other entry of /etc/group and
    /etc/passwd, so that each NSS lookup the hub makes reads through them, as a
    lookup through sssd or LDAP takes its time."""
    ct.run(f"""python3 - <<'EOF'
n = {groups}
pw = "".join(f"nss{{i}}:x:{{100000 + i}}:{{100000 + i // 20}}::/nonexistent:/usr/sbin/nologin\\n" for i in range(20 * n))
gr = "".join(f"nssg{{g}}:x:{{100000 + g}}:" + ",".join(f"nss{{20 * g + k}}" for k in range(20)) + "\\n" for g in range(n))
for path, bulk in (("/etc/passwd", pw), ("/etc/group", gr)):
    old = open(path).read()
    open(path + ".new", "w").write(bulk + old)
    __import__("os").replace(path + ".new", path)
EOF""")


def storm(deb: Path, release: str, n: int, nss_groups: int) -> dict:
    """N spawns at once (after one warm-up spawn) in a fresh container, with the
    hub's event-loop lag measured throughout (LoopLag)."""
    ct = Container(f"storm{os.getpid()}", release=release)
    names = [f"st{i}" for i in range(n + 1)]
    errors: dict[str, str] = {}
    try:
        app = boot_appliance(ct, deb, names)
        if nss_groups:
            big_nss(ct, nss_groups)
        hub_spawn(app.url, names[n], f"pw-{names[n]}", errors)
        with LoopLag(app.url) as idle:
            time.sleep(3)
        with LoopLag(app.url) as lag:
            samples = at_once(app.url, names[:n], errors)
    finally:
        ct.destroy()
    return {"users": n, "nss_groups": nss_groups, "spawns": summary(samples), "errors": errors,
            "idle_lag_max": max(idle.samples), "lag_median": statistics.median(lag.samples),
            "lag_max": max(lag.samples), "lag_samples": len(lag.samples)}


def print_storm(r: dict) -> None:
    s = r["spawns"]
    ok = [x for x in s["samples"] if x is not None]
    print(f"storm: {r['users']} spawns at once, {r['nss_groups']} extra groups in /etc/group: "
          f"login to ready median {fmt(s['median'])} s, max {fmt(max(ok, default=None))} s, "
          f"{s['failures']} failed; hub API answer during the storm median {r['lag_median'] * 1000:.0f} ms, "
          f"max {r['lag_max'] * 1000:.0f} ms ({r['lag_samples']} asks; idle max {r['idle_lag_max'] * 1000:.0f} ms)")
    for name, why in r["errors"].items():
        print(f"failed: {name}: {why}")


def built_deb(given: Path | None, release: str = DEFAULT_RELEASE) -> Path:
    """The --deb given, or this tree's for the release, built now."""
    return given or debs.deb(release)


def summary(samples: list[float | None]) -> dict:
    ok = sorted(s for s in samples if s is not None)
    p95 = ok[min(len(ok) - 1, int(round(0.95 * (len(ok) - 1))))] if ok else None
    return {"n": len(samples), "failures": len(samples) - len(ok),
            "median": statistics.median(ok) if ok else None, "p95": p95, "samples": samples}


def ratio(ours: dict, theirs: dict) -> float | None:
    """Median over median; none when ours lost a spawn (our median would leave out
    our worst). Theirs may have lost some: left out of their median, where lost
    spawns (timeouts) are their slowest, they can only make ours look worse."""
    if ours["failures"] or not ours["median"] or not theirs["median"]:
        return None
    return ours["median"] / theirs["median"]


def fmt_ratio(r: float | None, theirs: dict) -> str:
    lost = theirs["failures"]
    return fmt(r) + (f" (theirs over the {theirs['n'] - lost} of {theirs['n']} that started)"
                     if r is not None and lost else "")


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench-spawn")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--proxy-restarts", type=int, default=10,
                    help="proxy restarts measured with kept routes and as many without (as 0.2.0)")
    ap.add_argument("--json", type=Path, default=Path("bench-spawn.json"))
    ap.add_argument("--deb", type=Path, help="an already built package for --release")
    # Debian 13, the main target, by default. The filing-time package (--then-ref),
    # whose figures issue 16 measured, exists only for Debian 12: compared with on it.
    ap.add_argument("--release", choices=list(RELEASES), default=DEFAULT_RELEASE,
                    help=f"the Debian release of the container (default: {DEFAULT_RELEASE})")
    ap.add_argument("--then-ref", default=None, metavar="REF",
                    help="afterwards, N at once on the package built from this commit, in a second container "
                         f"(default with --release bookworm: {FILING_TIME_REF}, the package when issue 16 was "
                         "filed; '' skips it)")
    ap.add_argument("--storm", action="store_true",
                    help="only N spawns at once with the hub's event-loop lag measured (no stock hub, no older ref)")
    ap.add_argument("--nss-groups", type=int, default=0, metavar="K",
                    help="with --storm: K extra groups of 20 accounts before all others in /etc/group, "
                         "so each NSS lookup takes as long as a large directory's")
    args = ap.parse_args()
    if args.then_ref is None:
        args.then_ref = FILING_TIME_REF if args.release == "bookworm" else ""
    if not 1 <= args.users <= 200:
        sys.exit("bench-spawn: --users takes a number from 1 to 200")
    if not 0 <= args.restarts <= 50:
        sys.exit("bench-spawn: --restarts takes a number from 0 to 50")
    if not 0 <= args.proxy_restarts <= 50:
        sys.exit("bench-spawn: --proxy-restarts takes a number from 0 to 50")
    if not 0 <= args.nss_groups <= 100000:
        sys.exit("bench-spawn: --nss-groups takes a number from 0 to 100000")
    if args.storm:
        result = storm(built_deb(args.deb, args.release), args.release, args.users, args.nss_groups)
        print_storm(result)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"written: {args.json}")
        return 0
    if args.then_ref:
        previous.start_in_background(args.then_ref)  # its build overlaps ours
    deb = built_deb(args.deb, args.release)
    ct = Container(f"bench{os.getpid()}", release=args.release)  # not a fixed name: benches of other trees run beside it
    n = args.users
    errors: dict[str, str] = {}
    try:
        groups = {g: [f"{g}{i}" for i in range(n)] for g in ("seq", "par", "flo", "stk", "stp")}
        app = boot_appliance(ct, deb, groups["seq"] + groups["par"] + groups["flo"] + ["prx0"])
        add_users(ct, groups["stk"] + groups["stp"])
        stock_app = Appliance(ct, free_port(), free_port(), free_port())  # its ports; url and wait_hub fit it too
        stock_hub.start(ct, stock_app.port, stock_app.hub_port, stock_app.proxy_api_port)
        stock_url = stock_app.url
        app.wait_hub()
        stock_app.wait_hub()
        # Warm-up of each: page cache, first database writes.
        hub_spawn(app.url, "seq0", "pw-seq0", {})
        hub_spawn(stock_url, "stk0", "pw-stk0", {})
        ct.run("applctl deluser seq0 >/dev/null && gpasswd -a seq0 jupyterhub-users >/dev/null")
        ct.run("systemctl stop jupyter-stk0-singleuser")
        stock_py = f"{stock_hub.PREFIX}/bin/python"
        profile = {("ours", "server"): import_profile(ct, SERVER_PY, "server"),
                   ("stock", "server"): import_profile(ct, stock_py, "server"),
                   ("ours", "hub"): import_profile(ct, HUB_PY, "hub"),
                   ("stock", "hub"): import_profile(ct, stock_py, "hub")}
        floor = [floor_spawn(app, u) for u in groups["flo"]]
        # One after another, ours and stock interleaved (alternating who goes first),
        # so both see the same machine.
        seq: list[float | None] = []
        stock: list[float | None] = []
        for i in range(n):
            pair = [(seq, app.url, groups["seq"][i]), (stock, stock_url, groups["stk"][i])]
            for samples, url, u in (pair if i % 2 == 0 else pair[::-1]):
                samples.append(hub_spawn(url, u, f"pw-{u}", errors))
        # Each "at once" on a machine with no other server running, as the older
        # package's has (its own container): 40 idle servers and their proxy routes
        # are not part of what is compared.
        ct.run("systemctl stop 'jupyter-stk*-singleuser' 'jupyter-seq*'", check=False)
        par = at_once(app.url, groups["par"], errors)
        ct.run("systemctl stop 'jupyter-par*'", check=False)
        stock_par = at_once(stock_url, groups["stp"], errors)
        gaps = [restart_gap(app) for _ in range(args.restarts)]
        # One running server, asked through the proxy while it restarts: with the
        # routes it keeps, then without them (0.2.0's proxy), alternating.
        proxy_gaps: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
        if args.proxy_restarts:
            b = Browser(app.url)
            b.login("prx0", "pw-prx0")
            b.wait_for_server("prx0", timeout=120, interval=0.1)
            for _ in range(args.proxy_restarts):
                for kept in (True, False):
                    app.wait_hub()
                    proxy_gaps[kept].append(proxy_restart_gap(app, b, "prx0", kept))
    finally:
        ct.destroy()
    older_par: list[float | None] = []
    if args.then_ref:
        try:
            older_par = older_package_at_once(args.then_ref, n, errors)
        except Exception as e:  # ours are measured: print them all the same
            errors[args.then_ref] = f"not measured: {str(e)[-300:]}"
    result = {"users": n, "floor": summary(floor), "sequential": summary(seq), "stock_sequential": summary(stock),
              "concurrent": summary(par), "stock_concurrent": summary(stock_par),
              "hub_restart_gap": summary(gaps), "errors": errors,
              "proxy_restart_gap": {("kept" if k else "not_kept"): {**summary([g for g, _ in v]),
                                                                   "max": max((g for g, _ in v), default=None),
                                                                   "misses": sum(m for _, m in v)}
                                    for k, v in proxy_gaps.items()},
              "imports": {f"{env} {what}": v for (env, what), v in profile.items()}}
    result["ratio_sequential"] = ratio(result["sequential"], result["stock_sequential"])
    result["ratio_concurrent"] = ratio(result["concurrent"], result["stock_concurrent"])
    if args.then_ref:
        result["older_ref"] = args.then_ref
        result["older_concurrent"] = summary(older_par)
        result["ratio_older_concurrent"] = ratio(result["concurrent"], result["older_concurrent"])
    base = result["floor"]["median"]
    print(f"{'login to ready':<36}{'median s':>10}{'p95 s':>10}{'failures':>10}{'vs floor':>10}")
    for key, label in (("floor", "floor (our server, no hub)"), ("sequential", f"appliance, {n} one after another"),
                       ("stock_sequential", f"stock hub, {n} one after another"),
                       ("concurrent", f"appliance, {n} at once"), ("stock_concurrent", f"stock hub, {n} at once"),
                       ("older_concurrent", f"{args.then_ref}, {n} at once")):
        if key not in result:
            continue
        s = result[key]
        med = s["median"]
        extra = f"{med - base:+.2f}" if med is not None and base is not None and key != "floor" else ""
        print(f"{label:<36}{fmt(med):>10}{fmt(s['p95']):>10}{s['failures']:>10}{extra:>10}")
    print(f"ratio appliance/stock, one after another: "
          f"{fmt_ratio(result['ratio_sequential'], result['stock_sequential'])}; "
          f"{n} at once: {fmt_ratio(result['ratio_concurrent'], result['stock_concurrent'])}")
    if args.then_ref:
        print(f"ratio appliance/{args.then_ref} (the package built from that commit), {n} at once: "
              f"{fmt_ratio(result['ratio_older_concurrent'], result['older_concurrent'])}")
    g = result["hub_restart_gap"]
    print(f"systemctl restart jupyterhub: API unanswered median {fmt(g['median'])} s, "
          f"max {fmt(max((x for x in gaps if x is not None), default=None))} s over {len(gaps)} restarts")
    pg = result["proxy_restart_gap"]
    if args.proxy_restarts:
        print(f"systemctl restart jupyterhub-proxy, a running server asked every 20 ms: unanswered median "
              f"{fmt(pg['kept']['median'])} s, max {fmt(pg['kept']['max'])} s, {pg['kept']['misses']} answered by "
              f"the hub instead, over {args.proxy_restarts} restarts (target: back within 1 s); without kept "
              f"routes, as 0.2.0: median {fmt(pg['not_kept']['median'])} s, max {fmt(pg['not_kept']['max'])} s, "
              f"{pg['not_kept']['misses']} answered by the hub")
    print("imports at start (python -X importtime, median of 3; the five costliest packages, own time):")
    for name, prof in result["imports"].items():
        top = ", ".join(f"{t['package']} {t['seconds']:.2f}" for t in prof["top"])
        print(f"  {name:<13}{prof['total']:6.2f} s  rfc3987_syntax {'imported' if prof['rfc3987_syntax'] else 'absent'}"
              f"; {top}")
    for name, why in errors.items():
        print(f"failed: {name}: {why}")
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
