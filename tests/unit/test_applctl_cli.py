"""applctl as an administrator meets it: help, errors, the root check, output.

The command line runs for real (appliance.applctl.main); only what it talks to is
replaced: the daemon's socket, the hub's API, systemd, the account databases.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest

from appliance import config
from appliance import daemon_client as client
from appliance.applctl import cli, main
from appliance.cli import access, daemon_calls, host, servers
from appliance.cli import status as status_mod
from appliance.cli.hub_api import Hub, HubDown
from appliance.protocol import GpuReport
from appliance.tools import tool

from .cli_run import run

GPU_A, GPU_B = "GPU-aaaa", "GPU-bbbb"


@pytest.fixture
def cfgfile(tmp_path, monkeypatch):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nport = 8000  # public\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    return path


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def as_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


@pytest.fixture
def fake_daemon(monkeypatch):
    """A daemon with alice's server holding GPU B."""

    def call_sync(request, path=None, timeout=None):
        if request["op"] == "list":
            return {"ok": True, "servers": [{"unit": "jupyter-alice.service", "user": "alice", "state": "active",
                                             "gpus": [GPU_B]}]}
        if request["op"] == "gpus":
            return {"ok": True, "available": True, "reason": None, "driver_version": "550.54.14", "unusable": [],
                    "gpus": [{"index": 0, "minor": 1, "uuid": GPU_A, "name": "NVIDIA A100", "memory_total": 80 << 30,
                              "memory_used": 1 << 30, "utilization": 5, "holder": None},
                             {"index": 1, "minor": 0, "uuid": GPU_B, "name": "NVIDIA A100", "memory_total": 80 << 30,
                              "memory_used": 0, "utilization": None, "holder": "alice", "idle_seconds": 1900}],
                    "queue": [{"user": "bob", "gpus": 2, "since": time.time() - 300, "granted": False}]}
        raise AssertionError(request)

    monkeypatch.setattr(client, "call_sync", call_sync)


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


REPORTING = {"adduser", "deluser", "users", "admin add", "admin remove", "stop", "servers", "status", "gpus",
             "config show", "config get", "config set", "config unset", "config validate", "reload", "token",
             "kernels list", "kernels add", "kernels remove", "apps list", "apps check", "link", "doctor",
             "proxy setup", "proxy remove", "proxy status", "proxy password set", "proxy password off",
             "ephemeral password set", "ephemeral password off", "sso setup", "cluster inventory", "cluster init",
             "cluster check"}


def test_every_command_has_help_with_an_example(capsys):
    seen = set()
    for path, _command in all_commands():
        code, out, err = run(capsys, *path, "--help")
        assert code == 0 and err == ""
        assert out.startswith(f"Usage: applctl {' '.join(path)}")
        assert "Example:\n    " in out, " ".join(path)
        seen.add(" ".join(path))
    assert REPORTING | {"logs", "config edit", "admin", "config", "kernels", "apps", "proxy", "proxy password",
                        "ephemeral", "ephemeral password", "sso", "cluster"} == seen


def test_every_reporting_command_has_json_and_only_those(capsys):
    for path, command in all_commands():
        if isinstance(command, click.Group):
            continue
        has_json = any("--json" in p.opts for p in command.params)
        assert has_json == (" ".join(path) in REPORTING), " ".join(path)


@pytest.mark.parametrize("args, says", [
    (["nosuch"], "applctl: no such command 'nosuch'."),
    (["adduser"], "applctl adduser: missing argument 'NAME'."),
    (["config", "set", "hub.port"], "applctl config set: missing argument 'VALUE'."),
    (["stop"], "applctl stop: give one user NAME or --all"),
    (["stop", "alice", "--all"], "applctl stop: give one user NAME or --all"),
    (["token"], "applctl token: give a user NAME, --service or --rotate-service"),
    (["logs", "--unit", "web"], "applctl logs: invalid value for '--unit'"),
    (["adduser", "--gpus", "-1", "alice"], "applctl adduser: invalid value for '--gpus'"),
    (["reload", "--timeout", "soon"], "applctl reload: invalid value for '--timeout'"),
])
def test_usage_errors_are_two_lines_and_exit_2(capsys, args, says):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(says)
    assert re.fullmatch(r"see: applctl[a-z ]* --help", lines[1])


@pytest.mark.parametrize("name, says", [
    ("root", "root can never have a server"),
    ("../x", "'../x' is not a valid user name"),
    ("a b", "'a b' is not a valid user name"),
    ("x" * 300, "is not a valid user name: a user name is 1 to 32 characters"),
    ("Alice", "'Alice' is not a valid user name"),
])
@pytest.mark.parametrize("command", [["adduser"], ["deluser"], ["admin", "add"], ["admin", "remove"], ["stop"],
                                     ["token"], ["logs", "--user"]])
def test_bad_names_are_refused_in_one_line_before_anything_else(capsys, as_user, command, name, says):
    code, out, err = run(capsys, *command, name)
    assert code == 1 and out == ""
    assert err.startswith("applctl: ") and says in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("args", [
    ["adduser", "alice"], ["deluser", "alice"], ["users"], ["admin", "add", "alice"], ["stop", "alice"],
    ["stop", "--all"], ["servers"], ["gpus"], ["config", "set", "hub.port", "80"], ["config", "unset", "hub.port"],
    ["config", "edit"], ["reload"], ["token", "alice"], ["kernels", "add", "--name", "x", "--python", "/usr/bin/python3"],
    ["kernels", "remove", "x"], ["logs"], ["doctor"],
])
def test_commands_that_need_root_say_so_and_how(capsys, as_user, cfgfile, args):
    code, out, err = run(capsys, *args)
    assert code == 1
    assert re.fullmatch(r"applctl: [a-z ]+ needs root: run it as root, or as a member of jupyterhub-admins "
                        r"with: sudo applctl [a-z ]+ \.\.\.\n", err)
    assert cfgfile.read_text() == "[hub]\nport = 8000  # public\n"


def test_config_get_set_unset_show_as_an_administrator_would(capsys, as_root, cfgfile):
    assert run(capsys, "config", "get", "hub.port") == (0, "8000\n", "")
    code, out, err = run(capsys, "config", "set", "spawner.mem_limit", "8G")
    assert (code, out) == (0, 'spawner.mem_limit = "8G" (was "" by default); apply it with: sudo applctl reload\n')
    assert run(capsys, "config", "get", "spawner.mem_limit")[1] == "8G\n"
    assert run(capsys, "config", "set", "spawner.mem_limit", "8G")[1] == 'spawner.mem_limit is already "8G"; nothing changed\n'
    code, out, err = run(capsys, "config", "set", "hub.port", "99999")
    assert code == 1 and err == (f"applctl: {cfgfile}: hub.port = 99999 is not accepted: an integer from 1 to 65535; "
                                 "the file is unchanged\n")
    code, out, _ = run(capsys, "config", "show")
    assert out == '[hub]\nport = 8000  # public\n\n[spawner]\nmem_limit = "8G"\n'
    code, out, _ = run(capsys, "config", "show", "--effective", "--json")
    assert json.loads(out)["spawner"]["mem_limit"] == "8G" and json.loads(out)["hub"]["hub_port"] == 8081
    assert run(capsys, "config", "unset", "spawner.mem_limit")[1] == (
        'spawner.mem_limit removed: back to its default ""; apply it with: sudo applctl reload\n')
    assert run(capsys, "config", "unset", "spawner.mem_limit")[1] == (
        f"spawner.mem_limit is not set in {cfgfile}; nothing changed\n")
    code, out, err = run(capsys, "config", "get", "hub.prot")
    assert code == 1 and "hub.prot is not a configuration key: known keys in [hub] are port," in err


def test_config_validate_names_file_key_and_accepted_values(capsys, tmp_path, cfgfile):
    bad = tmp_path / "typo.toml"
    bad.write_text("[hub]\nprot = 8000\n")
    code, out, err = run(capsys, "config", "validate", str(bad))
    assert code == 1 and err == (f"applctl: {bad}: hub.prot = 8000 is not accepted: known keys in [hub] are "
                                 "port, bind_address, hub_port, proxy_api_port, dashboard_port, metrics_port, log_level, mode\n")
    code, out, _ = run(capsys, "config", "validate", "--json", str(bad))
    assert code == 1 and json.loads(out)["key"] == "hub.prot"
    assert run(capsys, "config", "validate") == (0, f"{cfgfile}: valid\n", "")


def test_users_table_is_aligned_without_colour_off_a_terminal(capsys, as_root, cfgfile, fake_daemon, monkeypatch):
    monkeypatch.setattr(access, "members", lambda group: {"jupyterhub-users": {"alice", "bob"},
                                                         "jupyterhub-admins": {"bob"}}[group])
    seen = (datetime.now(timezone.utc) - timedelta(hours=2, minutes=30)).isoformat().replace("+00:00", "Z")
    monkeypatch.setattr(Hub, "users", lambda self: {"alice": {"last_activity": seen}})
    code, out, err = run(capsys, "users")
    assert code == 0 and "\x1b[" not in out
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["USER", "ADMIN", "SERVER", "GPUS", "LIMITS", "LAST ACTIVITY"]
    assert re.split(r"\s{2,}", lines[1])[:5] == ["alice", "no", "active", "#1", "-"]
    assert re.split(r"\s{2,}", lines[2]) == ["bob", "yes", "stopped", "-", "-", "never"]
    assert lines[1].index("active") == lines[0].index("SERVER") == lines[2].index("stopped")
    assert re.search(r"  2h (29|30)m ago$", lines[1])
    code, out, _ = run(capsys, "users", "--json")
    none = {"mem": None, "cpu": None, "tasks": None}
    assert json.loads(out) == [
        {"user": "alice", "admin": False, "server": "active", "gpus": [GPU_B], "limits": none, "last_activity": seen},
        {"user": "bob", "admin": True, "server": "stopped", "gpus": [], "limits": none, "last_activity": None}]


def test_users_without_the_hub_still_lists_and_says_why(capsys, as_root, cfgfile, fake_daemon, monkeypatch):
    monkeypatch.setattr(access, "members", lambda group: {"alice"} if group == "jupyterhub-users" else set())

    def down(self):
        raise HubDown("the hub does not answer on 127.0.0.1:8081 (Connection refused)")
    monkeypatch.setattr(Hub, "users", down)
    code, out, err = run(capsys, "users")
    assert code == 0 and "alice" in out
    assert err == "last activity unknown: the hub does not answer on 127.0.0.1:8081 (Connection refused)\n"


def test_servers_shows_uptime_memory_and_gpu_indices(capsys, as_root, cfgfile, fake_daemon, monkeypatch):
    now = host.monotonic_usec()
    monkeypatch.setattr(servers, "unit_props", lambda unit, *names: {
        "ActiveEnterTimestampMonotonic": str(now - 3_723_000_000), "MemoryCurrent": str(512 << 20),
        "MemoryMax": str(8 << 30), "CPUQuotaPerSecUSec": "1.500s"})
    code, out, _ = run(capsys, "servers")
    assert re.split(r"\s{2,}", out.splitlines()[1]) == ["alice", "jupyter-alice.service", "active", "1h 02m",
                                                        "512M", "8G, 1.5 CPUs", "#1"]
    rows = json.loads(run(capsys, "servers", "--json")[1])
    assert rows[0]["memory_bytes"] == 512 << 20 and 3722 < rows[0]["uptime_seconds"] < 3800
    monkeypatch.setattr(servers, "unit_props", lambda unit, *names: {"MemoryCurrent": "[not set]"})
    assert json.loads(run(capsys, "servers", "--json")[1])[0]["memory_bytes"] is None


def test_gpus_table(capsys, as_root, fake_daemon):
    code, out, _ = run(capsys, "gpus")
    assert out.splitlines()[0] == "1 of 2 GPUs free (driver 550.54.14); 1 waiting in the queue"
    assert re.split(r"\s{2,}", out.splitlines()[4]) == ["1", "NVIDIA A100", "0B / 80G", "-", "alice", "31m", GPU_B]
    assert out.splitlines()[6] == "Waiting for a GPU, first come first served:"
    assert re.split(r"\s{2,}", out.splitlines()[-1]) == ["1", "bob", "2", "5m"]
    assert json.loads(run(capsys, "gpus", "--json")[1])["queue"][0]["user"] == "bob"


@pytest.fixture
def healthy(monkeypatch, fake_daemon):
    monkeypatch.setattr(status_mod, "unit_states", lambda: {
        "jupyterhub.service": "active", "jupyterhub-proxy.service": "active",
        "jupyterhub-appliance.socket": "active", "jupyterhub-appliance.service": "inactive"})
    monkeypatch.setattr(Hub, "version", lambda self, timeout=3: "6.1.1")
    monkeypatch.setattr(status_mod, "proxy_answers", lambda cfg: True)
    monkeypatch.setattr(status_mod, "footprint", lambda: {"jupyterhub.service": 150 << 20,
                                                          "jupyterhub-proxy.service": 60 << 20})


def test_status_exit_code_is_0_only_when_all_is_well(capsys, as_root, cfgfile, healthy, monkeypatch):
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "URL:  http://" in out and ":8000/" in out and "GPUs: 1 of 2 GPUs free" in out
    assert "Memory: 210 MiB resident in the appliance's own services (jupyterhub 150, jupyterhub-proxy 60)" in out
    assert out.rstrip().endswith("ok: the hub and the proxy answer")
    monkeypatch.setattr(Hub, "version", lambda self, timeout=3: None)
    code, out, _ = run(capsys, "status")
    assert code == 1 and "problem: the hub does not answer on 127.0.0.1:8081" in out
    data = json.loads(run(capsys, "status", "--json")[1])
    assert data["problems"] == ["the hub does not answer on 127.0.0.1:8081"] and data["hub_api"] is False


def test_status_reports_an_invalid_configuration_as_a_problem(capsys, as_user, cfgfile, healthy):
    cfgfile.write_text("[hub]\nport = 0\n")
    code, out, _ = run(capsys, "status")
    assert code == 1 and f"problem: {cfgfile}: hub.port = 0 is not accepted" in out
    assert "GPUs: (run as root to see them)" in out


@pytest.mark.parametrize("args, says", [
    (["token", "--expires-in", "soon", "alice"], "--expires-in: 'soon' is not accepted: a duration such as 3600"),
    (["token", "--expires-in", "0", "alice"], "--expires-in: '0' is not accepted"),
    (["token", "--scopes", "read:users;rm -rf", "alice"], "--scopes: 'read:users;rm' is not a JupyterHub scope"),
    (["token", "--service", "--scopes", "read:users"], "--service and --rotate-service concern the admin service"),
    (["token", "--rotate-service", "--expires-in", "1d"], "--service and --rotate-service concern the admin service"),
])
def test_token_options_are_checked_before_the_hub_is_asked(capsys, as_root, cfgfile, args, says, monkeypatch):
    monkeypatch.setattr(Hub, "call", lambda *a, **k: pytest.fail("the hub must not be asked"))
    code, out, err = run(capsys, *args)
    assert code == 1 and err.startswith("applctl: ") and says in err


def test_token_durations_and_scopes(monkeypatch):
    from appliance.cli.token import parse_duration, parse_scopes
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert [parse_duration(t) for t in ("3600", "90m", "12h", "30d", "2w", "never", None)] == [
        3600, 5400, 43200, 2592000, 1209600, None, 30 * 86400]  # 30 days unless told otherwise
    assert parse_duration(None, no_expiry=True) is None
    assert parse_scopes(("read:users, list:users", "servers!user=alice")) == [
        "read:users", "list:users", "servers!user=alice"]
    assert parse_scopes(()) is None


def test_a_token_without_expiry_is_for_root_itself(capsys, as_root, cfgfile, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setattr(Hub, "call", lambda *a, **k: pytest.fail("the hub must not be asked"))
    for args in (["token", "--no-expiry", "alice"], ["token", "--expires-in", "never", "alice"]):
        code, out, err = run(capsys, *args)
        assert code == 1 and "for root only" in err, err


def test_logs_runs_journalctl_on_the_right_units(capsys, as_root, monkeypatch):
    ran, envs = [], []
    monkeypatch.setattr(os, "execve", lambda prog, argv, env: (ran.append([prog, *argv[1:]]), envs.append(env)))
    monkeypatch.setattr("appliance.cli.logs.check_since", lambda since: None)
    monkeypatch.setattr("appliance.cli.logs.account", lambda name: None)
    for args in (["logs"], ["logs", "--unit", "proxy", "-n", "5"], ["logs", "--user", "alice", "-f", "--since", "today"]):
        with pytest.raises(SystemExit):
            main(args)
    # Its pager must not be a way to a root shell for sudo users.
    assert [e.get("SYSTEMD_PAGERSECURE") for e in envs] == ["1", "1", "1"]
    # journalctl by its full path, never looked up in the caller's PATH.
    journalctl = tool("journalctl")
    assert journalctl.startswith("/") and journalctl.endswith("/journalctl")
    assert ran == [
        [journalctl, "--no-hostname", "-u", "jupyterhub.service", "-u", "jupyterhub-proxy.service",
         "-u", "jupyterhub-appliance.service", "-u", "jupyterhub-appliance.socket",
         "-u", "jupyterhub-pam.service", "-u", "jupyterhub-pam.socket", "-n", "100"],
        [journalctl, "--no-hostname", "-u", "jupyterhub-proxy.service", "-n", "5"],
        [journalctl, "--no-hostname", "-u", "jupyter-alice.service", "--since", "today", "--follow"]]


def test_gpu_summary_wording():
    assert daemon_calls.summary(GpuReport.read({"available": False, "reason": None, "gpus": []})) == \
        "no usable NVIDIA GPU: running CPU-only"
    report = {"available": True, "driver_version": "550", "unusable": [{"index": 2}],
              "gpus": [{"uuid": "a", "holder": None}]}
    assert daemon_calls.summary(GpuReport.read(report)) == "1 of 1 GPU free (driver 550); 1 unusable"


def test_config_edit_under_sudo_runs_the_editor_as_the_caller(monkeypatch, tmp_path, capsys):
    """An editor running as root would be a root shell for every jupyterhub-admin:
    `sudo applctl config edit` runs the editor as the sudo caller, and saves the edit."""
    import pwd
    import shutil
    import tempfile

    from tests.ci import in_ci

    if os.geteuid() != 0:
        why = "running the editor as another user needs root"
        if in_ci():
            pytest.fail(f"{why}, and CI must run this test", pytrace=False)
        pytest.skip(why)
    caller = pwd.getpwnam("nobody")
    assert caller.pw_uid != 0
    path = tmp_path / "appliance.toml"
    path.write_text("[culler]\n# idle servers\ntimeout = 3600\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    # The editor and its record live where the caller can reach them (tmp_path cannot).
    shared = Path(tempfile.mkdtemp(prefix="applctl-editor-test-"))
    try:
        os.chmod(shared, 0o755)
        record = shared / "record"
        record.touch()
        os.chown(record, caller.pw_uid, caller.pw_gid)
        editor = shared / "editor"
        editor.write_text("#!/usr/bin/python3\nimport os, sys\n"
                          f"open({str(record)!r}, 'w').write(f'{{os.getuid()}} {{os.getgid()}} {{os.getgroups()}}')\n"
                          "text = open(sys.argv[1]).read().replace('timeout = 3600', 'timeout = 7200')\n"
                          "open(sys.argv[1], 'w').write(text)\n")
        editor.chmod(0o755)
        for var in ("SUDO_EDITOR", "VISUAL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("EDITOR", str(editor))
        monkeypatch.setenv("SUDO_UID", str(caller.pw_uid))
        monkeypatch.setenv("SUDO_GID", str(caller.pw_gid))
        code, out, err = run(capsys, "config", "edit")
        assert (code, err) == (0, ""), err
        assert out == f"{path} saved; apply it with: sudo applctl reload\n"
        assert record.read_text() == f"{caller.pw_uid} {caller.pw_gid} []"  # not root, no root groups
        assert path.read_text() == "[culler]\n# idle servers\ntimeout = 7200\n"
    finally:
        shutil.rmtree(shared)


def test_sudo_caller_and_reading_the_edited_copy(monkeypatch, tmp_path):
    from appliance.cli import configcmd

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")
    assert configcmd.sudo_caller()[:2] == (1234, 1234)
    monkeypatch.setenv("SUDO_UID", "0")
    assert configcmd.sudo_caller() is None
    # The copy is read without following a link put in its place.
    target = tmp_path / "secret"
    target.write_text("root:hash")
    link = tmp_path / "appliance.toml"
    link.symlink_to(target)
    with pytest.raises(OSError):
        configcmd.read_edited(link, None)
    mine = tmp_path / "copy.toml"
    mine.write_text("[hub]\n")
    with pytest.raises(configcmd.Failure):
        configcmd.read_edited(mine, os.getuid() + 1)
    assert configcmd.read_edited(mine, os.getuid()) == "[hub]\n"


def test_the_manual_page_has_every_command_and_option():
    from appliance.cli import manpage

    page = manpage.render("9.9")
    assert page.startswith('.TH APPLCTL 1 "" "jupyterhub-appliance 9.9"')
    for path, _command in all_commands():
        assert f".SS {' '.join(path)}\n" in page, path
    assert "\\fB--json\\fR" in page
    # Every line starting with a dot is one of the page's own requests, not help text.
    requests = {ln.split()[0] for ln in page.splitlines() if ln.startswith((".", "'"))}
    assert requests <= {".TH", ".SH", ".SS", ".B", ".nf", ".fi", ".TP", ".sp"}, requests


def test_unit_rss_sums_the_processes_of_the_units_cgroup_and_its_children(tmp_path, monkeypatch):
    cg, proc = tmp_path / "cg", tmp_path / "proc"
    (cg / "system.slice/jupyterhub.service/child").mkdir(parents=True)
    (cg / "system.slice/jupyterhub.service/cgroup.procs").write_text("10\n11\n")
    (cg / "system.slice/jupyterhub.service/child/cgroup.procs").write_text("12\n")
    for pid, kb in (("10", 1000), ("12", 24)):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "status").write_text(f"Name:\tx\nVmRSS:\t    {kb} kB\nThreads:\t1\n")
    # 11 has exited since the cgroup was read: not counted, no error.
    monkeypatch.setattr(host, "unit_props", lambda unit, *names: {"ControlGroup": "/system.slice/" + unit})
    assert host.unit_rss("jupyterhub.service", cg, proc) == 1024 * 1024
    monkeypatch.setattr(host, "unit_props", lambda unit, *names: {"ControlGroup": ""})
    assert host.unit_rss("jupyterhub.service", cg, proc) is None
