"""applctl's parts that decide something: adduser's order of changes, kernels,
doctor's checks, reload's proxy decision, /proc parsing, tables, the hub service."""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
from pathlib import Path

import click
import pytest
from traitlets.config import Config

from appliance import config
from appliance.cli import access, doctor, host, kernels, reload
from appliance.cli.completion import config_keys
from appliance.cli.output import Failure, table
from appliance.hub import configurer
from appliance.state import APPLCTL_TOKEN

from .cli_run import run

# --- adduser: checks first, then changes ---------------------------------------------

@pytest.fixture
def accounts(monkeypatch, tmp_path):
    """alice (uid 1001) exists and is in jupyterhub-users already; bob (1002) is not."""
    path = tmp_path / "appliance.toml"
    path.write_text("[gpu]\n# quota_users = {}\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    known = {n: pwd.struct_passwd((n, "x", uid, uid, "", f"/home/{n}", "/bin/bash"))
             for n, uid in (("alice", 1001), ("bob", 1002))}

    def getpwnam(name):
        return known[name]
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    groups = {"jupyterhub-users": {"alice"}, "jupyterhub-admins": set()}
    monkeypatch.setattr(access, "members", lambda g: set(groups[g]))
    ran: list[list[str]] = []

    def fake_run(argv, what=None, input=None):
        ran.append(argv)
        if argv[0] == "gpasswd":
            groups[argv[3]].add(argv[2])
        return ""
    monkeypatch.setattr(access, "run", fake_run)
    monkeypatch.setattr(access, "sync_admin", lambda hub, name, admin: True)
    return {"path": path, "ran": ran, "groups": groups}


def test_adduser_adds_to_the_group_and_is_idempotent(capsys, accounts):
    assert run(capsys, "adduser", "bob") == (0, "bob can now log in to JupyterHub\n", "")
    assert accounts["ran"] == [["gpasswd", "-a", "bob", "jupyterhub-users"]]
    assert run(capsys, "adduser", "alice") == (0, "alice already had this access; nothing changed\n", "")
    assert len(accounts["ran"]) == 1


def test_adduser_gpus_writes_the_quota_next_to_its_comment(capsys, accounts):
    code, out, _ = run(capsys, "adduser", "--gpus", "2", "--json", "bob")
    assert json.loads(out) == {"user": "bob", "created": False, "added_to": ["jupyterhub-users"], "gpus": 2}
    assert accounts["path"].read_text() == "[gpu]\n# quota_users = {}\nquota_users = {bob = 2}\n"
    assert config.load(accounts["path"])["gpu"]["quota_users"] == {"bob": 2}


def test_adduser_with_a_bad_gpu_count_changes_nothing(capsys, accounts):
    code, out, err = run(capsys, "adduser", "--gpus", "65", "bob")
    assert code == 1 and "gpu.quota_users.bob = 65 is not accepted: an integer from 0 to 64" in err
    assert accounts["ran"] == [] and "bob" not in accounts["groups"]["jupyterhub-users"]
    assert accounts["path"].read_text() == "[gpu]\n# quota_users = {}\n"


def test_adduser_of_a_missing_account_suggests_create(capsys, accounts):
    code, out, err = run(capsys, "adduser", "carol")
    assert (code, err) == (1, "applctl: there is no user carol on this machine; add --create to create the account\n")
    assert accounts["ran"] == []


def test_admin_add_needs_access_first(capsys, accounts):
    code, _, err = run(capsys, "admin", "add", "bob")
    assert code == 1 and "bob has no access to JupyterHub; give it with admin rights: applctl adduser --admin bob" in err
    assert run(capsys, "admin", "add", "alice")[1] == "alice is now a hub admin\n"
    assert run(capsys, "admin", "add", "alice")[1] == "alice is already a hub admin; nothing changed\n"


# --- kernels --------------------------------------------------------------------------

@pytest.fixture
def kernel_dirs(tmp_path, monkeypatch):
    ours, builtin = tmp_path / "local", tmp_path / "userenv"
    (builtin / "python3").mkdir(parents=True)
    (builtin / "python3" / "kernel.json").write_text(json.dumps(
        {"argv": ["python", "-m", "ipykernel_launcher"], "display_name": "Python 3 (ipykernel)"}))
    monkeypatch.setattr(kernels, "KERNEL_DIR", ours)
    monkeypatch.setattr(kernels, "OTHER_DIRS", (builtin, tmp_path / "none"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernels, "probe", lambda python: {"version": "3.12.1", "prefix": "/opt/env",
                                                          "ipykernel": "6.29.0"})
    return ours


def test_kernels_add_writes_a_kernelspec_every_server_finds(capsys, kernel_dirs, tmp_path):
    python = tmp_path / "env/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    code, out, _ = run(capsys, "kernels", "add", "--name", "py312", "--python", str(python))
    assert (code, out) == (0, "kernel py312 (Python 3.12.1 (py312), python, ipykernel 6.29.0) is now offered to "
                              "every user\n")
    spec = json.loads((kernel_dirs / "py312/kernel.json").read_text())
    assert spec["argv"] == [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["env"]["PATH"].startswith(f"{python.parent}:")
    assert stat.S_IMODE((kernel_dirs / "py312").stat().st_mode) == 0o755
    assert [p.name for p in kernel_dirs.iterdir()] == ["py312"]  # no half-written directory left
    assert "nothing changed" in run(capsys, "kernels", "add", "--name", "py312", "--python", str(python))[1]
    code, _, err = run(capsys, "kernels", "add", "--name", "py312", "--python", "/usr/bin/python3")
    assert code == 1 and "a kernel named py312 already exists" in err and "applctl kernels remove py312" in err
    code, _, err = run(capsys, "kernels", "add", "--name", "python3", "--python", str(python))
    assert code == 1 and "a kernel named python3 already exists" in err and "remove" not in err
    rows = json.loads(run(capsys, "kernels", "list", "--json")[1])
    assert [(r["name"], r["source"]) for r in rows] == [("python3", "built-in"), ("py312", "applctl")]
    assert run(capsys, "kernels", "remove", "py312")[1] == "kernel py312 removed\n"
    assert run(capsys, "kernels", "remove", "py312")[1] == "there is no kernel py312; nothing changed\n"
    code, _, err = run(capsys, "kernels", "remove", "python3")
    assert code == 1 and "kernel python3 is not one applctl manages" in err


def test_a_conda_environment_runs_its_activation_scripts_before_the_kernel(capsys, kernel_dirs, tmp_path):
    env = tmp_path / "conda/envs/torch"
    (env / "bin").mkdir(parents=True)
    (env / "conda-meta").mkdir()
    (env / "bin/python").write_text("#!/bin/sh\n")
    (env / "bin/python").chmod(0o755)
    code, out, _ = run(capsys, "kernels", "add", "torch", "--env", str(env))
    assert (code, out) == (0, "kernel torch (Python 3.12.1 (torch), conda, ipykernel 6.29.0) is now offered to "
                              "every user\n")
    spec = json.loads((kernel_dirs / "torch/kernel.json").read_text())
    assert spec["argv"][:2] == ["/bin/bash", "-c"] and spec["argv"][3] == "{connection_file}"
    assert f"for f in {env}/etc/conda/activate.d/*.sh; do" in spec["argv"][2]
    assert spec["argv"][2].endswith(f'exec {env}/bin/python -m ipykernel_launcher -f "$0"')
    assert (spec["env"]["CONDA_PREFIX"], spec["env"]["CONDA_DEFAULT_ENV"]) == (str(env), "torch")
    (row,) = [r for r in json.loads(run(capsys, "kernels", "list", "--json")[1]) if r["name"] == "torch"]
    assert (row["kind"], row["python_version"], row["python"], row["usable"]) == ("conda", "3.12.1",
                                                                                    f"{env}/bin/python", True)
    assert "nothing changed" in run(capsys, "kernels", "add", "--name", "torch", "--env", str(env))[1]
    # The activation really runs, with the kernel's connection file as "$0".
    (env / "etc/conda/activate.d").mkdir(parents=True)
    (env / "etc/conda/activate.d/x.sh").write_text("export FROM_ACTIVATE=yes\n")
    (env / "bin/python").write_text('#!/bin/sh\necho "$FROM_ACTIVATE $*"\n')
    import subprocess
    argv = [a.replace("{connection_file}", "/tmp/k.json") for a in spec["argv"]]
    assert subprocess.run(argv, capture_output=True, text=True).stdout == "yes -m ipykernel_launcher -f /tmp/k.json\n"


@pytest.mark.parametrize("args, says", [
    (["torch", "--name", "other", "--env", "/opt/e"], "the kernel is named twice ('torch' and --name 'other')"),
    (["--env", "/opt/e"], "give the kernel a name: applctl kernels add NAME --env PREFIX"),
    (["torch"], "say which environment, once: --env PREFIX"),
    (["torch", "--env", "/opt/e", "--python", "/opt/e/bin/python"], "say which environment, once"),
    (["torch", "--env", "opt/e"], "give the absolute path of the environment"),
    (["torch", "--env", "/nonexistent"], "--env /nonexistent: no such directory"),
    (["torch", "--env", "EMPTY"], "has no bin/python: give a conda environment's or a venv's directory"),
])
def test_kernels_add_env_refuses_what_is_not_an_environment(capsys, kernel_dirs, tmp_path, args, says):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "kernels", "add", *[str(tmp_path / "empty") if a == "EMPTY" else a for a in args])
    assert code == 1 and says in err and len(err.splitlines()) == 1, err
    assert not kernel_dirs.exists()


@pytest.mark.parametrize("args, says", [
    (["--name", "Py 3", "--python", "/usr/bin/python3"], "'Py 3' is not a kernel name: 1 to 64 characters"),
    (["--name", "x" * 65, "--python", "/usr/bin/python3"], "is not a kernel name"),
    (["--name", "ok", "--python", "python3"], "give the absolute path of the interpreter"),
    (["--name", "ok", "--python", "/opt/../etc/passwd"], "give the absolute path of the interpreter"),
    (["--name", "ok", "--python", "/nonexistent/bin/python"], "--python /nonexistent/bin/python: no such file"),
    (["--name", "ok", "--python", "PLAIN"], "is not an executable file"),
])
def test_kernels_add_refuses_bad_names_and_paths(capsys, kernel_dirs, tmp_path, args, says):
    plain = tmp_path / "notes.txt"
    plain.write_text("not a program")
    code, _, err = run(capsys, "kernels", "add", *[str(plain) if a == "PLAIN" else a for a in args])
    assert code == 1 and says in err and len(err.splitlines()) == 1
    assert not kernel_dirs.exists()


@pytest.mark.parametrize("result, says", [
    (PermissionError(13, "Permission denied"), "an ordinary user may not run it (permission denied)"),
    ((1, "", "Traceback...\nModuleNotFoundError: No module named 'ipykernel'\n"),
     "/x/python has no ipykernel; install it into that environment: /x/python -m pip install ipykernel"),
    ((0, "hello\n", ""), "is not a Python interpreter (it did not run Python code)"),
    ((1, "", "SyntaxError: bad\n"), "is not a working Python interpreter: SyntaxError: bad"),
])
def test_probe_says_why_an_interpreter_cannot_be_a_kernel(monkeypatch, result, says):
    import subprocess

    def fake(argv, **kw):
        assert kw["user"] == pwd.getpwnam("nobody").pw_uid and kw["extra_groups"] == []  # as an ordinary user
        if isinstance(result, Exception):
            raise result
        return subprocess.CompletedProcess(argv, result[0], result[1], result[2])
    monkeypatch.setattr(subprocess, "run", fake)
    with pytest.raises(Failure) as e:
        kernels.probe("/x/python")
    assert says in e.value.message


def test_colour_only_on_a_terminal(kernel_dirs):
    from click.testing import CliRunner

    from appliance.applctl import cli
    on_tty = CliRunner().invoke(cli, ["kernels", "list"], color=True)
    piped = CliRunner().invoke(cli, ["kernels", "list"], color=False)
    assert "\x1b[32mok\x1b[0m" in on_tty.output and "\x1b[1mNAME" in on_tty.output
    assert "\x1b[" not in piped.output and click.unstyle(on_tty.output) == piped.output


# --- doctor ---------------------------------------------------------------------------

def test_doctor_state_check_names_each_wrong_file_and_the_fix(tmp_path, monkeypatch):
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr(doctor, "HUB_USER", me.pw_name)
    state, secrets = tmp_path / "state", tmp_path / "secrets"
    for d, names in ((state, ("jupyterhub_cookie_secret", APPLCTL_TOKEN)), (secrets, ("proxy_token", "jupyterhub_crypt_key"))):
        d.mkdir(mode=0o700)
        for name in names:
            (d / name).write_text("x")
            (d / name).chmod(0o600)
    if os.getuid() == 0:  # root's secrets must be root's
        assert doctor.check_state(state, secrets).ok
    (state / "jupyterhub_cookie_secret").chmod(0o644)
    (state / APPLCTL_TOKEN).unlink()
    check = doctor.check_state(state, secrets)
    assert not check.ok
    assert (f"{state}/jupyterhub_cookie_secret has owner {me.pw_name} and mode 0644, not {me.pw_name} and 0600"
            in check.detail)
    assert f"{state}/{APPLCTL_TOKEN} is missing" in check.detail
    assert "applctl doctor --fix" in check.fix
    # A link planted in place of a secret is named, never followed.
    (state / APPLCTL_TOKEN).symlink_to("/etc/shadow")
    assert f"{state}/{APPLCTL_TOKEN} is a link or not a plain file" in doctor.check_state(state, secrets).detail
    (secrets / "proxy_token").chmod(0o644)
    assert f"{secrets}/proxy_token has owner root and mode 0644, not root and 0600" in \
        doctor.check_state(state, secrets).detail or os.getuid() != 0


def test_doctor_ports_check_names_the_squatter(monkeypatch):
    cfg = config.loads("[hub]\nport = 8000\nhub_port = 8081\nproxy_api_port = 8001\n")
    # Each port held by PID 1 (the socket units, held_ports.py) and shared with its unit.
    listening = {8000: {11, 1}, 8081: {12, 2}, 8001: {3}, 8082: {4}, 9445: {5}}
    monkeypatch.setattr(doctor, "listeners", lambda: listening)
    owners = {11: (500, "nginx", "nginx.service"), 12: (600, "jupyterhub", "jupyterhub.service"),
              **{i: (1, "systemd", "init.scope") for i in (1, 2, 3, 4, 5)}}
    monkeypatch.setattr(doctor, "socket_owners", lambda inodes: [owners[i] for i in inodes])
    check = doctor.check_ports(cfg)
    assert not check.ok
    assert check.detail == "port 8000 (hub.port) is taken by nginx (pid 500, nginx.service)"
    assert "applctl config set hub.port N" in check.fix
    owners[11] = (700, "node", "jupyterhub-proxy.service")
    assert doctor.check_ports(cfg).ok
    # A port that systemd does not hold could be taken while its service restarts.
    listening[8001] = set()
    check = doctor.check_ports(cfg)
    assert not check.ok and check.detail.startswith("port 8001 (hub.proxy_api_port) is not held by systemd")
    clash = config.loads("[hub]\nport = 8001\nproxy_api_port = 8001\n")
    assert doctor.check_ports(clash).detail == "hub.port and hub.proxy_api_port are the same port 8001"


# --- reload's decision, and what applctl reads from /proc ---------------------------------

def test_reload_restarts_the_proxy_only_when_its_command_line_would_change(monkeypatch):
    cfg = config.loads("[hub]\nport = 8000\n")
    from appliance.chp import command
    running = ["node"] + command(cfg)
    monkeypatch.setattr(reload, "main_pid_argv", lambda unit: running)
    assert reload.proxy_settings_changed(cfg) is False
    assert reload.proxy_settings_changed(config.loads("[hub]\nport = 8080\n")) is True
    assert reload.proxy_settings_changed(config.loads("[spawner]\nmem_limit = \"4G\"\n")) is False
    monkeypatch.setattr(reload, "main_pid_argv", lambda unit: None)  # not running: start it
    assert reload.proxy_settings_changed(cfg) is True


def test_listeners_reads_listening_ports_from_proc(tmp_path):
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "net/tcp").write_text(header +
        "   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0        0 4242 1\n"
        "   1: 0100007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   0        0 4343 1\n")
    (tmp_path / "net/tcp6").write_text(header +
        "   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000   0        0 4444 1\n")
    assert host.listeners(tmp_path) == {8001: {4242}, 8000: {4444}}  # 8000 over IPv4 is a connection, not a listener


def test_a_port_is_held_by_systemd_while_pid_1_closes_other_descriptors(tmp_path):
    """CI run 38: PID 1 closed one of its descriptors during the scan, so the hub's
    port looked not held, and applctl admin remove sent no revocation."""
    (tmp_path / "1/fd").mkdir(parents=True)
    (tmp_path / "1/comm").write_text("systemd\n")
    (tmp_path / "1/fd/3").write_text("")  # readlink fails on it, as on a descriptor just closed
    (tmp_path / "1/fd/9").symlink_to("socket:[4242]")
    (tmp_path / "77/fd").mkdir(parents=True)
    (tmp_path / "77/fd/4").symlink_to("socket:[5555]")
    listening = {8001: {4242}, 8002: {5555}}
    assert host.held_by_systemd(8001, listening, proc=tmp_path)
    assert not host.held_by_systemd(8002, listening, proc=tmp_path)  # another process's listener
    assert not host.held_by_systemd(8003, listening, proc=tmp_path)  # nobody's
    assert [pid for pid, _, _ in host.socket_owners({4242}, proc=tmp_path)] == [1]


def test_int_props_and_uptime_from_systemd():
    assert host.int_prop({"MemoryCurrent": "1048576"}, "MemoryCurrent") == 1048576
    assert host.int_prop({"MemoryCurrent": "[not set]"}, "MemoryCurrent") is None
    assert host.int_prop({"MemoryCurrent": "18446744073709551615"}, "MemoryCurrent") is None  # infinity
    assert host.uptime_seconds({"ActiveEnterTimestampMonotonic": "0"}) is None
    assert 59 < host.uptime_seconds({"ActiveEnterTimestampMonotonic": str(host.monotonic_usec() - 60_000_000)}) < 61


# --- output -----------------------------------------------------------------------------

def test_table_aligns_on_the_text_even_when_coloured():
    text = table(["USER", "SERVER", "GPUS"], [["alice", "active", "#0"], ["bob", "failed", ""]], painted=(1,))
    assert "\x1b[32mactive\x1b[0m" in text and "\x1b[31mfailed\x1b[0m" in text
    plain = click.unstyle(text).splitlines()
    assert plain == ["USER   SERVER  GPUS", "alice  active  #0", "bob    failed  -"]


# --- the hub service applctl acts as -------------------------------------------------------

def test_the_applctl_service_is_appended_with_its_token(tmp_path):
    (tmp_path / APPLCTL_TOKEN).write_text("s3cret\n")
    c = Config()
    c.JupyterHub.services = [{"name": "idle-culler"}]
    configurer.register_applctl_service(c, str(tmp_path))
    assert c.JupyterHub.services == [{"name": "idle-culler"},
                                     {"name": "applctl", "api_token": "s3cret", "admin": True}]


def test_without_its_token_the_hub_still_starts_and_says_why(tmp_path, capsys):
    c = Config()
    configurer.register_applctl_service(c, str(tmp_path))
    assert "services" not in c.JupyterHub
    err = capsys.readouterr().err
    assert re.fullmatch(rf"jupyterhub: no applctl service: cannot read {tmp_path}/{APPLCTL_TOKEN} \(No such file "
                        r"or directory\); reinstalling the package creates it\n", err)


def test_completion_offers_configuration_keys():
    assert config_keys(None, None, "hub.p") == ["hub.port", "hub.proxy_api_port"]
    assert "gpu.quota_users" in config_keys(None, None, "gpu.")


def test_the_console_entry_point_is_kept():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'applctl = "appliance.applctl:main"' in text


def test_mig_devices_are_shown_by_their_parents_index_and_their_place():
    from appliance.cli.daemon_calls import gpu_labels, gpu_list
    from appliance.protocol import GpuReport
    report = GpuReport.read({"ok": True, "available": True, "gpus": [
        {"uuid": "GPU-a", "index": 0}, {"uuid": "MIG-x", "index": 1, "parent": "GPU-b"},
        {"uuid": "MIG-y", "index": 1, "parent": "GPU-b"}, {"uuid": "GPU-c", "index": 2}], "queue": []})
    labels = gpu_labels(report)
    assert labels == {"GPU-a": "0", "MIG-x": "1.0", "MIG-y": "1.1", "GPU-c": "2"}
    assert gpu_list(["MIG-y", "GPU-c", "GPU-gone"], labels) == "#1.1,#2,GPU-gone"
