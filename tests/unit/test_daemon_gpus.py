"""The daemon's GPU manager against a stand-in systemd: assignment derived from the
DeviceAllow= of running units, serialized, never double-booked."""

import asyncio

import pytest

from appliance.daemon.gpus import GpuManager
from appliance.gpu.allocator import CapacityError
from appliance.gpu.devices import device_allow, held
from appliance.gpu.inventory import Inventory

from .conftest import GPUS, gpu_rules


def manager(systemd):
    return GpuManager(systemd, inventory=lambda: Inventory(True, "550", GPUS))


def test_device_rules_use_minor_numbers_and_control_devices():
    rules = gpu_rules(3)
    assert rules[0] == ("/dev/nvidia3", "rw") and ("/dev/nvidiactl", "rw") in rules
    assert held(rules, GPUS) == ["GPU-2"] and device_allow([]) == []
    assert held(rules + [("/dev/nvidia9", "rw")], GPUS) == ["GPU-2", "minor:9"]  # a GPU gone from NVML


def test_holdings_come_from_running_units(systemd):
    sd = systemd  # the fake of conftest.py
    sd.add("jupyter-alice.service", gpu_rules(3))
    sd.add("jupyter-bob.service", [])
    m = manager(sd)
    report = asyncio.run(m.report())
    assert {g["uuid"]: g["holder"] for g in report["gpus"]} == {
        "GPU-0": None, "GPU-1": None, "GPU-2": "alice", "GPU-3": None}


def test_concurrent_spawns_get_distinct_gpus_and_capacity_errors(systemd):
    sd = systemd  # the fake of conftest.py
    m = manager(sd)

    async def spawn(name):
        unit = f"jupyter-{name}.service"
        try:
            inv, uuids = await m.assign(unit, 1, cpu_fallback=False)
        except CapacityError as e:
            return str(e)
        sd.add(unit, device_allow([inv.by_uuid(u) for u in uuids]))
        m.started(unit)
        return uuids

    async def storm():
        return await asyncio.gather(*(spawn(f"u{i}") for i in range(20)))

    results = asyncio.run(storm())
    got = [r for r in results if isinstance(r, tuple)]
    assert sorted(u for r in got for u in r) == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]
    assert sum("All GPUs are busy" in r for r in results if isinstance(r, str)) == 16


def test_a_stopped_unit_frees_its_gpu_and_fallback_gives_cpu_only(systemd):
    sd = systemd  # the fake of conftest.py
    m = manager(sd)
    for i in range(4):
        sd.add(f"jupyter-u{i}.service", device_allow([GPUS[i]]))
    with pytest.raises(CapacityError):
        asyncio.run(m.assign("jupyter-x.service", 1, cpu_fallback=False))
    assert asyncio.run(m.assign("jupyter-x.service", 1, cpu_fallback=True))[1] == ()
    del sd.units["jupyter-u2.service"]  # killed: systemd forgot it
    assert asyncio.run(m.assign("jupyter-x.service", 1, cpu_fallback=False))[1] == ("GPU-2",)


def test_four_servers_share_a_gpu_with_four_seats_and_a_fifth_waits(systemd, tmp_path):
    from appliance.daemon.gpus import Queued
    sd = systemd
    one = (GPUS[0],)
    m = GpuManager(sd, inventory=lambda: Inventory(True, "550", one), queue_path=tmp_path / "q.json")
    shared = {str(GPUS[0].index): 4}

    def ask(name):
        unit = f"jupyter-{name}.service"
        got = asyncio.run(m.request(name, unit, 1, False, 1800, shared=shared))
        if isinstance(got, Queued):
            return got
        sd.add(unit, device_allow([GPUS[0]]))
        m.started(unit)
        return got[1]

    assert [ask(f"s{i}") for i in range(4)] == [(GPUS[0].uuid,)] * 4
    waiting = ask("s4")
    assert isinstance(waiting, Queued) and (waiting.position, waiting.in_use, waiting.total) == (1, 4, 4)
    assert waiting.what == "GPUs and seats"  # for "(4 of 4 GPUs and seats in use)"
    report = asyncio.run(m.report({"shared": shared, "reclaim": "never", "idle_timeout": 60}))
    g = report["gpus"][0]
    assert (g["holders"], g["seats"], g["holder"]) == (["s0", "s1", "s2", "s3"], 4, "s0")
    del sd.units["jupyter-s2.service"]  # one leaves: the one who waits gets the seat
    assert ask("s4") == (GPUS[0].uuid,)
