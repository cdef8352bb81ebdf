import pytest

from appliance import config, protocol, users
from appliance.daemon import units, validate

HUB_UID = 995


def cfg(min_uid=1000, **daemon):
    return config.validate({"daemon": {"min_uid": min_uid, **daemon}, "spawner": {"environment": {"HF_HOME": "/d"}}})


def test_only_root_and_the_hub_may_talk():
    assert validate.check_op({"op": "spawn"}, HUB_UID, HUB_UID) == "spawn"
    assert validate.check_op({"op": "list"}, 0, HUB_UID) == "list"
    with pytest.raises(protocol.RequestError) as e:
        validate.check_op({"op": "status"}, 1000, HUB_UID)
    assert e.value.code == "forbidden"
    assert validate.check_op({"op": "list"}, HUB_UID, HUB_UID) == "list"  # the GPU dashboard's server list
    with pytest.raises(protocol.RequestError) as e:
        validate.check_op({"op": "reboot"}, HUB_UID, HUB_UID)
    assert e.value.field == "op" and "spawn, stop, status, gpus, list" in str(e.value)
    with pytest.raises(protocol.RequestError):
        validate.check_op(["spawn"], 0, HUB_UID)


@pytest.mark.parametrize("name, says", [
    ("root", "root can never have a server"),
    ("../etc", "not a valid user name"),
    ("a b", "not a valid user name"),
    ("x" * 300, "not a valid user name"),
    (7, "not a valid user name"),
    ("nosuchuser-xyz", "there is no user"),
])
def test_users_that_may_never_have_a_server(name, says):
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": name}, cfg())
    assert e.value.code == "invalid_user" and says in str(e.value)


def test_system_accounts_are_refused_below_min_uid(monkeypatch):
    # A member of jupyterhub-users: only min_uid can refuse it.
    req = _member(monkeypatch)
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req, cfg(1000))
    assert "system account (uid 1)" in str(e.value)
    assert validate.check_spawn(req, cfg(1)).uid == 1


def _member(monkeypatch, name="daemon"):
    monkeypatch.setattr(users, "is_member", lambda n, g: True)
    return {"op": "spawn", "user": name}


def test_a_valid_request_becomes_a_bounded_spec(monkeypatch):
    req = _member(monkeypatch) | {"env": {"JUPYTERHUB_API_TOKEN": "abc", "JUPYTERHUB_USER": "daemon",
                                          "LANG": "C.UTF-8", "HF_HOME": "/d"},
                                  "options": {"debug": True, "ServerApp.terminals_enabled": False},
                                  "mem_limit": 512 * 1024**2, "cpu_limit": 1, "extra": {"TasksMax": 100}}
    spec = validate.check_spawn(req, cfg(1))
    assert (spec.user, spec.uid, spec.mem_limit, spec.cpu_limit) == ("daemon", 1, 512 * 1024**2, 1.0)
    assert spec.extra == {"TasksMax": 100}
    assert spec.options == {"debug": True, "ServerApp.terminals_enabled": False}


def test_members_of_root_equivalent_groups_get_no_server(monkeypatch):
    req = _member(monkeypatch)
    monkeypatch.setattr(users, "groups_of", lambda n: ["daemon", "docker"])
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req, cfg(1))
    assert e.value.code == "privileged_user" and "docker" in str(e.value)
    assert validate.check_spawn(req, cfg(1, allow_privileged_users=True)).user == "daemon"
    assert validate.check_spawn(req, cfg(1, privileged_groups=["sudo"])).user == "daemon"


@pytest.mark.parametrize("field, value", [
    ("env", {"LD_PRELOAD": "/tmp/x.so"}),
    ("env", {"PYTHONPATH": "/tmp"}),
    ("env", {"JUPYTERHUB_SINGLEUSER_APP": "evil.App"}),
    ("env", {"A": "x"}),  # not listed by the administrator
    ("env", {"LANG": "two\nlines"}),
    ("env", {"JUPYTERHUB_USER": "root"}),
    ("env", {"JUPYTERHUB_SERVER_NAME": "other"}),
    ("env", "A=1"),
    ("args", ["--debug"]),  # the daemon builds the command line: no raw words
    ("options", {"ServerApp.jpserver_extensions": {"evil": True}}),
    ("options", {"config": "/tmp/x.py"}),
    ("options", {"ServerApp.terminals_enabled": "yes"}),
    ("options", {"MappingKernelManager.cull_idle_timeout": -1}),
    ("options", ["--debug"]),
    ("mem_limit", 10),
    ("mem_limit", True),
    ("cpu_limit", -1),
    ("cpu_limit", "2"),
    ("readonly_paths", ["relative/path"]),
    ("readwrite_paths", ["/a/../etc"]),
    ("extra", {"User": "root"}),
    ("extra", {"ExecStart": "/bin/sh"}),
    ("extra", {"TasksMax": 10**9}),
    ("unit", "ssh.service"),
])
def test_bad_fields_are_refused_by_name(monkeypatch, field, value):
    req = _member(monkeypatch) | {field: value}
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req, cfg(1))
    assert e.value.field == field


def _gpu_cfg(**gpu):
    return config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 2, **gpu},
                            "profiles": {"big": {"display_name": "Big", "gpus": 2, "mem_limit": "1G"},
                                         "cpu": {"display_name": "CPU", "gpus": 0}}})


def test_a_profiles_gpus_come_from_the_daemons_own_appliance_toml(monkeypatch):
    """The hub names the profile; the daemon reads its count, not the hub's word."""
    req = _member(monkeypatch) | {"profile": "big"}
    assert validate.check_spawn(req, _gpu_cfg()).gpus == 2
    assert validate.check_spawn(req | {"gpus": 2}, _gpu_cfg()).gpus == 2  # a hub of the previous release
    for wrong in (0, 1, True, "2"):
        with pytest.raises(protocol.RequestError) as e:
            validate.check_spawn(req | {"gpus": wrong}, _gpu_cfg())
        assert e.value.field == "gpus" and "profile big has 2 GPU(s) in appliance.toml" in str(e.value)
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req | {"profile": "nosuch"}, _gpu_cfg())
    assert e.value.field == "profile" and "accepted: big, cpu" in str(e.value)


def test_the_quota_bounds_a_count_and_a_profile(monkeypatch):
    req = _member(monkeypatch)
    assert validate.check_spawn(req | {"gpus": 2}, _gpu_cfg()).gpus == 2
    for asked in ({"gpus": 3}, {"profile": "big"}):
        with pytest.raises(protocol.RequestError) as e:
            validate.check_spawn(req | asked, _gpu_cfg(quota=1))
        assert (e.value.code, e.value.field) == ("quota", next(iter(asked))) and "your quota is 1 GPU" in str(e.value)


def test_cpu_fallback_has_one_name_and_the_previous_hubs_is_still_read(monkeypatch):
    req = _member(monkeypatch)
    assert validate.check_spawn(req | {"cpu_fallback": True}, _gpu_cfg()).cpu_fallback is True
    assert validate.check_spawn(req | {protocol.OLD_FALLBACK: True}, _gpu_cfg()).cpu_fallback is True
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req | {"cpu_fallback": "yes"}, _gpu_cfg())
    assert e.value.field == "cpu_fallback"


def test_the_hubs_spawn_request_is_what_the_daemon_accepts(monkeypatch):
    common = dict(env={}, options={}, cpu_fallback=False, mem_limit=None, cpu_limit=None, readonly_paths=[],
                  readwrite_paths=[], extra={})
    _member(monkeypatch)
    with_profile = protocol.spawn_request("daemon", profile="big", gpus=2, **common)
    assert "gpus" not in with_profile and validate.check_spawn(with_profile, _gpu_cfg()).gpus == 2
    assert validate.check_spawn(protocol.spawn_request("daemon", profile=None, gpus=1, **common), _gpu_cfg()).gpus == 1
    assert set(with_profile) - {"op"} <= set(protocol.SPAWN_FIELDS)


def test_unit_name_is_derived_and_checked():
    assert users.unit_name("alice") == "jupyter-alice.service"
    assert users.user_of_unit("jupyter-alice.service") == "alice"
    assert users.user_of_unit("jupyter-../x.service") is None
    with pytest.raises(users.UserError):
        users.unit_name("a/b")


def test_environment_file_escapes_what_systemd_would_interpret(tmp_path):
    text = units.env_file_text({"B": 'say "hi" $HOME `x` \\n', "A": "plain"})
    assert text == 'A="plain"\nB="say \\"hi\\" \\$HOME \\`x\\` \\\\n"\n'
    path = units.write_env_file("jupyter-x.service", {"T": "secret"}, tmp_path / "env")
    assert oct(path.stat().st_mode & 0o777) == "0o400"
    assert oct((tmp_path / "env").stat().st_mode & 0o777) == "0o700"


def test_unit_properties_are_the_daemons_decision(monkeypatch):
    spec = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice",
                        options={"debug": True, "ServerApp.terminals_enabled": False},
                        mem_limit=2**30, cpu_limit=1.5, extra={"TasksMax": 200})
    props = dict(units.properties("jupyter-alice.service", spec, units.ENV_DIR / "x.env"))
    assert props["User"].value == "alice"
    assert props["DevicePolicy"].value == "closed"
    assert props["NoNewPrivileges"].value is True and props["PrivateTmp"].value is True
    assert props["Slice"].value == "jupyter-users.slice"
    assert props["ExecStart"].value[0][1] == [units.INTERPRETER, units.SINGLEUSER, "--KernelManager.transport=ipc",
                                              "--ServerApp.terminals_enabled=False", "--debug"]
    assert props["CPUQuotaPerSecUSec"].value == 1_500_000
    assert "Environment" not in props  # secrets only through the root-owned file


def test_a_server_sees_its_own_home_and_nobody_elses():
    spec = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice",
                        readwrite_paths=["/home/shared/course", "/scratch"], readonly_paths=["/root/data", "/opt/x"])
    props = {k: v.value for k, v in units.properties("jupyter-alice.service", spec, units.ENV_DIR / "x.env")}
    assert props["ProtectHome"] == "tmpfs" and props["ProtectProc"] == "invisible"
    # Bound back: the own home (it must exist) and what the hub names under the hidden homes (if there).
    assert props["BindPaths"] == [("/home/alice", "/home/alice", False, units.MS_REC),
                                  ("/home/shared/course", "/home/shared/course", True, units.MS_REC)]
    assert props["BindReadOnlyPaths"] == [("/root/data", "/root/data", True, units.MS_REC)]
    assert props["ReadWritePaths"] == ["/home/shared/course", "/scratch"]
    elsewhere = validate.SpawnSpec(user="bob", uid=1001, gid=1001, home="/srv/home/bob")  # not hidden: no bind
    props = dict(units.properties("jupyter-bob.service", elsewhere, units.ENV_DIR / "x.env"))
    assert "BindPaths" not in props and props["ProtectHome"].value == "tmpfs"


def test_jupyterlab_news_is_off_unless_the_administrator_turns_it_on():
    spec = validate.SpawnSpec(user="alice", uid=1001, gid=1001, home="/home/alice", env={"JUPYTERHUB_API_TOKEN": "t"})
    assert "JUPYTER_CONFIG_PATH" not in units.server_env(spec)
    assert units.server_env(spec, True)["JUPYTER_CONFIG_PATH"] == units.NEWS_ON_CONFIG
    spec.env["JUPYTER_CONFIG_PATH"] = "/opt/course/jupyter"  # the hub's own entries stay ahead
    assert units.server_env(spec, True)["JUPYTER_CONFIG_PATH"] == f"/opt/course/jupyter:{units.NEWS_ON_CONFIG}"


def test_a_server_binds_no_port_and_starts_only_on_the_one_its_socket_unit_holds():
    spec = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice", port=43210)
    props = dict(units.properties("jupyter-alice.service", spec, units.ENV_DIR / "x.env"))
    assert props["SocketBindDeny"].value == [(0, 0, 0, 0)] and "SocketBindAllow" not in props  # any bind refused
    assert props["Requires"].value == props["After"].value == ["jupyter-alice.socket"]
    sock = dict(units.socket_properties("jupyter-alice.service", 43210))
    assert sock["Listen"].value == [("Stream", "127.0.0.1:43210")] and sock["BindsTo"].value == ["jupyter-alice.service"]
    spec.port = None  # no service URL: no port at all
    props = dict(units.properties("jupyter-alice.service", spec, units.ENV_DIR / "x.env"))
    assert props["SocketBindDeny"].value == [(0, 0, 0, 0)] and "Requires" not in props


def test_a_server_moved_to_another_port_is_told_so_in_its_service_url():
    spec = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice", port=43210,
                              env={"JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:43210/user/alice/"})
    validate.move_to_port(spec, 50123)
    assert spec.port == 50123 and spec.env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:50123/user/alice/"


@pytest.mark.parametrize("url, port", [
    ("http://127.0.0.1:43210/user/alice/", 43210),
    ("http://localhost:2000/user/alice/", 2000),
])
def test_the_servers_port_comes_from_its_service_url(url, port):
    assert validate._server_port({"JUPYTERHUB_SERVICE_URL": url}, cfg()) == port
    assert validate._server_port({}, cfg()) is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8081/user/alice/",  # the hub's own port
    "http://127.0.0.1:8000/",  # the proxy's
    "http://127.0.0.1:80/",  # privileged
    "http://10.0.0.5:43210/",  # not loopback
    "https://127.0.0.1:43210/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1/",
    "not a url",
])
def test_a_service_url_elsewhere_is_refused(url):
    with pytest.raises(protocol.RequestError) as e:
        validate._server_port({"JUPYTERHUB_SERVICE_URL": url}, cfg())
    assert e.value.field == "env" and "JUPYTERHUB_SERVICE_URL must be http://127.0.0.1:PORT/" in str(e.value)


def test_kernel_sockets_live_in_a_short_runtime_directory_of_the_servers_own():
    """A unix socket's path has at most 107 bytes: a visitor's home is too deep for
    kernel-UUID-ipc-N under ~/.local/share/jupyter/runtime."""
    spec = validate.SpawnSpec(user="visitor-abcdefghij", uid=0, gid=0, home="/var/lib/jupyter-visitor-abcdefghij",
                        visitor=True)
    props = dict(units.properties("jupyter-visitor-abcdefghij.service", spec, units.ENV_DIR / "x.env"))
    assert props["RuntimeDirectory"].value == ["jupyter-visitor-abcdefghij"]
    assert props["RuntimeDirectoryMode"].value == 0o700
    runtime = units.server_env(spec)["JUPYTER_RUNTIME_DIR"]
    assert runtime == "/run/jupyter-visitor-abcdefghij"
    assert len(f"{runtime}/kernel-{'x' * 36}-ipc-5") < 107


def test_every_code_the_daemon_answers_is_a_documented_one():
    """protocol.ERROR_CODES is what a program may branch on: the daemon uses no other."""
    import ast
    from pathlib import Path

    used = set()
    for path in (Path(__file__).resolve().parents[2] / "appliance" / "daemon").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("RequestError", "error_reply"):
                assert isinstance(node.args[0], ast.Constant), f"{path.name}:{node.lineno}: a code must be literal"
                used.add(node.args[0].value)
    assert used and used <= set(protocol.ERROR_CODES), used - set(protocol.ERROR_CODES)
