"""Why a server stopped, for the person who did not ask: from who asked, or from
how the unit ended; and the journal entry that carries it as a field."""

import socket

import pytest

from appliance import journal
from appliance.hub import stop_reasons as sr
from appliance.hub.handlers import ServerAPIHandler, substitute

CULLER = {"timeout": 3600, "max_age": 7 * 86400}
GPU = {"reclaim": "when-needed", "idle_timeout": 1800}


def ask(kind, name, admin=False, owner="alice", age=60.0, culler=CULLER, gpu=GPU):
    return sr.by_request(kind, name, admin, owner, 1000.0, age, culler, gpu)


def test_who_asked_decides_the_reason():
    assert ask("user", "alice") is None  # she asked herself
    assert ask("service", "idle-culler").reason == "idle"
    assert ask("service", "idle-culler").text == "it was idle for 60 minutes"
    old = ask("service", "idle-culler", age=8 * 86400.0)
    assert (old.reason, old.text) == ("max-age", "it reached the maximum age of 168 hours")
    assert ask("service", "idle-culler", age=8 * 86400.0, culler={"timeout": 60, "max_age": 0}).reason == "idle"
    gpu = ask("service", "gpu-reclaimer")
    assert (gpu.reason, gpu.text) == ("gpu-idle", "its GPU was idle for 30 minutes while someone was waiting for a GPU")
    assert ask("service", "gpu-reclaimer", gpu={"reclaim": "always", "idle_timeout": 1800}).text == \
        "its GPU was idle for 30 minutes"
    assert (ask("service", "applctl").reason, ask("service", "applctl").text) == ("admin", "an administrator stopped it")
    assert ask("service", "cron-stopper").text == "an administrator's service (cron-stopper) stopped it"
    assert ask("user", "root-admin", admin=True).text == "an administrator stopped it"


@pytest.mark.parametrize("status, reason, text", [
    ({"state": "failed", "result": "oom-kill", "memory_max": 2 * 1024**3}, "oom",
     "it ran out of memory (limit 2 GiB)"),
    ({"state": "failed", "result": "oom-kill", "memory_max": 2**64 - 1}, "oom", "it ran out of memory"),
    ({"state": "failed", "result": "exit-code", "exit_kind": "exited", "exit_code": 3}, "crashed",
     "it crashed (exit code 3)"),
    ({"state": "failed", "result": "signal", "exit_kind": "killed", "exit_code": 9}, "crashed",
     "it crashed (signal 9)"),
])
def test_how_the_unit_ended_decides_the_reason(status, reason, text):
    why = sr.by_unit(status, 1000.0)
    assert (why.reason, why.text) == (reason, text)


def test_a_clean_exit_or_a_vanished_unit_has_no_reason():
    assert sr.by_unit({"state": "inactive"}, 1.0) is None
    assert sr.by_unit({"state": "failed", "result": "success"}, 1.0) is None


def test_the_reason_survives_the_hub_database_and_reads_as_a_sentence():
    why = ask("service", "idle-culler")
    assert sr.StopReason.from_dict(why.to_dict()) == why
    assert sr.StopReason.from_dict({"reason": "bogus", "text": "x", "time": 1}) is None
    assert sr.StopReason.from_dict("junk") is None
    assert why.message().startswith("Your server was stopped at ") and why.message().endswith(
        "because it was idle for 60 minutes.")


def test_journal_entry_carries_fields(tmp_path, monkeypatch):
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setattr(journal, "SOCKET", path)
    assert journal.send("stopped alice's server", APPLIANCE_STOP_REASON="idle", APPLIANCE_USER="alice")
    fields = dict(line.split("=", 1) for line in sock.recv(65536).decode().splitlines())
    assert fields["MESSAGE"] == "stopped alice's server" and fields["APPLIANCE_STOP_REASON"] == "idle"
    sock.close()
    monkeypatch.setattr(journal, "SOCKET", str(tmp_path / "none"))
    assert journal.send("no journal here") is False
    with pytest.raises(ValueError):
        journal.send("x", bad_key="1")


def test_the_stop_handler_replaces_jupyterhubs_own():
    from jupyterhub.apihandlers.users import UserServerAPIHandler
    from jupyterhub.handlers.metrics import MetricsHandler

    from appliance.hub.metrics import MetricsOff
    handlers = [("/hub/api/users/([^/]+)/server", UserServerAPIHandler), ("/hub/x", object, {"a": 1}),
                ("/hub/metrics$", MetricsHandler)]
    assert substitute(handlers, "loopback") == [("/hub/api/users/([^/]+)/server", ServerAPIHandler),
                                                ("/hub/x", object, {"a": 1}), ("/hub/metrics$", MetricsOff)]
    # JupyterHub's own metrics handler (it wants a read:metrics token) only with access = "token".
    assert substitute(handlers, "token")[2] == ("/hub/metrics$", MetricsHandler)
    assert substitute(handlers, "off")[2] == ("/hub/metrics$", MetricsOff)


def test_a_server_left_on_the_old_python_is_restarted_and_says_so():
    why = sr.python_upgrade("3.11", "3.13", 1000.0)
    assert why.reason == "python-upgrade" and why.restarted
    assert why.message().startswith("Your server was restarted at ")
    assert why.message().endswith("because the system was upgraded from Python 3.11 to 3.13; your files are "
                                  "kept, but what your kernels held in memory was lost.")
    assert sr.StopReason.from_dict(why.to_dict()) == why  # kept in the hub's database
    assert not ask("service", "idle-culler").restarted
    assert sr.StopReason.from_dict({"reason": "idle", "text": "x", "time": 1}).restarted is False  # kept before
    failed = sr.python_upgrade("3.11", "3.13", 1000.0, restarted=False)  # the new start failed
    assert failed.message().startswith("Your server was stopped at ") and failed.message().endswith(
        "was lost, and it could not be started again: start it from this page.")


def test_a_servers_unit_names_its_python():
    from appliance.daemon import units
    from appliance.groups import PYTHON, USER_ENV

    assert units.INTERPRETER == f"{USER_ENV}/bin/python{PYTHON}"
    assert units.python_of([(units.INTERPRETER, [units.INTERPRETER, units.SINGLEUSER], False, 0, 0, 0, 0, 0, 0, 0)]) \
        == PYTHON
    assert units.python_of([(f"{USER_ENV}/bin/python3.11", [], False)]) == "3.11"
    # Started by 0.2.0 or older, or by another command: not known, so left alone.
    for exec_start in ([(units.SINGLEUSER, [], False)], [(f"{USER_ENV}/bin/python3", [], False)],
                       [(f"{USER_ENV}/bin/python3.x", [], False)], [], None, "x"):
        assert units.python_of(exec_start) is None, exec_start
