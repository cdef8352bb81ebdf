"""[apps.NAME] (issue 32 item 1, docs/apps.md): the configuration's checks, each a
one-line error naming the key; what the daemon passes to a server; what the server
gives jupyter-server-proxy (an app whose program is missing is left off with one log
line); what a jupyterhub-admin under sudo may change; applctl apps check's unit."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

import appliance
from appliance import config, config_edit, singleuser
from appliance.cli import apps as apps_cli
from appliance.daemon import units

from .cli_run import run
from .test_applctl_cli import as_root, cfgfile  # noqa: F401 (fixtures)

TB = ["/opt/apps/tensorboard/bin/tensorboard", "--logdir", "logs", "--port", "{port}"]


def load(text: str) -> config.Config:
    return config.loads(text, "/etc/jupyterhub/appliance.toml")


def refusal(text: str) -> str:
    with pytest.raises(config.ConfigError) as e:
        load(text)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_an_app_with_only_a_command_gets_the_defaults():
    cfg = load('[apps.tensorboard]\ncommand = ["tensorboard", "--port", "{port}", "--path_prefix", "{base_url}x"]\n')
    assert cfg["apps"] == {"tensorboard": {
        "command": ["tensorboard", "--port", "{port}", "--path_prefix", "{base_url}x"], "title": "tensorboard",
        "icon": "", "timeout": 30, "environment": {}, "enabled": True}}
    assert load("")["apps"] == {}


@pytest.mark.parametrize("table, key, accepted", [
    ('[apps.Bad_Name]\ncommand = ["x", "{port}"]', "apps.Bad_Name", "an app name"),
    ("[apps.x]\ntitle = \"X\"", "apps.x.command", "(required)"),
    ('[apps.x]\ncommand = []', "apps.x.command", "a list of 1 to 64 texts"),
    ('[apps.x]\ncommand = "x {port}"', "apps.x.command", "a list of 1 to 64 texts"),
    ('[apps.x]\ncommand = ["x", "--home={home}", "{port}"]', "apps.x.command", "no other braces"),
    ('[apps.x]\ncommand = ["x", "{port", "{port}"]', "apps.x.command", "no other braces"),
    ('[apps.x]\ncommand = ["x", "a\\u0000b", "{port}"]', "apps.x.command", "a list of 1 to 64 texts"),
    ('[apps.x]\ncommand = ["x"]', "apps.x.command", "{port} or {unix_socket}, one of them"),
    ('[apps.x]\ncommand = ["x", "{port}", "{unix_socket}"]', "apps.x.command", "one of them"),
    ('[apps.x]\ncommand = ["bin/x", "{port}"]', "apps.x.command", "an absolute path"),
    ('[apps.x]\ncommand = ["{base_url}", "{port}"]', "apps.x.command", "without braces"),
    ('[apps.x]\ncommand = ["x", "{port}"]\ntimeout = 0', "apps.x.timeout", "an integer from 1 to 600"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nenabled = "yes"', "apps.x.enabled", "true or false"),
    ('[apps.x]\ncommand = ["x", "{port}"]\ntitle = ""', "apps.x.title", "1 to 100 characters"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nport = 80', "apps.x.port", "known keys are command, title, icon"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nicon = "/etc/passwd"', "apps.x.icon", "an SVG file"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nicon = "/nonexistent/x.svg"', "apps.x.icon", "cannot read it"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nenvironment = { "1X" = "a" }', "apps.x.environment.1X", ""),
    ('[apps.x]\ncommand = ["x", "{port}"]\nenvironment = { API_TOKEN = "a" }', "apps.x.environment.API_TOKEN",
     "holds no secret"),
    ('[apps.x]\ncommand = ["x", "{port}"]\nenvironment = { A = "a\\nb" }', "apps.x.environment.A", "one-line"),
    ("apps = 3", "apps", "tables [apps.NAME]"),
])
def test_each_bad_value_is_one_line_naming_the_key(table, key, accepted):
    message = refusal(table)
    assert f": {key} = " in message and accepted in message, message
    assert "API_TOKEN" not in key or "(value not shown)" in message


def test_the_icon_is_an_svg_file_everyone_may_read(tmp_path):
    icon = tmp_path / "tb.svg"
    icon.write_text("<svg/>")
    icon.chmod(0o644)
    assert load(f'[apps.x]\ncommand = ["x", "{{port}}"]\nicon = "{icon}"')["apps"]["x"]["icon"] == str(icon)
    icon.chmod(0o600)
    assert "not a file that everyone may read" in refusal(f'[apps.x]\ncommand = ["x", "{{port}}"]\nicon = "{icon}"')


def apps_of(text: str) -> dict:
    return load(text)["apps"]


APPS = apps_of(f'''
[apps.tensorboard]
command = {json.dumps(TB)}
title = "TensorBoard"
environment = {{ TB_X = "a{{b}}" }}
[apps.code]
command = ["code-server", "--socket", "{{unix_socket}}"]
[apps.off]
command = ["off", "{{port}}"]
enabled = false
''')


def test_the_daemon_passes_the_enabled_apps_and_allows_one_port_only_for_port_apps():
    env = units.apps_env(APPS)
    given = json.loads(env[units.APPS_VARIABLE])
    assert given["port"] == units.APP_PORT == 80
    assert set(given["apps"]) == {"tensorboard", "code"}
    assert given["apps"]["tensorboard"]["command"] == TB
    allow = units.apps_bind(APPS)
    assert [(k, v.value) for k, v in allow] == [("SocketBindAllow", [(0, 6, 1, 80)])]
    assert units.apps_bind({"code": APPS["code"]}) == []
    assert units.apps_env({"off": APPS["off"]}) == {}


def test_the_hub_cannot_send_the_apps_variable():
    from appliance.daemon.validate import SpawnSpec
    spec = SpawnSpec.__new__(SpawnSpec)
    for k, v in {"env": {units.APPS_VARIABLE: '{"port": 1, "apps": {}}'}, "visitor": False, "user": "alice",
                 "gpu_uuids": ()}.items():
        setattr(spec, k, v)
    assert units.APPS_VARIABLE not in units.server_env(spec)
    assert json.loads(units.server_env(spec, apps=APPS)[units.APPS_VARIABLE])["port"] == 80


def fake_program(directory: Path, name: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_the_server_leaves_off_a_missing_program_with_one_log_line(tmp_path, capsys):
    fake_program(tmp_path, "code-server")
    given = {n: {**a, "command": [os.path.basename(a["command"][0]), *a["command"][1:]]}
             for n, a in APPS.items() if a["enabled"]}
    servers = singleuser.proxy_servers(given, 80, path=str(tmp_path))
    assert list(servers) == ["code"]
    err = capsys.readouterr().err.splitlines()
    assert err == ["appliance-singleuser: app tensorboard left off: its program tensorboard is not installed (not "
                   "found on the server's PATH); applctl apps list shows each app's state"]
    code = servers["code"]
    assert code["command"] == [str(tmp_path / "code-server"), "--socket", "{unix_socket}"]
    assert code["unix_socket"] is True and code["timeout"] == 30
    assert code["launcher_entry"] == {"title": "code", "enabled": True, "path_info": "code/"}


def test_a_port_app_runs_through_the_bridge_on_a_unix_socket(tmp_path):
    program = fake_program(tmp_path, "tensorboard")
    app = {**APPS["tensorboard"], "command": [program, *TB[1:]]}
    server = singleuser.proxy_servers({"tensorboard": app}, 80)["tensorboard"]
    assert server["command"] == [singleuser.APP_BRIDGE, "--socket", "{unix_socket}", "--port", "80", "--",
                                 program, "--logdir", "logs", "--port", "80"]
    assert server["unix_socket"] is True
    # jupyter-server-proxy fills values in with str.format: the administrator's braces stay.
    assert server["environment"] == {"TB_X": "a{{b}}"}
    assert server["environment"]["TB_X"].format(port=0, unix_socket="", base_url="") == "a{b}"


def test_the_server_writes_its_proxy_config_and_takes_the_variable_out(tmp_path, monkeypatch):
    program = fake_program(tmp_path, "code-server")
    given = {"port": 80, "apps": {"code": {**APPS["code"], "command": [program, "--socket", "{unix_socket}"]}}}
    monkeypatch.setenv(units.APPS_VARIABLE, json.dumps(given))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "/elsewhere")
    singleuser.with_apps(str(tmp_path))
    assert units.APPS_VARIABLE not in os.environ
    config_dir = tmp_path / "appliance-apps"
    assert os.environ["JUPYTER_CONFIG_PATH"] == f"{config_dir}{os.pathsep}/elsewhere"
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    written = json.loads((config_dir / "jupyter_server_config.json").read_text())
    assert list(written["ServerProxy"]["servers"]) == ["code"]


def test_the_bridge_is_shipped_next_to_the_launcher():
    assert singleuser.APP_BRIDGE == os.path.join(sys.prefix, "bin", "appliance-app")
    stage = (Path(appliance.__file__).parents[1] / "scripts/stage-tree").read_text()
    assert '"$top/appliance/app_bridge.py"; } > "$dest$lib/user/bin/appliance-app"' in stage


def test_a_jupyterhub_admin_may_retitle_an_app_but_not_change_what_it_runs(cfgfile, capsys, monkeypatch):  # noqa: F811
    cfgfile.write_text('[apps.tb]\ncommand = ["tensorboard", "{port}"]\n')
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    code, out, err = run(capsys, "config", "set", "apps.tb.command", '["/bin/sh", "-c", "{port}"]')
    assert code == 1 and "Traceback" not in err, err
    assert err.strip() == ("applctl: apps.tb runs its command in every user's server, as that user, so only root "
                           "may add, remove or change its command, environment, enabled (a root login, not sudo "
                           "applctl); the file is unchanged")
    assert "tensorboard" in cfgfile.read_text()
    code, out, err = run(capsys, "config", "set", "apps.tb.title", "TensorBoard")
    assert code == 0, err
    assert config.load(cfgfile)["apps"]["tb"]["title"] == "TensorBoard"
    with pytest.raises(config_edit.EditError):
        config_edit.check_change(cfgfile.read_text(), cfgfile.read_text() + '[apps.new]\ncommand = ["x", "{port}"]\n',
                                 cfgfile)


def test_apps_check_runs_each_app_as_a_throwaway_user_sandboxed_as_a_server():
    argv = apps_cli.check_argv("tensorboard", APPS["tensorboard"], "/opt/tb", "/run/appliance-app-check-tensorboard")
    assert argv[0].endswith("systemd-run") and "--unit=appliance-app-check-tensorboard.service" in argv
    for prop in ("DynamicUser=yes", "SocketBindDeny=any", "SocketBindAllow=tcp:80", "PrivateTmp=yes",
                 "NoNewPrivileges=yes"):
        assert f"--property={prop}" in argv
    assert "--setenv=TB_X=a{b}" in argv
    assert argv[argv.index("--") + 1:] == [apps_cli.BRIDGE, "--socket", "/run/appliance-app-check-tensorboard/socket",
                                           "--port", "80", "--", "/opt/tb", "--logdir", "logs", "--port", "80"]
    code = apps_cli.check_argv("code", APPS["code"], "/usr/bin/code-server", "/run/appliance-app-check-code")
    assert "--property=SocketBindAllow=tcp:80" not in code
    assert code[code.index("--") + 1:] == ["/usr/bin/code-server", "--socket", "/run/appliance-app-check-code/socket"]


def test_apps_list_says_which_program_is_missing_and_check_refuses_an_unknown_name(cfgfile, capsys, as_root):  # noqa: F811
    cfgfile.write_text('[apps.tb]\ncommand = ["/nonexistent/tensorboard", "{port}"]\ntitle = "TensorBoard"\n')
    code, out, err = run(capsys, "apps", "list")
    assert code == 0 and err == "", err
    assert out.splitlines()[1].split() == ["tb", "TensorBoard", "yes", "/nonexistent/tensorboard", "no:", "left",
                                           "off", "every", "server", "port"]
    code, out, err = run(capsys, "apps", "check", "nope")
    assert (code, out, err) == (1, "", "applctl: there is no app 'nope' in [apps]: tb\n")
    code, out, err = run(capsys, "apps", "check", "--json")
    assert code == 1 and json.loads(out) == [
        {"name": "tb", "ok": False, "why": "its program /nonexistent/tensorboard is not installed (not on the "
                                           "servers' PATH)"}]


def test_apps_check_never_follows_a_link_the_apps_uid_could_plant(tmp_path):
    """applctl apps check (root) asks the app on its socket, in a directory of the app's
    throwaway uid: a link there to another socket is never connected to."""
    import socket
    import threading

    from appliance.cli.apps import answers

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "real"))
    srv.listen(2)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return  # closed at the end of the test
            c.recv(100)
            c.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("")
    assert answers(str(tmp_path / "real")) == "HTTP/1.0 200 OK"
    assert answers(str(tmp_path / "link")) is None
    assert answers(str(tmp_path / "file")) is None
    srv.close()


def test_doctor_says_when_servers_could_bind_the_machines_port_80(tmp_path):
    from appliance.cli import doctor

    sysctl = tmp_path / "ip_unprivileged_port_start"
    port_app = config.validate({"apps": {"tb": {"command": ["/bin/tb", "--port", "{port}"]}}})
    socket_app = config.validate({"apps": {"cs": {"command": ["/bin/cs", "--socket", "{unix_socket}"]}}})
    sysctl.write_text("1024\n")
    assert doctor.check_app_port(socket_app, sysctl) is None  # no app binds a port: nothing to say
    assert doctor.check_app_port(config.validate({}), sysctl) is None
    assert doctor.check_app_port(port_app, sysctl).ok
    sysctl.write_text("80\n")  # lowered (rootless containers' advice): servers could take the front's port
    c = doctor.check_app_port(port_app, sysctl)
    assert not c.ok and "is 80" in c.detail and "tb" in c.detail and "ip_unprivileged_port_start=1024" in c.fix
    sysctl.unlink()
    c = doctor.check_app_port(port_app, sysctl)
    assert c.ok and c.warning and "unknown" in c.detail
