"""Property-based fuzzing of what crosses into the root daemon: the request
validator takes any JSON value and returns or refuses (RequestError), nothing else;
the socket protocol takes any bytes, in any chunks, closed at any point, and
answers one JSON line or closes, and goes on serving. A fixed budget keeps the run
bounded; under CI the examples are derandomized."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import config, protocol
from appliance.daemon import validate
from tests.ci import in_ci

from .daemon_fakes import USER, DaemonThread, patch_users, read_all

settings.register_profile("daemon-fuzz", max_examples=200, deadline=None, database=None,
                          derandomize=in_ci(),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("daemon-fuzz")
HUB_UID = 995
# Profiles that exist: "big" within the quota, "huge" beyond it.
CFG = config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 2},
                       "profiles": {"big": {"display_name": "Big", "gpus": 2},
                                    "huge": {"display_name": "Huge", "gpus": 3}}})

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)
# Close to valid, so validation gets deep: known fields, names and values of the right kinds.
field_values = {
    "op": st.sampled_from(["spawn", "stop", "status", "gpus", "list", "account", "SPAWN", ""]) | json_values,
    "user": st.sampled_from([USER, "root", "nosuchuser-xyz", "../etc", "a b", "x" * 40]) | json_values,
    "env": st.dictionaries(st.sampled_from(["A", "LD_PRELOAD", "PATH", "1X", "JUPYTERHUB_API_TOKEN"])
                           | st.text(max_size=10), st.text(max_size=20) | json_values, max_size=4) | json_values,
    # A field the protocol no longer has (raw command-line words): check_op's and the
    # connection fuzzers send it; check_spawn's leaves it out (it is refused whole).
    "args": st.lists(st.sampled_from(["--debug", "--x=1", "-x", "--a=\n"]) | json_values, max_size=4) | json_values,
    "profile": st.sampled_from(["big", "huge", "", "nosuch", "../x", "big\n"]) | json_values,
    "options": st.dictionaries(st.sampled_from(["debug", "ServerApp.terminals_enabled", "config",
                                                "MappingKernelManager.cull_idle_timeout"]) | st.text(max_size=12),
                               st.booleans() | st.integers() | json_values, max_size=3) | json_values,
    "mem_limit": st.integers() | json_values,
    "cpu_limit": st.floats(allow_nan=True) | json_values,
    "readonly_paths": st.lists(st.sampled_from(["/a", "/a/../b", "rel", "/"]) | json_values, max_size=3),
    "readwrite_paths": json_values,
    "extra": st.dictionaries(st.sampled_from(["TasksMax", "CPUWeight", "User", "MemoryHigh"]) | st.text(max_size=8),
                             st.integers() | json_values, max_size=3) | json_values,
    "gpus": st.integers(-2, 10) | json_values,
    "cpu_fallback": st.booleans() | json_values,
    # single sign-on's groups: refused ("config") by this PAM configuration unless empty
    "provider_groups": st.lists(st.sampled_from(["gpu", "", "a\nb", "x" * 300]) | json_values, max_size=3)
    | json_values,
    protocol.OLD_FALLBACK: st.booleans() | json_values,  # what a hub of the previous release sends
}
# Every field of the protocol, and only those (besides args, above), is fuzzed.
assert set(field_values) == {"op", *protocol.SPAWN_FIELDS, protocol.OLD_FALLBACK, "args"}
requests_ = st.fixed_dictionaries({}, optional={k: v for k, v in field_values.items()}) | json_values


@FUZZ
@given(req=requests_, peer=st.sampled_from([0, HUB_UID, 1000, 65534]))
def test_check_op_returns_an_allowed_op_or_refuses(req, peer):
    try:
        op = validate.check_op(req, peer, HUB_UID)
    except protocol.RequestError as e:
        if not isinstance(req, dict):
            assert e.code == "invalid", e
        else:  # the peer is judged first, then the op
            assert (e.code == "forbidden") == (peer not in (0, HUB_UID)), (peer, e)
            assert e.code == "forbidden" or e.field == "op", e
        return
    assert peer in (0, HUB_UID) and op in protocol.OPS and op == req["op"]


def test_check_spawn_returns_a_bounded_spec_or_refuses(monkeypatch, tmp_path):
    patch_users(monkeypatch, tmp_path)

    @FUZZ
    @given(req=st.fixed_dictionaries(
        {"op": st.just("spawn"), "user": st.just(USER) | field_values["user"]},
        optional={k: v for k, v in field_values.items() if k not in ("op", "user", "args")}))
    def check(req):
        try:
            spec = validate.check_spawn(req, CFG)
        except protocol.RequestError as e:
            assert e.code in ("invalid", "invalid_user", "privileged_user", "quota", "config"), e
            assert e.code in protocol.ERROR_CODES
            # A refusal names what was wrong, a field the request has, in one line
            # (it goes into the journal as one).
            assert e.field in req, (e.field, req)
            assert str(e).strip() and "\n" not in str(e) and "\r" not in str(e), str(e)
            return
        assert spec.user == USER and 0 <= spec.gpus <= 2
        if req.get("profile") is not None:  # the daemon's count for the profile, not the hub's
            assert spec.profile == req["profile"] and spec.gpus == CFG["profiles"][spec.profile]["gpus"]
        assert spec.cpu_fallback is req.get("cpu_fallback", req.get(protocol.OLD_FALLBACK, False))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec.env.items())
        assert spec.cpu_limit is None or math.isfinite(spec.cpu_limit)

    check()


# How a client behaves: what it sends, in which pieces, with which pauses, and how it ends.
raw_lines = (st.binary(max_size=300)
             | json_values.map(lambda v: json.dumps(v).encode())
             | requests_.map(lambda v: json.dumps(v).encode()))
clients = st.fixed_dictionaries({
    "data": st.tuples(raw_lines, st.sampled_from([b"\n", b"", b"\r\n", b"\n\n", b"\ntrailing"])).map(
        lambda t: t[0] + t[1]),
    "cuts": st.lists(st.integers(0, 400), max_size=4),
    "pause": st.sampled_from([0, 0, 0, 0.01]),
    "end": st.sampled_from(["shut_wr", "close", "keep"]),
})


def test_every_connection_gets_one_answer_or_is_closed(monkeypatch, tmp_path):
    patch_users(monkeypatch, tmp_path)
    # A short deadline so that clients that never finish cost little.
    with DaemonThread(tmp_path, request_deadline=0.3) as d:

        @FUZZ
        @given(client=clients)
        def check(client):
            data, cuts = client["data"], sorted({c for c in client["cuts"] if c < len(client["data"])})
            s = d.connect()
            try:
                try:
                    for a, b in zip([0] + cuts, cuts + [len(data)], strict=False):
                        s.sendall(data[a:b])
                        time.sleep(client["pause"])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the daemon answered and closed before we finished: allowed
                if client["end"] == "close":
                    return  # gone before any answer: the daemon must cope (checked below)
                if client["end"] == "shut_wr":
                    s.shutdown(socket.SHUT_WR)
                raw = read_all(s)  # ends within the deadline: s has a 60 s timeout, never reached
            finally:
                s.close()
            if raw:
                assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:200]
                reply = json.loads(raw)
                assert isinstance(reply["ok"], bool)
                if not reply["ok"]:
                    assert set(reply["error"]) == {"code", "field", "message"}
                    assert reply["error"]["code"] in protocol.ERROR_CODES and reply["error"]["code"] != "internal", reply
            # and the daemon still serves others
            with d.connect() as t:
                t.sendall(b'{"op": "gpus"}\n')
                assert json.loads(read_all(t))["ok"]

        check()
        # Nothing left hanging: every connection was finished.
        deadline = time.monotonic() + 30
        while d.daemon.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.daemon.connections == 0


@pytest.mark.parametrize("end", ["close", "shut_wr"])
def test_a_spawn_whose_client_goes_away_still_answers_the_next(monkeypatch, tmp_path, end):
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path) as d:
        for _ in range(5):
            s = d.connect()
            s.sendall(json.dumps({"op": "spawn", "user": USER, "gpus": 1}).encode() + b"\n")
            if end == "shut_wr":
                s.shutdown(socket.SHUT_WR)
            s.close()
        deadline = time.monotonic() + 30
        while d.daemon.finished < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.daemon.finished == 5 and not d.daemon.spawns.gpus.pending
        held = [g["holder"] for g in json.loads(_ask(d, {"op": "gpus"}))["gpus"]]
        units = d.systemd.units
        # Each spawn replaced the one before: one unit, one GPU.
        assert len(units) == 1 and held.count(USER) == 1 and held.count(None) == 3


def _ask(d, req):
    with d.connect() as s:
        s.sendall(json.dumps(req).encode() + b"\n")
        return read_all(s)
