"""Shared GPUs on the booted appliance with the fake NVML: seats, the queue for a
seat, the memory budget of a seat (warned, then the largest GPU process killed),
and a GPU made shared by `applctl reload` under a running server.

The tests run in order, each from what the one before left running.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from browser import login
from gpus import PASSWORD, UUID, api_status, fake_config, holders, install_fake_gpus, report, spawn, wait_until

SHARED = 2  # NVML index of the GPU made shared: the one with the most free memory, so the first whole grant
PEOPLE = ["sh0", "sh1", "sh2", "sh3", "sh4"]
BASE = ("[gpu]\nquota = 1\nsample_interval = 1\n"
        "[profiles.whole]\ndisplay_name = \"A whole GPU\"\ngpus = 1\n"
        "[profiles.quarter]\ndisplay_name = \"A quarter GPU\"\ngpus = 1\ngpu_share = \"1/4\"\n")
SHARING = f"[gpu]\nshared = {{ \"{SHARED}\" = 4 }}\nshare_grace = 10\n"


def configure(app, shared: bool) -> None:
    text = BASE.replace("[gpu]\n", SHARING, 1) if shared else BASE
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(text))
    app.sh("applctl reload >/dev/null")
    app.wait_hub()


def gpu(app, index: int) -> dict:
    return next(g for g in report(app)["gpus"] if g["uuid"] == UUID.format(index))


@pytest.fixture(scope="module")
def shared(appliance, tmp_path_factory):
    app = appliance
    app.sh("applctl stop --all >/dev/null")
    install_fake_gpus(app, tmp_path_factory, fake_config())
    app.sh("".join(f"id {n} >/dev/null 2>&1 || useradd -m {n}; echo {n}:{PASSWORD} | chpasswd; "
                   f"applctl adduser {n} >/dev/null\n" for n in PEOPLE))
    app.sh("systemctl daemon-reload")
    configure(app, shared=False)
    yield app
    app.sh("applctl stop --all >/dev/null", check=False)
    app.ct.write("/etc/fake-nvml.conf", fake_config())
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)
    app.wait_hub()


def test_a_gpu_made_shared_by_reload_keeps_its_running_server_and_takes_three_more(shared):
    app = shared
    _, ready, messages = spawn(app, "sh0", {"profile": "whole"})
    assert ready, messages
    assert holders(app)[UUID.format(SHARED)] == "sh0"
    configure(app, shared=True)
    assert app.sh("systemctl is-active jupyter-sh0.service").stdout.strip() == "active"
    g = gpu(app, SHARED)
    assert (g["holders"], g["seats"]) == (["sh0"], 4)
    form = login(app, "sh1", PASSWORD).get("/hub/spawn").text
    assert "a quarter of one NVIDIA A100-SXM4-80GB: 20 GB, shared compute" in form
    for name in ("sh1", "sh2", "sh3"):
        _, ready, messages = spawn(app, name, {"profile": "quarter"})
        assert ready, (name, messages)
    assert gpu(app, SHARED)["holders"] == ["sh0", "sh1", "sh2", "sh3"]
    out = app.sh("applctl gpus").stdout
    assert "sh0, sh1, sh2, sh3 (4/4 seats)" in out, out
    app.sh("applctl admin add sh4 >/dev/null")
    shown = next(g for g in api_status(login(app, "sh4", PASSWORD)).json()["gpus"] if g["uuid"] == UUID.format(SHARED))
    assert (shown["holders"], shown["seats"]) == (["sh0", "sh1", "sh2", "sh3"], 4)
    app.sh("applctl admin remove sh4 >/dev/null")


def test_a_fifth_person_waits_for_a_seat_while_whole_gpus_are_free(shared):
    app = shared
    b = login(app, "sh4", PASSWORD)
    threading.Thread(target=b.spawn_with_form, args=("sh4", {"profile": "quarter"}), daemon=True).start()
    wait_until("sh4 in the queue", lambda: "sh4" in [q["user"] for q in report(app)["queue"]])
    assert sum(1 for g in report(app)["gpus"] if not g["holders"]) == 3  # the other three GPUs stay free
    app.sh("applctl stop sh3 >/dev/null")
    b.wait_for_server("sh4")
    assert gpu(app, SHARED)["holders"] == ["sh0", "sh1", "sh2", "sh4"]


def test_a_seat_over_its_memory_share_is_warned_then_its_largest_process_is_killed(shared):
    app = shared
    b = login(app, "sh1", PASSWORD)
    b.wait_for_server("sh1")
    big, small = b.start_kernel("sh1"), b.start_kernel("sh1")
    pids = {k: int(b.execute("sh1", k, "import os; print(os.getpid())")) for k in (big, small)}
    # NVML now says: sh1's two kernels use 18 + 7 GiB of the shared GPU (budget 80 / 4 = 20), sh2 none.
    app.ct.write("/etc/fake-nvml.conf", fake_config(procs={SHARED: {pids[big]: 18 * 2**30,
                                                                    pids[small]: 7 * 2**30}}))
    share = wait_until("sh1 over its share", lambda: gpu(app, SHARED)["shares"].get("sh1", {}).get("kill_at"))
    home = wait_until("the warning on sh1's home page", lambda: "Over your share" in (t := b.get("/hub/home").text)
                      and t)
    assert re.search(r"your share is 20\.0 GiB of its\s+memory; your server uses 25\.0 GiB", home), home
    log = app.sh("journalctl -u jupyter-sh1.service --no-pager -o cat").stdout
    assert "sh1's server uses 25.0 GiB of GPU" in log and "stopped in 10 s" in log
    wait_until("the largest process killed", lambda: app.sh(f"kill -0 {pids[big]}", check=False).returncode != 0,
               timeout=share - time.time() + 30)
    assert app.sh(f"kill -0 {pids[small]}", check=False).returncode == 0  # the other kernel lives on
    assert app.sh("systemctl is-active jupyter-sh1.service").stdout.strip() == "active"  # and the server
    app.ct.write("/etc/fake-nvml.conf", fake_config(procs={SHARED: {pids[small]: 7 * 2**30}}))
    home = wait_until("the kill on sh1's home page", lambda: "was" in (t := b.get("/hub/home").text)
                      and "over its GPU memory share" in t and t)
    assert re.search(rf"your process {pids[big]} \(18\.0 GiB\) was\s+stopped: over its GPU memory share", home), home
    assert "stopped process" in app.sh("journalctl -u jupyter-sh1.service --no-pager -o cat").stdout
    metrics = requests.get(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=30).text
    assert "appliance_gpu_share_kills_total 1.0" in metrics
