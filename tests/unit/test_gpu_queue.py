"""The GPU wait queue in the daemon: first come first served per number of GPUs,
places kept across re-asks and daemon restarts, cancel, timeout, fallback."""

import asyncio
import json

import pytest

from appliance.daemon.gpu_queue import GRACE, GpuQueue
from appliance.daemon.gpus import GpuManager, Queued, QueueTimeout
from appliance.gpu.allocator import CapacityError
from appliance.gpu.devices import device_allow
from appliance.gpu.inventory import GPU, Inventory

from .conftest import GPUS, FakeManager


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def manager(sd, clock, path=None, gpus=GPUS):
    return GpuManager(sd, inventory=lambda: Inventory(True, "550", gpus), queue_path=path, clock=clock)


def ask(m, sd, name, count=1, fallback=False, timeout=1800):
    """One ask of a spawn, as the daemon makes it; a grant starts the unit at once."""
    unit = f"jupyter-{name}.service"
    got = asyncio.run(m.request(name, unit, count, fallback, timeout))
    if isinstance(got, Queued):
        return got
    inv, uuids = got
    if uuids:
        sd.add(unit, device_allow([inv.by_uuid(u) for u in uuids]))
    m.started(unit)
    return uuids


def fill(m, sd):
    for i in range(4):
        assert len(ask(m, sd, f"h{i}")) == 1


def test_waiters_get_gpus_in_arrival_order_as_holders_stop():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    fill(m, sd)
    places = {}
    for name in ("anna", "ben", "cleo"):
        clock.now += 1
        places[name] = ask(m, sd, name)
    assert [places[n].position for n in ("anna", "ben", "cleo")] == [1, 2, 3]
    assert (places["ben"].in_use, places["ben"].total, places["ben"].waiting) == (4, 4, 2)
    del sd.units["jupyter-h2.service"]  # a holder stops
    # cleo asks first, but the GPU is anna's: the head of the queue
    assert isinstance(ask(m, sd, "cleo"), Queued)
    assert len(ask(m, sd, "anna")) == 1
    assert ask(m, sd, "ben").position == 1 and ask(m, sd, "cleo").position == 2
    del sd.units["jupyter-h0.service"]
    assert isinstance(ask(m, sd, "cleo"), Queued) and len(ask(m, sd, "ben")) == 1


def test_per_number_of_gpus_a_later_single_gpu_request_is_not_held_up_by_a_double():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    fill(m, sd)
    assert ask(m, sd, "big", count=2).position == 1
    assert ask(m, sd, "small", count=1).position == 2
    del sd.units["jupyter-h1.service"]
    assert isinstance(ask(m, sd, "big", count=2), Queued)
    assert len(ask(m, sd, "small")) == 1  # one GPU free: it can serve small, not big


def test_cancel_leaves_the_queue_and_asking_for_another_count_is_a_new_place():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    fill(m, sd)
    ask(m, sd, "anna")
    ask(m, sd, "ben")
    assert m.leave_queue("anna") and not m.leave_queue("anna")
    assert ask(m, sd, "ben").position == 1
    ask(m, sd, "anna")
    assert ask(m, sd, "anna").position == 2
    assert ask(m, sd, "ben", count=2).position == 2  # changed its request: to the back


def test_timeout_ends_the_wait_with_words_or_a_cpu_only_server():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    fill(m, sd)
    ask(m, sd, "anna")
    ask(m, sd, "ben", fallback=True)
    clock.now += 61
    with pytest.raises(QueueTimeout, match="No GPU became free while you waited 1 minutes"):
        ask(m, sd, "anna", timeout=60)
    assert ask(m, sd, "ben", fallback=True, timeout=60) == ()
    assert m.queue.entries == []


def test_more_gpus_than_the_machine_has_never_waits():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    with pytest.raises(CapacityError, match="only 4 GPUs"):
        ask(m, sd, "anna", count=5)
    m0 = manager(sd, clock, gpus=())
    with pytest.raises(CapacityError, match="no usable GPU"):
        ask(m0, sd, "anna")
    assert m.queue.entries == [] and m0.queue.entries == []


def test_an_entry_nobody_asks_about_is_dropped_with_its_grant():
    sd, clock = FakeManager(), Clock()
    m = manager(sd, clock)
    fill(m, sd)
    ask(m, sd, "anna")
    del sd.units["jupyter-h3.service"]
    ask(m, sd, "ben")  # the grant pass gives anna the GPU; anna's hub is gone
    assert m.queue.find("anna").granted
    report = asyncio.run(m.report())
    assert [g["holder"] for g in report["gpus"]].count("anna") == 1
    clock.now += GRACE + 1
    assert len(ask(m, sd, "ben")) == 1  # anna's place and GPU went to the next


def test_the_queue_survives_a_daemon_restart(tmp_path):
    sd, clock = FakeManager(), Clock()
    path = tmp_path / "gpu-queue.json"
    m = manager(sd, clock, path)
    fill(m, sd)
    for name in ("anna", "ben", "cleo"):
        clock.now += 1
        ask(m, sd, name)
    assert [e["user"] for e in json.loads(path.read_text())] == ["anna", "ben", "cleo"]
    again = manager(sd, clock, path)
    assert ask(again, sd, "cleo").position == 3 and ask(again, sd, "anna").position == 1
    path.write_text("not json")
    assert GpuQueue(path).entries == []


def test_a_queue_saved_by_the_previous_release_is_kept(tmp_path):
    """Its entries name the flag "fallback"; the upgrade restarts the daemon mid-wait."""
    path = tmp_path / "gpu-queue.json"
    path.write_text(json.dumps([{"user": "anna", "unit": "jupyter-anna.service", "count": 1, "fallback": True,
                                 "since": 1.0, "seen": 2.0, "granted": []}]))
    assert [(e.user, e.cpu_fallback) for e in GpuQueue(path).entries] == [("anna", True)]


def test_report_lists_the_queue_and_the_idle_servers_to_reclaim():
    sd, clock = FakeManager(), Clock()
    util = {"GPU-0": 0, "GPU-1": 90, "GPU-2": 0, "GPU-3": 3}

    def inventory():
        return Inventory(True, "550", tuple(GPU(**{**g.to_dict(), "utilization": util[g.uuid]}) for g in GPUS))

    m = GpuManager(sd, inventory=inventory, clock=clock)
    fill(m, sd)
    gpu = {"reclaim": "when-needed", "idle_timeout": 60}
    asyncio.run(m.sample(5))
    clock.now += 61
    asyncio.run(m.sample(5))
    report = asyncio.run(m.report(gpu))
    idle = {g["holder"]: g["idle_seconds"] for g in report["gpus"]}
    holder_of = {g["uuid"]: g["holder"] for g in report["gpus"]}
    assert idle[holder_of["GPU-1"]] is None and idle[holder_of["GPU-0"]] == 61
    assert report["reclaim"] == [] and report["queue"] == []  # nobody waits
    ask(m, sd, "anna")
    report = asyncio.run(m.report(gpu))
    assert report["queue"][0]["user"] == "anna" and len(report["reclaim"]) == 1
    assert report["reclaim"][0] in {holder_of[u] for u in ("GPU-0", "GPU-2", "GPU-3")}
    assert len(asyncio.run(m.report(gpu | {"reclaim": "always"}))["reclaim"]) == 3
    assert asyncio.run(m.report(gpu | {"reclaim": "never"}))["reclaim"] == []
    util["GPU-0"] = util["GPU-2"] = util["GPU-3"] = 50  # busy again: idleness starts over
    asyncio.run(m.sample(5))
    assert asyncio.run(m.report(gpu | {"reclaim": "always"}))["reclaim"] == []
