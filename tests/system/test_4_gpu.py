"""GPU assignment and isolation on the booted appliance, with the fake NVML and fake
device nodes (TESTING.md): ENXIO = allowed by the device cgroup (no driver behind
the node), EPERM = denied by it. That difference is the isolation test.
"""

from __future__ import annotations

import html
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from browser import login
from gpus import GPUS, PASSWORD, UUID, device_access, fake_config, holders, install_fake_gpus, report, spawn
from holds import spawn_seeing

STORM = [f"storm{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def gpu(appliance, tmp_path_factory):
    install_fake_gpus(appliance, tmp_path_factory, fake_config())
    # No queue here: these tests are about assignment and refusals (test_8_gpu_queue has the queue).
    appliance.ct.write("/etc/jupyterhub/appliance.toml",
                       appliance.config_text("[gpu]\nquota = 2\nquota_users = { ivan = 0 }\nqueue = false\n"))
    names = ["gina", "hank", "ivan", "jack"] + STORM
    appliance.sh("".join(f"useradd -m {n} && echo {n}:{PASSWORD} | chpasswd && applctl adduser {n} >/dev/null\n"
                         for n in names))
    appliance.sh("systemctl daemon-reload && systemctl stop jupyterhub-appliance.service && "
                 "systemctl restart jupyterhub")
    appliance.wait_hub()
    return appliance


def test_inventory_through_pynvml(gpu):
    r = report(gpu)
    assert r["available"] is True and r["driver_version"] == "550.54.14"
    assert [(g["index"], g["minor"], g["uuid"]) for g in r["gpus"]] == [
        (i, m, UUID.format(i)) for i, m in GPUS]
    assert all(g["holder"] is None for g in r["gpus"])


def test_form_offers_gpus_up_to_quota_with_free_count(gpu):
    b = login(gpu, "gina", PASSWORD)
    form = b.get("/hub/spawn").text
    assert "4 of 4 GPUs free now; your quota is 2 GPUs" in form
    assert re.findall(r'<option value="(\d+)"', form) == ["0", "1", "2"]


@pytest.mark.parametrize("fields, says", [
    ({"gpus": "-1"}, "GPU count must be 0 or more"),
    ({"gpus": "two"}, "must be a whole number"),
    ({"gpus": "3"}, "You asked for 3 GPUs; your quota is 2 GPUs."),
    ({"gpus": "1", "image": "x"}, "Unexpected form field 'image'"),
])
def test_bad_form_input_is_refused_and_starts_nothing(gpu, fields, says):
    b = login(gpu, "jack", PASSWORD)
    r = b.spawn_with_form("jack", fields)
    assert r.status_code == 400 and says in html.unescape(r.text), r.text[:300]
    assert gpu.sh("systemctl is-active jupyter-jack.service", check=False).stdout.strip() != "active"


def test_api_profile_that_does_not_exist_is_refused(gpu):
    b = login(gpu, "jack", PASSWORD)
    r = b.s.post(f"{gpu.url}/hub/api/users/jack/server", json={"profile": "huge"}, headers=b.hub_xsrf(), timeout=60)
    assert r.status_code >= 400 and "There is no profile 'huge'" in r.text, r.text[:300]
    assert gpu.sh("systemctl is-active jupyter-jack.service", check=False).stdout.strip() != "active"


def test_gpu_servers_are_isolated_by_the_device_cgroup(gpu):
    b_gina, ready, messages = spawn(gpu, "gina", {"gpus": "1"})
    assert ready, messages
    b_hank, ready, _ = spawn(gpu, "hank", {"gpus": "1"})
    assert ready
    # Most free memory first: index 2 (0 GiB used, minor 3), then index 1 (10 GiB
    # used). Read from the daemon: a fast start's progress stream may hold only
    # "Server ready".
    held = holders(gpu)
    assert held[UUID.format(2)] == "gina" and held[UUID.format(1)] == "hank"
    allow = gpu.unit_props("jupyter-gina.service", "DeviceAllow")["DeviceAllow"]
    assert "/dev/nvidia3 rw" in allow and "/dev/nvidia0 " not in allow and "/dev/nvidiactl rw" in allow

    gina = device_access(b_gina, "gina")
    assert gina["dev"] == {2: "EPERM", 0: "EPERM", 3: "ENXIO", 1: "EPERM"}
    assert gina["cuda"] == UUID.format(2) and gina["order"] == "PCI_BUS_ID"
    hank = device_access(b_hank, "hank")
    assert hank["dev"] == {2: "EPERM", 0: "ENXIO", 3: "EPERM", 1: "EPERM"}

    b_ivan, ready, _ = spawn(gpu, "ivan", None)  # quota 0: no form, CPU-only
    assert ready
    ivan = device_access(b_ivan, "ivan")
    assert set(ivan["dev"].values()) == {"EPERM"} and ivan["cuda"] == ""


def test_assignments_survive_daemon_and_hub_restarts(gpu):
    before = holders(gpu)
    assert sorted(u for u in before.values() if u) == ["gina", "hank"]
    gpu.sh("systemctl restart jupyterhub-appliance.service")
    assert holders(gpu) == before
    gpu.sh("systemctl restart jupyterhub")
    gpu.wait_hub()
    assert holders(gpu) == before
    # The hub's record of gina's GPUs came back with its state.
    b = login(gpu, "gina", PASSWORD)
    b.wait_for_server("gina")


def test_kill_9_frees_the_gpu_without_the_hub(gpu):
    props = gpu.unit_props("jupyter-hank.service", "ActiveState", "MainPID", "User")
    # Never signal a pid read as 0 or empty (no server): `kill -9 0` kills the group.
    assert props["ActiveState"] == "active" and int(props["MainPID"] or 0) > 1, props
    pid = int(props["MainPID"])
    assert gpu.sh(f"ps -o user= -p {pid}").stdout.strip() == "hank"
    gpu.sh(f"kill -9 {pid}")
    deadline = time.monotonic() + 10
    while holders(gpu)[UUID.format(1)] is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert holders(gpu)[UUID.format(1)] is None


def test_lost_gpu_is_taken_out_and_reported(gpu):
    gpu.ct.write("/etc/fake-nvml.conf", fake_config(lost=3))
    try:
        r = report(gpu)
        assert UUID.format(3) not in [g["uuid"] for g in r["gpus"]]
        assert r["unusable"] and r["unusable"][0]["index"] == 3 and "lost" in r["unusable"][0]["reason"].lower()
    finally:
        gpu.ct.write("/etc/fake-nvml.conf", fake_config())


def test_spawn_storm_never_double_books(gpu):
    # Free every GPU first: stop gina's and ivan's servers through the daemon.
    for name in ("gina", "ivan"):
        gpu.daemon_request(json.dumps({"op": "stop", "user": name}))
    assert all(h is None for h in holders(gpu).values())

    def one(name: str) -> tuple[str, bool, list[str]]:
        _b, ready, messages = spawn(gpu, name, {"gpus": "1"})
        return name, ready, messages

    with ThreadPoolExecutor(len(STORM)) as pool:
        results = list(pool.map(one, STORM))
    winners = [n for n, ready, _ in results if ready]
    losers = [(n, m) for n, ready, m in results if not ready]
    assert len(winners) == 4, results
    assert all(any("All GPUs are busy" in x for x in m) for _, m in losers), losers
    held = holders(gpu)
    assert sorted(h for h in held.values() if h) == sorted(winners)
    nodes = [re.findall(r"/dev/nvidia\d+", gpu.unit_props(f"jupyter-{n}.service", "DeviceAllow")["DeviceAllow"])
             for n in winners]
    assert all(len(n) == 1 for n in nodes) and len({n[0] for n in nodes}) == 4, nodes
    for name, _ in losers:
        assert gpu.sh(f"systemctl is-active jupyter-{name}.service", check=False).stdout.strip() != "active"

    # A user who asked for the fallback gets a CPU-only server instead of an error,
    # and the spawn says so (the start is held until that is read: holds.py).
    ready, messages = spawn_seeing(gpu, login(gpu, "jack", PASSWORD), "jack", {"gpus": "1", "cpu_fallback": "on"},
                                   "starting CPU-only")
    assert ready, messages
    assert "nvidia" not in gpu.unit_props("jupyter-jack.service", "DeviceAllow")["DeviceAllow"]
