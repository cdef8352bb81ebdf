"""The real daemon against hostile clients in the booted container, while alice's
spawn goes through the hub as usual: a flood of 1000 connections, malformed,
deeply nested, oversized, unfinished and byte-a-second requests, clients that
hang up at once. Every connection gets an answer or is closed; alice's server comes
up; the daemon is never restarted and leaks no GPU. And a spawn whose client hangs
up at once is completed and recorded, or rolled back, never half done.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from booted import HUB_PY, USERS
from browser import Browser  # noqa: E402
from gpus import GPUS, UUID, fake_config, holders, install_fake_gpus  # noqa: E402

DAEMON = "jupyterhub-appliance.service"
SCRIPT = "/usr/local/share/hostile-clients.py"

# Runs in the container as uid jupyterhub, the only uid besides root the socket lets in.
HOSTILE = r'''
import json, resource, selectors, socket, sys, threading, time

PATH = "/run/jupyterhub-appliance/daemon.sock"
LIMIT = 256 * 1024
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
results, lock = {}, threading.Lock()


def classify(data):
    """answer:CODE (or answer:ok), closed (no answer), garbled (not one JSON line)."""
    if not data:
        return "closed"
    try:
        assert data.endswith(b"\n") and data.count(b"\n") == 1
        r = json.loads(data)
        return "answer:" + ("ok" if r["ok"] else r["error"]["code"])
    except Exception:
        return "garbled"


def record(kind, what):
    with lock:
        results.setdefault(kind, []).append(what)


def outcome(s):
    s.settimeout(60)  # only for something that never happened: the daemon's deadline is 10 s
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except socket.timeout:
        return "hung"
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return classify(data)


def one(kind, payload, end="shut_wr", pause=0.0):
    s = socket.socket(socket.AF_UNIX)
    s.connect(PATH)
    try:
        if pause:
            for i in range(len(payload)):
                s.sendall(payload[i:i + 1])
                time.sleep(pause)
        else:
            s.sendall(payload)
        if end == "close":
            s.close()
            record(kind, "client-closed")
            return
        if end == "shut_wr":
            s.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered and closed before we finished sending
    record(kind, outcome(s))


KINDS = {
    "malformed": lambda: one("malformed", b"{not json\n"),
    "deep": lambda: one("deep", b"[" * 100000 + b"]" * 100000 + b"\n"),
    "oversize": lambda: one("oversize", b"x" * (LIMIT + 100000), end="keep"),
    "no-newline": lambda: one("no-newline", b'{"op": "gpus"}'),
    "slow": lambda: one("slow", b'{"op": "gpus"}\n', end="keep", pause=1.0),
    "hang-up": lambda: one("hang-up", b'{"op": "gpus"', end="close"),
    "silent": lambda: one("silent", b"", end="keep"),
}


def flood(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(PATH)
        socks.append(s)
    print("flooding", flush=True)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [b""])
    deadline = time.monotonic() + 60
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            try:
                b = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                b = b""
            if b:
                key.data[0] += b
                continue
            sel.unregister(key.fileobj)
            key.fileobj.close()
            record("flood", classify(key.data[0]))
    for key in list(sel.get_map().values()):
        record("flood", "hung")
        key.fileobj.close()


def run_all(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# Round 1, while the hub spawns alice's server: everything at once.
print("ready", flush=True)
sys.stdin.readline()  # the test says go
f = threading.Thread(target=flood, args=(1000,))
f.start()
run_all([threading.Thread(target=k) for k in KINDS.values() for _ in range(5)])
f.join()
round1, results = results, {}
# Round 2, the daemon no longer flooded: each kind gets its own answer.
run_all([threading.Thread(target=k) for k in KINDS.values()])
print(json.dumps({"during": round1, "after": results}), flush=True)
'''


def minor_uuid() -> dict[int, str]:
    return {minor: UUID.format(index) for index, minor in GPUS}


def unit_gpus(app, unit: str) -> list[str]:
    """The GPUs a unit's device cgroup lets in, as UUIDs: the record of what it holds."""
    allow = app.unit_props(unit, "DeviceAllow")["DeviceAllow"]
    return sorted(minor_uuid()[int(m)] for m in re.findall(r"/dev/nvidia(\d+) ", allow + " "))


def daemon_identity(app) -> dict[str, str]:
    return app.unit_props(DAEMON, "ActiveState", "MainPID", "NRestarts")


@pytest.fixture(scope="module")
def hostile(appliance, tmp_path_factory):
    """The fake GPUs as test_4 sets them up (again, harmlessly, if it ran), alice and
    bob allowed, and no server running, so the GPU books start empty."""
    app = appliance
    install_fake_gpus(app, tmp_path_factory, fake_config())
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text("[gpu]\nquota = 2\n"))
    for name in ("alice", "bob"):
        app.sh(f"applctl adduser {name}", check=False)  # fails harmlessly if test_1 did it
    app.sh("applctl stop --all", check=False)
    app.sh(f"systemctl daemon-reload && systemctl stop {DAEMON} && systemctl restart jupyterhub")
    app.wait_hub()
    app.ct.write(SCRIPT, HOSTILE)
    assert all(h is None for h in holders(app).values()), holders(app)
    yield app
    app.sh("applctl stop --all", check=False)


def test_hostile_clients_do_not_stop_alice_or_the_daemon(hostile):
    app = hostile
    before = daemon_identity(app)  # the daemon runs: report() above started it
    assert before["ActiveState"] == "active"

    argv = ["nsenter", "-t", str(app.ct.pid), "-a", "--", "runuser", "-u", "jupyterhub", "--", HUB_PY, SCRIPT]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        b = Browser(app.url)
        assert b.login("alice", USERS["alice"]).status_code == 200
        form = b.get("/hub/spawn")  # before the flood: the form asks the daemon for the free GPUs
        assert 'id="spawn_form"' in form.text, form.text[:300]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "flooding", proc.stderr.read()
        r = b.spawn_with_form("alice", {"gpus": "1"})
        assert r.status_code == 302, (r.status_code, r.text[:500])
        ready, messages = b.spawn_outcome("alice", timeout=240)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    results = json.loads(out.strip().splitlines()[-1])
    figures = {when: {kind: {o: got.count(o) for o in sorted(set(got))} for kind, got in r.items()}
               for when, r in results.items()}
    print("hostile clients:", json.dumps(figures, indent=1))

    # Alice's server came up and answers, whatever the flood did to the hub's requests.
    assert ready, messages
    b.wait_for_server("alice")
    assert b.api_status("alice").status_code == 200

    # Every hostile connection got an answer or was closed: none hung, none garbled.
    everything = [o for r in results.values() for got in r.values() for o in got]
    assert not [o for o in everything if o in ("hung", "garbled")], figures
    flood = results["during"]["flood"]
    assert len(flood) == 1000 and flood.count("answer:busy") > 0, figures["during"]["flood"]
    assert set(flood) <= {"answer:busy", "answer:timeout"}, figures["during"]["flood"]
    # Unflooded, each kind gets its own answer.
    after = {kind: got[0] for kind, got in results["after"].items()}
    assert after == {"malformed": "answer:invalid", "deep": "answer:invalid", "oversize": "answer:too_large",
                     "no-newline": "answer:invalid", "slow": "answer:timeout", "hang-up": "client-closed",
                     "silent": "answer:timeout"}, after

    # The daemon still answers, was never restarted, and its books match the units.
    assert daemon_identity(app) == before
    assert app.sh(f"systemctl is-active {DAEMON}", check=False).stdout.strip() == "active"
    held = holders(app)
    running = json.loads(app.daemon_request('{"op": "list"}').stdout)["servers"]
    assert [s["user"] for s in running] == ["alice"], running
    alice = unit_gpus(app, "jupyter-alice.service")
    assert len(alice) == 1 and {u: h for u, h in held.items() if h} == {alice[0]: "alice"}, (held, alice)


def test_a_spawn_whose_client_hangs_up_at_once_is_completed_or_rolled_back(hostile):
    app = hostile
    app.sh("applctl stop --all", check=False)
    unit = "jupyter-bob.service"
    code = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/jupyterhub-appliance/daemon.sock'); "
            "s.sendall(b'{\\\"op\\\": \\\"spawn\\\", \\\"user\\\": \\\"bob\\\", \\\"gpus\\\": 1}\\n'); s.close()")
    app.sh(f'{HUB_PY} -c "{code}"')
    # Until the daemon is done with it one way or the other: the unit running with
    # its GPU recorded, or no unit and no GPU booked for bob.
    deadline = time.monotonic() + 120
    while True:
        held = holders(app)  # first the books, then the unit: a unit seen after is one they saw
        state = app.unit_props(unit, "ActiveState", "LoadState")
        bobs = sorted(u for u, h in held.items() if h == "bob")
        if state["ActiveState"] == "active" and bobs and bobs == unit_gpus(app, unit):
            outcome = "completed"
            break
        if state["LoadState"] == "not-found" and not bobs:
            outcome = "rolled back (or already exited)"
            break
        assert time.monotonic() < deadline, (state, held)
        time.sleep(0.5)
    print(f"spawn whose client hung up: {outcome}")
    assert sum(h is not None for h in held.values()) <= 1, held
    app.daemon_request('{"op": "stop", "user": "bob"}')
    assert "bob" not in holders(app).values()
    assert app.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active"
