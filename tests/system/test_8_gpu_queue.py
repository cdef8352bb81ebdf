"""Fair GPU sharing on the booted appliance with the fake NVML (its utilization is
changed while servers run): the wait queue, its places across a hub restart, cancel,
timeout and CPU fallback, and reclaiming an idle GPU for someone who waits.

The tests of this module run in order: each starts from the servers the one before
left running (four GPU holders), as a busy machine would.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from browser import login
from gpus import GPUS, PASSWORD, UUID, holders, install_fake_gpus, report, spawn, wait_until
from holds import held_start

HOLDERS = ["gq1", "gq2", "gq3", "gq4"]
WAITERS = ["gw1", "gw2", "gw3"]
OTHERS = ["gx1", "gx2", "gr1"]
BASE = "[gpu]\nquota = 1\nsample_interval = 1\nidle_timeout = 10\n"


def nvml(util: dict[int, int] | None = None) -> str:
    """Four idle 80 GiB GPUs, or with the given utilization by NVML index."""
    util = util or {}
    return "driver 550.54.14\n" + "".join(
        f"gpu index={i} minor={m} uuid={UUID.format(i)} name=NVIDIA_A100-SXM4-80GB mem_total={80 * 2**30} "
        f"util_gpu={util.get(i, 0)} pci=00000000:0{i + 1}:00.0\n" for i, m in GPUS)


def configure(app, extra: str) -> None:
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(BASE + extra))
    app.sh("applctl reload")
    app.wait_hub()


def queue(app) -> list[str]:
    return [q["user"] for q in report(app)["queue"] if not q["granted"]]


def join_queue(app, name: str, fields: dict[str, str]):
    """Submit the spawn form (it answers after JupyterHub's slow-spawn wait, in a
    thread) and return once the daemon has the spawn in its queue."""
    b = login(app, name, PASSWORD)
    threading.Thread(target=b.spawn_with_form, args=(name, fields), daemon=True).start()
    wait_until(f"{name} in the queue", lambda: name in queue(app))
    return b


def idle_past(app, names: list[str], since: float | None = None) -> None:
    """Until the daemon has seen each one's GPU idle for idle_timeout (10 s) + 4 s,
    and, if `since` is given, 4 s have passed since then too: what a fixed 14 s
    sleep waited for, without waiting longer. The reclaimer looks every
    sample_interval (1 s), so it has looked at least 4 times meanwhile."""
    def idle_seconds() -> dict[str, int | None]:
        return {g["holder"]: g["idle_seconds"] for g in report(app)["gpus"] if g["holder"] in names}

    wait_until(f"{names} idle for 14 s", lambda: (len(got := idle_seconds()) == len(names)
                                                  and all(s is not None and s >= 14 for s in got.values())
                                                  and (since is None or time.monotonic() - since >= 4)))


def running(app, name: str) -> bool:
    return app.sh(f"systemctl is-active jupyter-{name}.service", check=False).stdout.strip() == "active"


@pytest.fixture(scope="module")
def shared(appliance, tmp_path_factory):
    app = appliance
    install_fake_gpus(app, tmp_path_factory, nvml())
    app.sh("".join(f"id {n} >/dev/null 2>&1 || useradd -m {n}; echo {n}:{PASSWORD} | chpasswd; "
                   f"applctl adduser {n} >/dev/null 2>&1 || true\n" for n in HOLDERS + WAITERS + OTHERS))
    app.sh("applctl stop --all >/dev/null && systemctl daemon-reload")
    configure(app, "queue_timeout = 600\nreclaim = \"never\"\n")
    yield app
    app.sh("applctl stop --all >/dev/null", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def test_waiters_get_gpus_in_order_keep_places_across_a_hub_restart_and_may_cancel(shared):
    app = shared
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.update({n: spawn(app, n, {"gpus": "1"})}))
               for n in HOLDERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n][1] for n in HOLDERS), results
    assert sorted(h for h in holders(app).values()) == HOLDERS

    waiters = {n: join_queue(app, n, {"gpus": "1"}) for n in WAITERS}
    waiting = time.monotonic()
    assert queue(app) == WAITERS
    waiters["gw2"].progress_until("gw2", "Waiting for a GPU: you are number 2 in the queue (4 of 4 GPUs in use)")
    out = app.sh("applctl gpus").stdout
    assert "3 waiting in the queue" in out.splitlines()[0]
    assert [re.split(r"\s{2,}", line)[1] for line in out.splitlines()[-3:]] == WAITERS

    # reclaim = "never": every holder's GPU is idle past idle_timeout, people wait, nothing is stopped
    idle_past(app, HOLDERS, since=waiting)
    assert sorted(h for h in holders(app).values()) == HOLDERS

    app.sh("systemctl restart jupyterhub")
    app.wait_hub()
    for name, b in waiters.items():
        wait_until(f"{name}'s spawn pending again", lambda b=b, name=name: b.get(
            f"/hub/api/users/{name}").json()["servers"].get("", {}).get("pending") == "spawn")
    assert queue(app) == WAITERS

    r = waiters["gw2"].s.delete(f"{app.url}/hub/api/users/gw2/server", headers=waiters["gw2"].hub_xsrf())
    assert r.status_code in (202, 204), r.text
    wait_until("gw2 out of the queue", lambda: queue(app) == ["gw1", "gw3"])

    app.sh("applctl stop gq1")
    ready, messages = waiters["gw1"].spawn_outcome("gw1")
    assert ready, messages
    assert "gw1" in holders(app).values() and queue(app) == ["gw3"]
    waiters["gw3"].progress_until("gw3", "you are number 1 in the queue (4 of 4 GPUs in use)")
    app.sh("applctl stop gq2")
    ready, messages = waiters["gw3"].spawn_outcome("gw3")
    assert ready, messages
    assert sorted(h for h in holders(app).values()) == ["gq3", "gq4", "gw1", "gw3"]
    assert json.loads(app.sh("applctl gpus --json").stdout)["queue"] == []
    assert not running(app, "gw2")


def test_the_wait_ends_after_queue_timeout_with_words_or_a_cpu_only_server(shared):
    app = shared
    configure(app, "queue_timeout = 15\nreclaim = \"never\"\n")
    before = holders(app)
    assert None not in before.values(), before  # the four GPUs are still held
    b1 = join_queue(app, "gx1", {"gpus": "1"})
    # gx2's start is held until its fallback message is read: a CPU-only server can be
    # ready before a stream joined after gx1's outcome (holds.py).
    with held_start(app, "gx2") as release:
        b2 = join_queue(app, "gx2", {"gpus": "1", "cpu_fallback": "on"})
        ready, messages = b1.spawn_outcome("gx1")
        assert not ready and any("No GPU became free while you waited" in m for m in messages), messages
        b2.progress_until("gx2", "starting CPU-only, as you asked")
        release()
    ready, messages = b2.spawn_outcome("gx2")
    assert ready, messages
    assert "nvidia" not in app.unit_props("jupyter-gx2.service", "DeviceAllow")["DeviceAllow"]
    assert holders(app) == before and queue(app) == []


def test_an_idle_gpu_is_reclaimed_for_someone_who_waits_and_a_busy_one_is_not(shared):
    app = shared
    configure(app, "queue_timeout = 600\nreclaim = \"when-needed\"\n")
    held = {h: u for u, h in holders(app).items()}
    index = {UUID.format(i): i for i, _ in GPUS}
    app.ct.write("/etc/fake-nvml.conf", nvml({index[u]: 80 for h, u in held.items() if h != "gw1"}))
    idle_past(app, ["gw1"])  # gw1's GPU is idle past idle_timeout, but nobody waits: "when-needed" keeps it
    assert running(app, "gw1")

    b = join_queue(app, "gr1", {"gpus": "1"})
    ready, messages = b.spawn_outcome("gr1")
    assert ready, messages
    assert holders(app)[held["gw1"]] == "gr1"
    wait_until("gw1's server stopped", lambda: not running(app, "gw1"))
    assert all(running(app, n) for n in ("gq3", "gq4", "gw3", "gx2"))  # busy GPUs, and a CPU-only server
    journal = app.sh("journalctl -u jupyterhub --no-pager -n 300").stdout
    assert "stopped gw1's server: its GPUs were idle" in journal
    home = login(app, "gw1", PASSWORD).get("/hub/home").text
    assert "because its GPU was idle for 10 seconds while someone was waiting for a GPU." in home, home[-1500:]
