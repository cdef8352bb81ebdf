"""Memory budgets of shared GPUs' seats (daemon/gpu_share.py): who is over, the
warning, the grace, and the kill of the largest process of that server only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace

from appliance.daemon import gpu_share
from appliance.daemon.gpu_share import ShareGuard

from .conftest import GPUS

GiB = 2**30
GPU = replace(GPUS[0], uuid="GPU-s", memory_total=80 * GiB)  # shared 4 ways: 20 GiB a seat
SEATS = {"GPU-s": 4}


class Units:
    """systemd's answer to GetUnitByPID."""
    def __init__(self, of: dict[int, str]):
        self.of = of

    async def unit_of_pid(self, pid: int) -> str | None:
        return self.of.get(pid)


def guard(procs: dict[int, int], units: dict[int, str], now: list[float], killed: list):
    async def kill(systemd, pid, unit):
        killed.append((pid, unit))
        return True
    return ShareGuard(Units(units), clock=lambda: now[0], processes=lambda uuids: {"GPU-s": list(procs.items())},
                      kill=kill)


def test_a_server_over_its_share_is_warned_then_loses_its_largest_process_after_the_grace(monkeypatch):
    told = []
    monkeypatch.setattr(gpu_share.journal, "send", lambda text, **f: told.append((text, f["OBJECT_SYSTEMD_UNIT"])))
    now, killed = [1000.0], []
    # ann: two kernels, 12 + 10 GiB = 22 GiB, over 20; bob: 15 GiB, under; pid 9 is no server's.
    procs = {101: 12 * GiB, 102: 10 * GiB, 201: 15 * GiB, 9: 30 * GiB}
    units = {101: "jupyter-ann.service", 102: "jupyter-ann.service", 201: "jupyter-bob.service", 9: "cron.service"}
    g = guard(procs, units, now, killed)
    asyncio.run(g.check([GPU], SEATS, grace=60))
    report = g.report(60)["GPU-s"]
    assert set(report) == {"ann", "bob"}
    assert report["ann"] == {"used": 22 * GiB, "budget": 20 * GiB, "over_since": 1000.0, "kill_at": 1060.0,
                             "kills": []}
    assert report["bob"]["over_since"] is None
    assert [u for _, u in told] == ["jupyter-ann.service"] and "stopped in 60 s" in told[0][0]
    now[0] = 1059.0
    asyncio.run(g.check([GPU], SEATS, grace=60))
    assert killed == [] and len(told) == 1  # within the grace, told once
    now[0] = 1060.0
    asyncio.run(g.check([GPU], SEATS, grace=60))
    assert killed == [(101, "jupyter-ann.service")]  # the largest, and only it
    assert g.kills_total == 1 and "over its GPU memory share" in told[-1][0]
    del procs[101]
    now[0] = 1070.0
    asyncio.run(g.check([GPU], SEATS, grace=60))
    ann = g.report(60)["GPU-s"]["ann"]
    assert (ann["used"], ann["over_since"], ann["kills"]) == (10 * GiB, None, [{"pid": 101, "bytes": 12 * GiB,
                                                                               "time": 1060.0}])


def test_going_back_under_the_share_ends_the_countdown():
    now, killed = [0.0], []
    procs = {101: 25 * GiB}
    g = guard(procs, {101: "jupyter-ann.service"}, now, killed)
    asyncio.run(g.check([GPU], SEATS, grace=60))
    procs[101] = 5 * GiB
    now[0] = 30.0
    asyncio.run(g.check([GPU], SEATS, grace=60))
    procs[101] = 25 * GiB
    now[0] = 61.0
    asyncio.run(g.check([GPU], SEATS, grace=60))
    assert killed == [] and g.report(60)["GPU-s"]["ann"]["over_since"] == 61.0


class KillerSystemd(Units):
    """What kill_in_unit asks of systemd; a started unit's command is run here."""
    def __init__(self, of: dict[int, str]):
        super().__init__(of)
        self.started: list[tuple[str, dict]] = []

    async def unit_properties(self, unit, names):
        return {"User": "ann"} if unit == "jupyter-ann.service" else None

    async def reset_failed(self, unit):
        pass

    async def start_transient(self, unit, props):
        props = {k: v.value for k, v in props}
        self.started.append((unit, props))
        (_, argv, _), = props["ExecStart"]
        subprocess.run(argv, check=True)
        return "/job/1"

    async def wait_for(self, unit, done, timeout, job=None):
        return "inactive"


def test_the_kill_runs_as_the_servers_user_and_only_on_a_process_systemd_puts_in_that_unit():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sd = KillerSystemd({child.pid: "jupyter-bob.service"})
        assert not asyncio.run(gpu_share.kill_in_unit(sd, child.pid, "jupyter-ann.service"))
        assert sd.started == [] and child.poll() is None  # another unit's: nothing started, alive
        sd.of[child.pid] = "jupyter-ann.service"
        assert asyncio.run(gpu_share.kill_in_unit(sd, child.pid, "jupyter-ann.service"))
        assert child.wait(10) == -9
        (unit, props), = sd.started
        assert unit == f"jupyterhub-appliance-gpu-share-kill-{child.pid}.service"
        assert (props["User"], props["NoNewPrivileges"], props["Type"]) == ("ann", True, "oneshot")
    finally:
        child.kill()
    assert not asyncio.run(gpu_share.kill_in_unit(KillerSystemd({}), child.pid, "jupyter-ann.service"))  # gone


def test_a_configured_seat_budget_wins_over_the_gpus_memory_divided_by_its_seats():
    now, killed = [0.0], []
    g = guard({101: 18 * GiB}, {101: "jupyter-ann.service"}, now, killed)
    asyncio.run(g.check([GPU], SEATS, grace=60, budgets={"GPU-s": 16 * GiB}))
    assert g.report(60)["GPU-s"]["ann"]["budget"] == 16 * GiB and g.report(60)["GPU-s"]["ann"]["over_since"] == 0.0
