"""The ephemeral-mode benchmark behind scripts/bench-ephemeral (see there)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_spawn import built_deb, fmt, hub_spawn, summary
from booted import Appliance, free_port
from container import Container
from visitor_client import arrive, ready_pool


def ephemeral(app: Appliance, pool: int) -> None:
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f'mode = "ephemeral"\n[ephemeral]\nwarm_pool = {pool}\nmax_visitors = 50\n'))
    app.sh("applctl reload >/dev/null")
    app.wait_hub()


def visits(app: Appliance, n: int, warm: bool, errors: dict[str, str]) -> list[float | None]:
    """n visitors one after another, each server stopped before the next arrives; with
    `warm`, each arrives once a pooled server is ready (as at a workshop's start)."""
    out: list[float | None] = []
    for i in range(n):
        try:
            if warm:
                ready_pool(app)
            _b, name, seconds = arrive(app)
            out.append(seconds)
            app.sh(f"applctl stop {name} >/dev/null")
        except AssertionError as e:
            errors[f"{'warm' if warm else 'cold'} {i}"] = str(e)[:300]
            out.append(None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench-ephemeral")
    ap.add_argument("--visitors", type=int, default=10)
    ap.add_argument("--json", type=Path, default=Path("bench-ephemeral.json"))
    ap.add_argument("--deb", type=Path)
    args = ap.parse_args()
    if not 1 <= args.visitors <= 100:
        sys.exit("bench-ephemeral: --visitors takes a number from 1 to 100")
    deb = built_deb(args.deb)
    n = args.visitors
    errors: dict[str, str] = {}
    ct = Container("benche")
    try:
        ct.boot()
        ct.install_deb(deb)
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        names = [f"acc{i}" for i in range(n + 1)]
        ct.run("".join(f"useradd -m {u} && echo {u}:pw-{u} | chpasswd && gpasswd -a {u} jupyterhub-users "
                       ">/dev/null\n" for u in names))
        ct.run("systemctl daemon-reload && systemctl start jupyterhub")
        app.wait_hub()
        hub_spawn(app.url, names[0], f"pw-{names[0]}", {})  # warm-up: page cache, first database writes
        accounts = []
        for u in names[1:]:
            accounts.append(hub_spawn(app.url, u, f"pw-{u}", errors))
            ct.run(f"applctl stop {u} >/dev/null")
        ephemeral(app, 0)
        cold = visits(app, n, False, errors)
        ephemeral(app, 2)
        warm = visits(app, n, True, errors)
    finally:
        ct.destroy()
    result = {"visitors": n, "accounts": summary(accounts), "ephemeral_no_pool": summary(cold),
              "ephemeral_warm_pool": summary(warm), "errors": errors}
    base = result["accounts"]["median"]
    print(f"{'login to ready, one after another':<44}{'median s':>10}{'p95 s':>10}{'failures':>10}{'vs accounts':>12}")
    for key, label in (("accounts", f"accounts mode (PAM login), {n}"),
                       ("ephemeral_no_pool", f"ephemeral, no pool, {n}"),
                       ("ephemeral_warm_pool", f"ephemeral, a warm server ready, {n}")):
        s = result[key]
        ratio = s["median"] / base if s["median"] is not None and base else None
        print(f"{label:<44}{fmt(s['median']):>10}{fmt(s['p95']):>10}{s['failures']:>10}{fmt(ratio):>12}")
    for what, why in errors.items():
        print(f"failed: {what}: {why}")
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written: {args.json}")
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
