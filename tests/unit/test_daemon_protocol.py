"""The daemon against hostile and broken clients, on a real Unix socket: every
connection gets one answer or is closed, and the daemon keeps serving others. And
spawns that lose their client or time out leave no GPU leaked or double-booked."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from appliance import config, daemon_client, protocol
from appliance.daemon import spawns

from .conftest import GPUS, gpu_rules
from .daemon_fakes import USER, DaemonThread, FakeManager, FakeUnit, patch_users, read_all

GPUS_OK = {"op": "gpus"}


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path) as d:
        yield d


def reply_of(s: socket.socket) -> dict:
    raw = read_all(s)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:200]
    return json.loads(raw)


def test_a_normal_request_is_answered(daemon):
    r = daemon.request(GPUS_OK)
    assert r["ok"] and [g["uuid"] for g in r["gpus"]] == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]


@pytest.mark.parametrize("raw, code", [
    (b"not json\n", "invalid"),
    (b"\xff\xfe\x00garbage\n", "invalid"),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "invalid"),  # json.loads: RecursionError
    (b'{"op": "spawn", "user": "daemon", "env": ' + b"[" * 500 + b"]" * 500 + b"}\n", "invalid"),
    (b'{"op": "gpus"}', "invalid"),  # no newline, then EOF
    (b'"just a string"\n', "invalid"),
    (b'{"op": "format-disk"}\n', "invalid"),
])
def test_malformed_requests_get_an_error_and_the_daemon_goes_on(daemon, raw, code):
    with daemon.connect() as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        r = reply_of(s)
    assert r["ok"] is False and r["error"]["code"] == code, r
    assert daemon.request(GPUS_OK)["ok"]


def test_an_oversized_request_is_refused_as_soon_as_it_passes_the_limit(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    # A deadline far beyond the test: the answer can only come from the size limit.
    with DaemonThread(tmp_path, request_deadline=3600) as d, d.connect() as s:
        try:
            s.sendall(b"x" * (protocol.MAX_REQUEST + 4096))  # no newline, connection kept open
        except BrokenPipeError:
            pass  # the daemon answered and closed while we were still sending
        r = reply_of(s)
        assert r["error"]["code"] == "too_large" and str(protocol.MAX_REQUEST) in r["error"]["message"]
        assert d.request(GPUS_OK)["ok"]


def test_a_request_of_exactly_the_limit_is_read(daemon):
    body = json.dumps(GPUS_OK).encode()
    raw = body[:-1] + b" " * (protocol.MAX_REQUEST - len(body)) + b"}\n"
    assert len(raw) == protocol.MAX_REQUEST + 1
    assert daemon.request(raw)["ok"]


def test_the_deadline_is_for_the_whole_request_not_each_read(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path, request_deadline=0.5) as d, d.connect() as s:
        line = json.dumps(GPUS_OK).encode() + b"\n"
        sent = 0
        try:
            for byte in line:  # each byte well within the deadline, the whole far beyond it
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
                if sent == 3:  # meanwhile others are served
                    assert d.request(GPUS_OK)["ok"]
        except BrokenPipeError:
            pass
        r = reply_of(s)
        assert r["error"]["code"] == "timeout", r
        assert sent < len(line)


def test_extra_connections_are_told_busy_at_once_not_queued(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    cap, total = 8, 200
    with DaemonThread(tmp_path, max_connections=cap, request_deadline=3600) as d:
        held = [d.connect() for _ in range(total)]  # none sends anything yet
        # The held ones would wait an hour: every busy answer must come before that.
        busy, rest = [], []
        for s in held:
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except socket.timeout:
                rest.append(s)
                continue
            s.settimeout(60)
            data += read_all(s)
            busy.append(json.loads(data))
            s.close()
        assert len(busy) == total - cap and len(rest) == cap
        assert all(r["ok"] is False and r["error"]["code"] == "busy" for r in busy)
        assert d.daemon.refused_busy == total - cap
        for s in rest:  # the served ones are still served
            s.settimeout(60)
            s.sendall(json.dumps(GPUS_OK).encode() + b"\n")
            assert reply_of(s)["ok"]
            s.close()
        assert d.request(GPUS_OK)["ok"]
        assert d.run(_connections(d.daemon)) == 0


def test_an_answer_reaches_a_client_that_sent_more_than_the_daemon_read(tmp_path, monkeypatch):
    """Closing a Unix socket with unread input resets it, and the peer loses what
    was sent to it: the busy answer (sent before reading) and an answer to a line
    followed by more data must still arrive."""
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path, max_connections=0) as d:
        s = d.connect()
        s.sendall(json.dumps(GPUS_OK).encode() + b"\n")
        time.sleep(0.3)  # the daemon has answered busy and is closing meanwhile
        assert json.loads(read_all(s))["error"]["code"] == "busy"
        s.close()
    with DaemonThread(tmp_path) as d:
        s = d.connect()
        s.sendall(json.dumps(GPUS_OK).encode() + b"\n")
        time.sleep(0.05)  # the line is read; the daemon may be answering already
        s.sendall(b"trailing bytes after the request line\n")
        assert json.loads(read_all(s))["ok"]
        s.close()


async def _connections(daemon):
    return daemon.connections


def test_the_client_retries_busy(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path, max_connections=1, request_deadline=3600) as d:
        hog = d.connect()  # takes the only slot
        out = {}
        t = threading.Thread(target=lambda: out.update(
            r=daemon_client.call_sync(GPUS_OK, d.path, timeout=60, busy_retry=120)))
        t.start()
        deadline = time.monotonic() + 60
        while d.daemon.refused_busy < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.daemon.refused_busy >= 2  # it was refused, and asked again
        hog.close()
        t.join(60)
        assert out["r"]["ok"]
        with pytest.raises(daemon_client.DaemonError) as e:
            hog = d.connect()
            daemon_client.call_sync(GPUS_OK, d.path, timeout=60, busy_retry=0)
        assert e.value.code == "busy"
        hog.close()


def test_an_unexpected_exception_is_an_internal_error_with_a_traceback(daemon, caplog):
    async def boom(*_):
        raise KeyError("our bug")
    daemon.daemon.spawns.gpus.report = boom
    with caplog.at_level(logging.ERROR, logger="jupyterhub-appliance"):
        r = daemon.request(GPUS_OK)
    assert r["error"]["code"] == "internal" and "our bug" not in r["error"]["message"]
    assert any(rec.exc_info and "our bug" in str(rec.exc_info[1]) for rec in caplog.records)
    del daemon.daemon.spawns.gpus.report
    assert daemon.request(GPUS_OK)["ok"]


def spawn_request(gpus=1):
    return {"op": "spawn", "user": USER, "gpus": gpus}


def test_a_spawn_starts_a_unit_with_its_gpu(daemon):
    r = daemon.request(spawn_request())
    assert r["ok"] and r["gpus"] == ["GPU-0"], r  # the most free memory
    unit = f"jupyter-{USER}.service"
    assert daemon.systemd.units[unit].state == "active"


def test_a_servers_status_says_which_python_it_runs(daemon):
    from appliance.groups import PYTHON
    assert daemon.request(spawn_request())["ok"]
    assert daemon.request({"op": "status", "user": USER})["python"] == PYTHON  # the hub compares (spawner.py)


def test_a_unit_that_stays_loaded_once_stopped_is_let_go_by_a_reload(tmp_path, monkeypatch):
    # After systemd's own upgrade from Debian 12 to 13, a server unit started before it
    # stays loaded once stopped; the next start of that name would be refused.
    patch_users(monkeypatch, tmp_path)
    monkeypatch.setattr(spawns, "UNLOAD_TIMEOUT", 0.2)
    sd = FakeManager()
    with DaemonThread(tmp_path, sd) as d:
        assert d.request(spawn_request())["ok"]
        sd.stuck.add(f"jupyter-{USER}.service")
        r = d.request(spawn_request())  # the hub's restart: the old unit is stopped first
        assert r["ok"] and r["state"] == "active", r
        assert sd.reloads == 1
        assert d.request(spawn_request())["ok"] and sd.reloads == 1  # only when needed


def holders(d: DaemonThread) -> dict:
    return {g["uuid"]: g["holder"] for g in d.request(GPUS_OK)["gpus"]}


def test_a_client_that_disconnects_mid_spawn_leaves_it_completed_and_recorded(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager(start_delay=0.5)
    with DaemonThread(tmp_path, sd) as d:
        with d.connect() as s:
            s.sendall(json.dumps(spawn_request()).encode() + b"\n")
        unit = f"jupyter-{USER}.service"
        deadline = time.monotonic() + 30
        while (unit not in sd.units or sd.units[unit].state != "active" or d.daemon.spawns.gpus.pending) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sd.units[unit].state == "active" and not d.daemon.spawns.gpus.pending
        held = holders(d)
        assert [u for u, h in held.items() if h == USER] == [
            g for g in held if f"/dev/nvidia{_minor(g)}" in sd.gpus_of(unit)]
        assert sum(h is not None for h in held.values()) == 1


def _minor(uuid):
    from .daemon_fakes import GPUS
    return next(g.minor for g in GPUS if g.uuid == uuid)


def test_a_start_that_times_out_is_stopped_before_its_gpu_is_released(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    monkeypatch.setattr(spawns, "START_TIMEOUT", 0.3)
    sd = FakeManager(start_mode="queue")  # the start job never leaves systemd's queue
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_request())
        assert r["error"]["code"] == "start_failed", r
        # Stopped, so no queued start can take the GPU later, and the GPU is free.
        assert f"jupyter-{USER}.service" not in sd.units
        assert not d.daemon.spawns.gpus.pending
        assert all(h is None for h in holders(d).values())


def test_a_unit_with_a_queued_start_job_holds_its_gpus(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager()
    from dbus_fast import Variant

    sd.units["jupyter-bob.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", gpu_rules(2))},
                                               state="inactive", job=7)
    sd.units["jupyter-old.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", gpu_rules(0))},
                                               state="inactive", job=0)  # stopped, not yet collected
    with DaemonThread(tmp_path, sd) as d:
        assert holders(d) == {"GPU-0": "bob", "GPU-1": None, "GPU-2": None, "GPU-3": None}
        r = d.request(spawn_request(gpus=4))
        assert r.get("queued") and (r["in_use"], r["total"]) == (1, 4), r  # waits: bob's GPU is taken


def test_a_failed_start_frees_its_gpu(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager(start_mode="fail")
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_request())
        assert r["error"]["code"] == "start_failed"
        assert not d.daemon.spawns.gpus.pending and all(h is None for h in holders(d).values())
        sd.start_mode = "start"
        assert d.request(spawn_request())["ok"]


@pytest.mark.parametrize("lookup", ["is_member", "groups_of"])
def test_a_slow_name_service_does_not_stall_other_requests(tmp_path, monkeypatch, lookup):
    """pwd/grp lookups (LDAP, sssd...) run in threads: others are served meanwhile."""
    from appliance import users
    patch_users(monkeypatch, tmp_path)
    entered, release = threading.Event(), threading.Event()
    timed_out = []
    real = getattr(users, lookup)

    def slow(*args):
        entered.set()
        if not release.wait(30):  # never reached unless the loop itself is blocked
            timed_out.append(lookup)
        return real(*args)

    monkeypatch.setattr(users, lookup, slow)
    with DaemonThread(tmp_path) as d:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=d.request(spawn_request())))
        t.start()
        assert entered.wait(30)
        assert d.request(GPUS_OK)["ok"]  # answered while the lookup is still blocked
        assert not timed_out and not release.is_set()
        release.set()
        t.join(60)
        assert out["r"]["ok"], out


def test_with_every_gpu_busy_a_spawn_waits_in_the_queue_and_stop_cancels_it(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager()
    from dbus_fast import Variant

    for i, name in enumerate(("h0", "h1", "h2", "h3")):
        sd.units[f"jupyter-{name}.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", gpu_rules(i))}, state="active")
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_request())
        assert r["ok"] and r["state"] == "queued" and (r["position"], r["in_use"], r["total"]) == (1, 4, 4), r
        assert f"jupyter-{USER}.service" not in sd.units  # nothing started while it waits
        report = d.request(GPUS_OK)
        assert [q["user"] for q in report["queue"]] == [USER]
        assert d.request({"op": "stop", "user": USER})["left_queue"] is True
        assert d.request(GPUS_OK)["queue"] == []
        del sd.units["jupyter-h1.service"]
        r = d.request(spawn_request())
        assert r["ok"] and r["state"] == "active" and len(r["gpus"]) == 1, r
        d.daemon.spawns.cfg = config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 4, "queue": False}})
        assert d.request({"op": "stop", "user": USER})["left_queue"] is False
        sd.units["jupyter-h1.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", gpu_rules(1))}, state="active")
        assert d.request(spawn_request())["error"]["code"] == "capacity"  # queue off: refused as before


def test_limits_come_from_the_daemons_own_configuration_and_the_hub_can_only_tighten(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    from appliance import users
    monkeypatch.setattr(users, "groups_of", lambda name: ["ml"])
    with DaemonThread(tmp_path) as d:
        d.daemon.spawns.cfg = config.validate({
            "daemon": {"min_uid": 1}, "gpu": {"quota": 4},
            "limits": {"mem_limit": "8G", "cpu_limit": 2, "tasks_max": 256, "mem_limit_groups": {"ml": "16G"}},
            "profiles": {"big": {"display_name": "Big", "mem_limit": "32G"}}})
        unit = f"jupyter-{USER}.service"

        def props():
            p = d.systemd.units[unit].props
            return p["MemoryMax"].value, p["CPUQuotaPerSecUSec"].value, p["TasksMax"].value

        assert d.request({**spawn_request(gpus=0), "mem_limit": None})["ok"]
        assert props() == (16 * 2**30, 2_000_000, 256)  # the group's, not the hub's word
        assert d.request({**spawn_request(gpus=0), "mem_limit": 1 * 2**30, "cpu_limit": 1.5})["ok"]
        assert props() == (1 * 2**30, 1_500_000, 256)  # tighter: taken
        assert d.request({**spawn_request(gpus=0), "mem_limit": 17 * 2**30})["ok"]
        assert props()[0] == 16 * 2**30  # looser: not
        assert d.request({**spawn_request(gpus=0), "profile": "big"})["ok"]
        assert props()[0] == 32 * 2**30
        r = d.request({**spawn_request(gpus=0), "profile": "huge"})
        assert r["error"]["code"] == "invalid" and "accepted: big" in r["error"]["message"]


def test_list_and_gpus_take_no_other_field(daemon):
    for op in ("list", "gpus"):
        r = daemon.request({"op": op, "user": "alice"})
        assert r["ok"] is False and r["error"]["field"] == "user", r
        assert f"unknown field 'user' for {op}; accepted: op" in r["error"]["message"]


def spawn_on_port(port: int) -> dict:
    return {**spawn_request(0), "env": {"JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/{USER}/"}}


def listens_on(sd: FakeManager) -> dict[str, str]:
    return {n: u.props["Listen"].value[0][1] for n, u in sd.units.items() if n.endswith(".socket")}


def test_a_servers_port_is_held_by_its_socket_unit_which_stops_with_it(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager()
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_on_port(43210))
        assert r["ok"] and r["port"] == 43210, r
        unit, sock = f"jupyter-{USER}.service", f"jupyter-{USER}.socket"
        assert listens_on(sd) == {sock: "127.0.0.1:43210"} and sd.units[sock].state == "active"
        assert sd.units[sock].props["BindsTo"].value == [unit]
        assert sd.units[unit].props["Requires"].value == [sock] and "SocketBindAllow" not in sd.units[unit].props
        assert d.request({"op": "stop", "user": USER})["ok"]
        time.sleep(0.1)
        assert unit not in sd.units and sock not in sd.units


def test_a_port_taken_before_systemd_binds_it_gets_the_server_another_and_the_hub_told(tmp_path, monkeypatch):
    """A local account that binds the hub's chosen port first makes only that socket
    fail: the server starts on a port the daemon chose, and the reply says which, so
    the hub routes to the port systemd holds and nowhere else."""
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager(taken_ports={43210})
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_on_port(43210))
        assert r["ok"] and r["port"] != 43210, r
        assert listens_on(sd) == {f"jupyter-{USER}.socket": f"127.0.0.1:{r['port']}"}
        env = (tmp_path / "env").glob("*.env")
        assert not list(env)  # deleted once started, as before


def test_a_server_whose_ports_are_all_taken_does_not_start_and_says_so(tmp_path, monkeypatch):
    patch_users(monkeypatch, tmp_path)
    sd = FakeManager()
    sd.taken_ports = type("Every", (), {"__contains__": lambda self, port: True})()
    with DaemonThread(tmp_path, sd) as d:
        r = d.request(spawn_on_port(43210))
        assert not r["ok"] and r["error"]["code"] == "start_failed" and "were taken" in r["error"]["message"], r
        assert not sd.units  # nothing left behind: no unit, no failed socket


def test_a_mig_profile_gets_a_mig_device_of_its_kind_confined_to_its_own_instance(tmp_path, monkeypatch):
    from dataclasses import replace

    from dbus_fast import Variant

    from appliance.daemon.gpus import GpuManager
    from appliance.gpu.devices import device_allow
    from appliance.gpu.inventory import Inventory
    patch_users(monkeypatch, tmp_path)
    # GPU minor 4 in MIG mode: two 1g.10gb devices and a 3g.40gb; a whole GPU beside it.
    parent = replace(GPUS[0], minor=4, uuid="GPU-p", mig_enabled=True, utilization=None, memory_free=10)
    small = [replace(parent, uuid=f"MIG-{i}", parent="GPU-p", profile="1g.10gb", caps=(39 + 9 * i, 40 + 9 * i))
             for i in range(2)]
    big = replace(parent, uuid="MIG-big", parent="GPU-p", profile="3g.40gb", caps=(66, 67), memory_free=40)
    inv = Inventory(True, "550", (*small, big, GPUS[1]))
    sd = FakeManager()
    sd.units["jupyter-h0.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", device_allow([small[0]]))},
                                              state="active")
    with DaemonThread(tmp_path, sd) as d:
        d.daemon.spawns.gpus = GpuManager(sd, inventory=lambda: inv)
        d.daemon.spawns.cfg = config.validate({
            "daemon": {"min_uid": 1}, "gpu": {"quota": 4},
            "profiles": {"slice": {"display_name": "A slice", "gpus": 1, "mig": "1g.10gb"}}})
        holders = {g["uuid"]: g["holder"] for g in d.request(GPUS_OK)["gpus"]}
        assert holders == {"MIG-0": "h0", "MIG-1": None, "MIG-big": None, GPUS[1].uuid: None}
        r = d.request({"op": "spawn", "user": USER, "profile": "slice"})
        # Not h0's, not the bigger one with more free memory; CUDA_VISIBLE_DEVICES is this UUID.
        assert r["ok"] and r["gpus"] == ["MIG-1"], r
        props = sd.units[f"jupyter-{USER}.service"].props
        assert [p for p, _ in props["DeviceAllow"].value] == [
            "/dev/nvidia4", "/dev/nvidia-caps/nvidia-cap48", "/dev/nvidia-caps/nvidia-cap49",
            "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
        assert d.request({"op": "stop", "user": USER})["ok"]
        sd.units["jupyter-h1.service"] = FakeUnit({"DeviceAllow": Variant("a(ss)", device_allow([small[1]]))},
                                                  state="active")
        r = d.request({"op": "spawn", "user": USER, "profile": "slice"})  # the 3g.40gb is free, but not its kind
        assert r["ok"] and r["state"] == "queued" and (r["in_use"], r["total"]) == (2, 2), r
        assert d.request({"op": "stop", "user": USER})["left_queue"] is True
        r = d.request(spawn_request())  # no profile: any free device, the most free memory first
        assert r["ok"] and r["gpus"] == [GPUS[1].uuid], r
