"""How long `apt install` of the .deb takes in a fresh container, and the hub's
first start after it (issue 27, item 3). scripts/bench-install runs it:

    sudo scripts/bench-install [--runs 3] [--release trixie|bookworm] DEB [DEB...]

Each run boots a fresh copy of the container base (tests/system/container.py: a
debootstrapped minbase with systemd; no python3), then times
  - apt:   `apt-get install ./DEB` as the tests and an administrator do it: this
           includes fetching and unpacking python3 and the other dependencies;
  - dpkg:  the same with the dependencies installed beforehand, i.e. the cost of
           this package alone (unpacking it and its maintainer scripts);
  - start: `systemctl start jupyterhub` until the hub answers /hub/api/ through the
           proxy, the first time after the install;
  - again: the same after `systemctl restart jupyterhub`;
  - bare:  a restart after deleting all byte-code (none shipped, none compiled).
It prints one line per run and the medians, per .deb (several .debs take turns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from booted import Appliance, free_port  # noqa: E402
from container import Container  # noqa: E402

INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"


def hub_answers(url: str, timeout: float = 180) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(url + "/hub/api/", timeout=5).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the hub did not answer in {timeout} s")


def deps_of(ct: Container, deb: str) -> str:
    out = ct.run(f"dpkg-deb -f /root/{deb} Depends").stdout
    return " ".join(part.split("(")[0].split("|")[0].strip() for part in out.split(","))


def one_run(deb: Path, release: str, with_deps: bool) -> dict[str, float]:
    ct = Container(f"bench-install-{os.getpid()}", release=release)
    try:
        ct.boot()
        ct.copy_in(deb, f"/root/{deb.name}")
        if with_deps:
            ct.run(f"{INSTALL} {deps_of(ct, deb.name)}")
        t = time.monotonic()
        ct.run(f"{INSTALL} /root/{deb.name}")
        installed = time.monotonic() - t
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        ct.run("sync")
        t = time.monotonic()
        ct.run("systemctl daemon-reload && systemctl start jupyterhub")
        first = time.monotonic() - t + hub_answers(app.url)
        t = time.monotonic()
        ct.run("systemctl restart jupyterhub")
        again = time.monotonic() - t + hub_answers(app.url)
        disk = int(ct.run("du -sk /usr/lib/jupyterhub-appliance").stdout.split()[0]) / 1024
        # And with no byte-code at all (neither shipped nor compiled at install): the
        # hub, running as jupyterhub, cannot write it to /usr, so every start compiles.
        ct.run("find /usr/lib/jupyterhub-appliance -name __pycache__ -prune -exec rm -rf {} +")
        t = time.monotonic()
        ct.run("systemctl restart jupyterhub")
        bare = time.monotonic() - t + hub_answers(app.url)
        return {"dpkg" if with_deps else "apt": installed, "start": first, "again": again, "disk": disk,
                "bare": bare}
    finally:
        ct.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--release", default="trixie")
    ap.add_argument("debs", nargs="+", type=Path)
    args = ap.parse_args()
    debs = [deb.resolve() for deb in args.debs]
    rows: dict[Path, list[dict[str, float]]] = {deb: [] for deb in debs}
    # The packages in turn, run after run: the machine's speed drifts (other work on it).
    for i in range(args.runs):
        for deb in debs:
            row = one_run(deb, args.release, with_deps=False) | one_run(deb, args.release, with_deps=True)
            rows[deb].append(row)
            print(f"{deb.name} run {i + 1}: apt {row['apt']:.1f} s, dpkg {row['dpkg']:.1f} s, "
                  f"first hub start {row['start']:.1f} s, restart {row['again']:.1f} s, "
                  f"restart without byte-code {row['bare']:.1f} s, on disk {row['disk']:.0f} MiB", flush=True)
    for deb in debs:
        med = {k: statistics.median(r[k] for r in rows[deb]) for k in rows[deb][0]}
        print(f"{deb}: {deb.stat().st_size / 2**20:.1f} MiB; median of {args.runs}: apt install {med['apt']:.1f} s "
              f"(target <= 20 s), dpkg alone {med['dpkg']:.1f} s, first hub start {med['start']:.1f} s, "
              f"restart {med['again']:.1f} s, restart without byte-code {med['bare']:.1f} s, on disk after install {med['disk']:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
