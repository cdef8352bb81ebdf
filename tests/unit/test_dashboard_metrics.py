"""The GPU dashboard's API (query checks, history) and the Prometheus collector,
without a hub: the daemon's report is given as data."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appliance.hub import dashboard, metrics
from appliance.hub.gpu_report import LastGpuReport, my_gpus
from appliance.protocol import GpuReport

GiB = 2**30
REPORT = {
    "available": True, "driver_version": "550.54.14", "reason": None, "unusable": [],
    "gpus": [
        {"index": 0, "minor": 2, "uuid": "GPU-0000", "name": "NVIDIA A100-SXM4-80GB", "memory_total": 80 * GiB,
         "memory_used": 40 * GiB, "memory_free": 40 * GiB, "pci_bus_id": "00000000:01:00.0", "utilization": 37,
         "mig_enabled": False, "temperature": 61, "power_watts": 245.5, "holder": "alice", "starting": False,
         "held_since": 1000.0, "idle_seconds": None},
        {"index": 1, "minor": 0, "uuid": "GPU-0001", "name": "NVIDIA A100-SXM4-80GB", "memory_total": 80 * GiB,
         "memory_used": 0, "memory_free": 80 * GiB, "pci_bus_id": "00000000:02:00.0", "utilization": None,
         "mig_enabled": True, "temperature": None, "power_watts": None, "holder": None, "starting": False,
         "held_since": None, "idle_seconds": None},
        {"index": 1, "minor": 0, "uuid": "MIG-0002", "name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
         "memory_total": 10 * GiB, "memory_used": 0, "memory_free": 10 * GiB, "pci_bus_id": "00000000:02:00.0",
         "utilization": None, "mig_enabled": True, "temperature": None, "power_watts": None, "holder": None,
         "starting": False, "held_since": None, "idle_seconds": None, "parent": "GPU-0001",
         "profile": "1g.10gb", "caps": [39, 40]},
    ],
    "queue": [{"user": "bob", "gpus": 1, "since": 900.0, "granted": False},
              {"user": "carol", "gpus": 1, "since": 950.0, "granted": True}],
    "reclaim": [],
}


@pytest.mark.parametrize("args, says", [
    ({"history": [b"abc"]}, "history='abc' is not accepted: a whole number of minutes from 0 to 60"),
    ({"history": [b"61"]}, "from 0 to 60"),
    ({"history": [b"-1"]}, "from 0 to 60"),
    ({"history": [b"1", b"2"]}, "history given 2 times; give it once"),
    ({"gpu": [b"../etc"]}, "gpu='../etc' is not accepted: a GPU's UUID"),
    ({"user": [b"alice"]}, "unknown parameter 'user'; accepted: history (minutes"),
])
def test_bad_query_parameters_say_what_is_accepted(args, says):
    with pytest.raises(dashboard.BadQuery) as e:
        dashboard.parse_query(args)
    assert says in str(e.value)


def test_status_filters_by_gpu_and_cuts_the_history():
    history = dashboard.History(interval=10)
    for t, util in ((100.0, 5), (3000.0, 50), (3600.0, 80)):
        history.add(GpuReport.read({"gpus": [dict(REPORT["gpus"][0], utilization=util)]}), t)
    q = dashboard.parse_query({"history": [b"15"], "gpu": [b"GPU-0000"]})
    out = dashboard.status(GpuReport.read(REPORT), [{"user": "alice", "state": "active", "gpus": ["GPU-0000"], "memory": None,
                                     "since": 1000.0, "unit": "jupyter-alice.service"}], history, q, now=3600.0)
    assert [g["uuid"] for g in out["gpus"]] == ["GPU-0000"]
    assert out["gpus"][0]["history"] == [(3000.0, 50), (3600.0, 80)]  # the last 15 minutes only
    assert out["gpus"][0]["holder"] == "alice" and out["gpus"][0]["temperature"] == 61
    assert out["servers"] == [{"user": "alice", "state": "active", "gpus": ["GPU-0000"], "memory": None,
                               "since": 1000.0}]
    with pytest.raises(dashboard.BadQuery, match="no GPU on this machine has that UUID"):
        dashboard.status(GpuReport.read(REPORT), [], history, dashboard.parse_query({"gpu": [b"GPU-9999"]}), now=3600.0)


def test_history_keeps_one_hour():
    history = dashboard.History(interval=10)
    for i in range(1000):
        history.add(GpuReport.read({"gpus": [{"uuid": "GPU-0000", "utilization": i % 100}]}), float(i * 10))
    assert len(history.samples["GPU-0000"]) == 361


def scrape(report: LastGpuReport) -> dict:
    registry = CollectorRegistry()
    registry.register(metrics.GpuCollector(report, hostname="lab1", clock=lambda: 1005.0))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_gpu_metrics_use_dcgm_names_and_labels_and_leave_out_what_is_not_reported():
    report = LastGpuReport()
    report.update(REPORT, now=1000.0)
    samples = scrape(report)
    alice = tuple(sorted({"gpu": "0", "UUID": "GPU-0000", "device": "nvidia2", "modelName": "NVIDIA A100-SXM4-80GB",
                          "pci_bus_id": "00000000:01:00.0", "Hostname": "lab1", "GPU_I_PROFILE": "",
                          "user": "alice"}.items()))
    assert samples[("DCGM_FI_DEV_GPU_UTIL", alice)] == 37
    assert samples[("DCGM_FI_DEV_FB_USED", alice)] == 40 * 1024
    assert samples[("DCGM_FI_DEV_FB_FREE", alice)] == 40 * 1024
    assert samples[("DCGM_FI_DEV_GPU_TEMP", alice)] == 61
    assert samples[("DCGM_FI_DEV_POWER_USAGE", alice)] == 245.5
    assert samples[("appliance_gpu_held", alice)] == 1
    assert samples[("appliance_gpu_queue_length", ())] == 1  # carol was granted: not waiting
    assert samples[("appliance_gpu_report_up", ())] == 1 and samples[("appliance_gpu_report_age_seconds", ())] == 5
    free = [k for k in samples if k[0] == "DCGM_FI_DEV_GPU_UTIL" and ("UUID", "GPU-0001") in k[1]]
    assert free == []  # MIG: no utilization reading, so no sample rather than a made-up 0
    held = [v for k, v in samples.items() if k[0] == "appliance_gpu_held" and ("UUID", "GPU-0001") in k[1]]
    assert held == [0]
    mig = [dict(k[1]) for k in samples if k[0] == "DCGM_FI_DEV_FB_TOTAL" and ("UUID", "MIG-0002") in k[1]]
    assert [(m["gpu"], m["device"], m["GPU_I_PROFILE"], m["user"]) for m in mig] == [("1", "nvidia0", "1g.10gb", "")]


def test_without_a_report_only_up_is_said():
    assert scrape(LastGpuReport()) == {("appliance_gpu_report_up", ()): 0}


def test_the_home_page_shows_a_user_only_their_own_gpus(monkeypatch):
    report = LastGpuReport()
    report.update(REPORT, now=1000.0)
    monkeypatch.setattr("appliance.hub.gpu_report.REPORT", report)

    class U:
        kind = "user"

        def __init__(self, name):
            self.name = name
    mine = my_gpus(U("alice"))
    assert [(g["uuid"], g["utilization"], g["memory_used_gib"]) for g in mine] == [("GPU-0000", 37, 40.0)]
    assert my_gpus(U("bob")) == [] and my_gpus(None) == []
    assert mine[0]["share"] is None  # a GPU of her own: no share to keep


def test_a_seat_holder_sees_their_share_the_deadline_and_what_was_killed_and_metrics_count_kills(monkeypatch):
    shared = {"index": 2, "minor": 1, "uuid": "GPU-0002", "name": "NVIDIA H100", "memory_total": 80 * GiB,
              "memory_used": 50 * GiB, "memory_free": 30 * GiB, "pci_bus_id": "00000000:03:00.0", "utilization": 90,
              "holder": "ann", "holders": ["ann", "bob"], "seats": 4, "starting": False, "shares": {
                  "ann": {"used": 22 * GiB, "budget": 20 * GiB, "over_since": 1000.0, "kill_at": 1060.0,
                          "kills": [{"pid": 4242, "bytes": 12 * GiB, "time": 900.0}]},
                  "bob": {"used": 5 * GiB, "budget": 20 * GiB, "over_since": None, "kill_at": None, "kills": []}}}
    report = LastGpuReport()
    report.update({**REPORT, "gpus": [shared], "share_kills": 1}, now=1000.0)
    monkeypatch.setattr("appliance.hub.gpu_report.REPORT", report)
    monkeypatch.setattr("appliance.hub.gpu_report._clock", lambda t: f"t{t:.0f}")

    class U:
        kind = "user"

        def __init__(self, name):
            self.name = name
    (ann,) = my_gpus(U("ann"))
    assert ann["share"] == {"used_gib": 22.0, "budget_gib": 20.0, "kill_at": "t1060",
                            "kills": [{"pid": 4242, "gib": 12.0, "at": "t900"}]}
    assert my_gpus(U("bob"))[0]["share"]["kill_at"] is None
    assert scrape(report)[("appliance_gpu_share_kills_total", ())] == 1
