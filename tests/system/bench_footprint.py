"""The idle footprint benchmark behind scripts/bench-footprint (see there)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_spawn import built_deb
from booted import HUB_PY, Appliance, free_port
from container import Container

# Run inside the container: one JSON line per process of the appliance's own units
# (users' servers, in jupyter-users.slice, are not among them), sizes in KiB.
PROBE = r"""
import json, os, re
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        unit = open(f"/proc/{pid}/cgroup").read().strip().rsplit("/", 1)[-1]
        rollup = open(f"/proc/{pid}/smaps_rollup").read()
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if unit.startswith("jupyterhub") and unit.endswith(".service"):
        f = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M)}
        print(json.dumps({"unit": unit, "pid": int(pid), "rss": f["Rss"], "pss": f["Pss"],
                          "uss": f["Private_Clean"] + f["Private_Dirty"], "anon": f["Anonymous"],
                          "command": b" ".join(argv).decode(errors="replace")[:100]}))
"""


def measure(app: Appliance) -> list[dict]:
    app.ct.write("/root/footprint_probe.py", PROBE)
    out = app.sh(f"{HUB_PY} /root/footprint_probe.py").stdout
    return sorted((json.loads(line) for line in out.splitlines()), key=lambda p: (p["unit"], p["pid"]))


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench-footprint")
    ap.add_argument("--settle", type=float, default=25.0, help="seconds to wait after the hub answers")
    ap.add_argument("--json", type=Path, default=Path("bench-footprint.json"))
    ap.add_argument("--deb", type=Path)
    args = ap.parse_args()
    if not 0 <= args.settle <= 3600:
        sys.exit("bench-footprint: --settle takes seconds from 0 to 3600")
    deb = built_deb(args.deb)
    ct = Container("benchf")
    try:
        ct.boot()
        ct.install_deb(deb)
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        ct.run("systemctl daemon-reload && systemctl start jupyterhub")
        app.wait_hub()
        time.sleep(args.settle)
        procs = measure(app)
    finally:
        ct.destroy()
    mib = 1024
    print(f"{'unit':<30}{'pid':>7}{'RSS':>8}{'PSS':>8}{'USS':>8}{'anon':>8}  command (MiB)")
    for p in procs:
        print(f"{p['unit']:<30}{p['pid']:>7}{p['rss'] / mib:>8.1f}{p['pss'] / mib:>8.1f}{p['uss'] / mib:>8.1f}"
              f"{p['anon'] / mib:>8.1f}  {p['command']}")
    total = {k: sum(p[k] for p in procs) for k in ("rss", "pss", "uss")}
    print(f"{'total':<37}{total['rss'] / mib:>8.1f}{total['pss'] / mib:>8.1f}{total['uss'] / mib:>8.1f}")
    args.json.write_text(json.dumps({"settle": args.settle, "processes": procs, "total_kib": total}, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
