"""Servers and GPUs: stop, servers, gpus."""

from __future__ import annotations

import time

import click

from .. import ephemeral, limits
from . import daemon_calls as daemon
from .common import account, check_name, load_config
from .completion import access_names
from .host import cores_prop, int_prop, unit_props, uptime_seconds
from .hub_api import Hub, HubDown, HubError
from .output import emit, example, human_duration, human_size, json_option, need_root, note, table


def stop_server(name: str, hub: Hub) -> None:
    """Through the hub first, so it forgets the server and its route at once; then,
    if the unit still runs or still waits for a GPU (the hub had lost track of it,
    or is down), through the daemon."""
    try:
        hub.stop_server(name)
    except HubDown:
        pass  # the daemon alone is enough; the hub notices when it polls
    except HubError as e:
        note(f"the hub could not stop {name}'s server ({e}); stopping its unit directly")
    if name in daemon.servers() or name in {q["user"] for q in daemon.gpus().waiting}:
        daemon.stop(name)


@click.command()
@click.argument("name", required=False, shell_complete=access_names)
@click.option("--all", "all_", is_flag=True, help="stop every user's server")
@json_option
@example("sudo applctl stop alice\nsudo applctl stop --all")
def stop(name: str | None, all_: bool, as_json: bool) -> None:
    """Stop NAME's server, or every server with --all. Files stay; running kernels end."""
    if bool(name) == all_:
        raise click.UsageError("give one user NAME or --all")
    if name:
        check_name(name)
    need_root("stop")
    if name and not ephemeral.is_visitor(name):  # a visitor has no account
        account(name)
    # Running servers, and spawns waiting for a GPU: stopping one leaves the queue.
    running = daemon.servers() | {q["user"]: q for q in daemon.gpus().waiting}
    hub = Hub(load_config())
    stopped, not_running = [], []
    for n in sorted(running) if all_ else [name]:
        if n in running:
            stop_server(n, hub)
            stopped.append(n)
        else:
            not_running.append(n)
    if all_:
        human = (f"stopped {len(stopped)} server{'s' if len(stopped) != 1 else ''}: {', '.join(stopped)}"
                 if stopped else "no server is running; nothing to stop")
    else:
        human = f"stopped {name}'s server" if stopped else f"{name} has no running server; nothing to stop"
    emit(as_json, {"stopped": stopped, "not_running": not_running}, human)


@click.command()
@json_option
@example("sudo applctl servers")
def servers(as_json: bool) -> None:
    """Running servers: unit, state, uptime, memory, GPUs; and why servers stopped
    when their owners did not ask (idle, max age, GPU reclaimed, out of memory,
    an administrator, a crash)."""
    need_root("servers")
    # A failed unit stays loaded until its owner's next start (so the hub can say why
    # it ended); it is listed below with the stops, not as running.
    running = {u: s for u, s in daemon.servers().items() if s["state"] != "failed"}
    index = daemon.gpu_labels(daemon.gpus()) if any(s.get("gpus") for s in running.values()) else {}
    rows = []
    for user, s in sorted(running.items()):
        props = unit_props(s["unit"], "ActiveEnterTimestampMonotonic", "MemoryCurrent", "MemoryMax",
                           "CPUQuotaPerSecUSec")
        rows.append({"user": user, "unit": s["unit"], "state": s["state"],
                     "uptime_seconds": _round(uptime_seconds(props)),
                     "memory_bytes": int_prop(props, "MemoryCurrent"), "gpus": s.get("gpus", []),
                     "limits": {"mem": int_prop(props, "MemoryMax"), "cpu": cores_prop(props)}})
    human = table(["USER", "UNIT", "STATE", "UPTIME", "MEMORY", "LIMITS", "GPUS"],
                  [[r["user"], r["unit"], r["state"], human_duration(r["uptime_seconds"]),
                    human_size(r["memory_bytes"]), limits.short(r["limits"]["mem"], r["limits"]["cpu"]),
                    daemon.gpu_list(r["gpus"], index)]
                   for r in rows], painted=(2,)) if rows else "no server is running"
    stops = last_stops(Hub(load_config()))
    for r in rows:
        r["last_stop"] = stops.get(r["user"])
    stopped = {u: why for u, why in stops.items() if u not in running}
    if stopped:
        human += "\n\nStopped without being asked (the last time):\n" + table(
            ["USER", "WHEN", "REASON", "WHY"],
            [[u, time.strftime("%Y-%m-%d %H:%M", time.localtime(w["time"])), w["reason"], w["text"]]
             for u, w in sorted(stopped.items())])
    emit(as_json, rows, human)


def last_stops(hub: Hub) -> dict[str, dict]:
    """user -> the last stop they did not ask for ({reason, text, time}), from the
    hub's database; {} (with a note) when the hub cannot say."""
    try:
        users = hub.users(include_stopped=True)
    except (HubDown, HubError) as e:
        note(f"the hub could not say why servers stopped ({e})")
        return {}
    out = {}
    for name, u in users.items():
        why = ((u.get("servers") or {}).get("") or {}).get("state", {}) or {}
        if isinstance(why.get("last_stop"), dict):
            out[name] = why["last_stop"]
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def holder_text(g: dict) -> str:
    """Who holds a GPU; a shared one's holders and its seats."""
    names = g.get("holders") or ([g["holder"]] if g.get("holder") else [])
    text = ", ".join(names) or "free"
    if g.get("seats", 1) > 1:
        text += f" ({len(names)}/{g['seats']} seats)"
    return text + (" (starting)" if g.get("starting") else "")


@click.command()
@json_option
@example("sudo applctl gpus")
def gpus(as_json: bool) -> None:
    """The machine's GPUs: memory, utilisation, who holds each and for how long it
    has been idle, and who waits for one."""
    need_root("gpus")
    report = daemon.gpus()
    if as_json or not report.available:
        emit(as_json, report.raw, daemon.summary(report))
        return
    lines = [daemon.summary(report), ""]
    label = daemon.gpu_labels(report)
    lines.append(table(["GPU", "NAME", "MEMORY USED", "UTIL", "HOLDER", "IDLE", "UUID"], [
        [label[g["uuid"]], g["name"], f"{human_size(g.get('memory_used'))} / {human_size(g.get('memory_total'))}",
         "-" if g.get("utilization") is None else f"{g['utilization']}%",
         holder_text(g),
         human_duration(g.get("idle_seconds")), g["uuid"]]
        for g in report.gpus]))
    lines += [f"GPU {u['index']} is not used: {u['reason']}" for u in report.unusable]
    waiting = report.waiting
    if waiting:
        now = time.time()
        lines += ["", "Waiting for a GPU, first come first served:"]
        lines.append(table(["PLACE", "USER", "GPUS", "WAITING"], [
            [i, q["user"], q["gpus"], human_duration(now - q["since"])] for i, q in enumerate(waiting, 1)]))
    emit(False, None, "\n".join(lines))
