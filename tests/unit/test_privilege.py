"""A jupyterhub-admin (sudo applctl) gets applctl, never a way to root; root may."""

import os
import pwd

import pytest

from appliance import config, privilege, root_only, users
from appliance.cli import access

from .cli_run import run
from .test_applctl_cli import as_root, cfgfile  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def login_defs(tmp_path, monkeypatch):
    defs = tmp_path / "login.defs"
    defs.write_text("# comment\nUID_MIN\t\t 1000\nUID_MAX 60000\n")
    monkeypatch.setattr(privilege, "LOGIN_DEFS", defs)


@pytest.fixture
def sudo(monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")


def test_uid_min_comes_from_login_defs(tmp_path):
    f = tmp_path / "login.defs"
    f.write_text("UID_MIN 500\n")
    assert privilege.uid_min(f) == 500
    assert privilege.uid_min(tmp_path / "missing") == 1000


def test_sudo_uid_is_the_caller_only_under_sudo(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert privilege.sudo_uid() is None
    monkeypatch.setenv("SUDO_UID", "0")  # root's own sudo
    assert privilege.sudo_uid() is None
    monkeypatch.setenv("SUDO_UID", "1234")
    assert privilege.sudo_uid() == 1234


@pytest.mark.parametrize("args, says", [
    (("config", "set", "daemon.min_uid", "100"), "UID_MIN is 1000"),
    (("config", "set", "daemon.allow_privileged_users", "true"), "only root"),
    (("config", "set", "daemon.privileged_groups", '["sudo"]'), "may only grow"),
])
def test_config_changes_that_open_a_way_to_root_are_refused_under_sudo(capsys, as_root, cfgfile, sudo, args, says):
    before = cfgfile.read_text()
    code, out, err = run(capsys, *args)
    assert code == 1 and says in err and "Traceback" not in err
    assert cfgfile.read_text() == before


def test_a_hand_edit_under_sudo_is_judged_the_same(as_root, cfgfile, sudo):
    from appliance import config_edit
    old = cfgfile.read_text()
    with pytest.raises(config_edit.EditError, match="UID_MIN"):
        config_edit.replace(cfgfile, "[daemon]\nmin_uid = 10\n", old)
    assert cfgfile.read_text() == old


def test_root_without_sudo_may_make_those_changes(capsys, as_root, cfgfile, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert run(capsys, "config", "set", "daemon.min_uid", "500")[0] == 0
    assert run(capsys, "config", "set", "daemon.allow_privileged_users", "true")[0] == 0
    assert config.load(cfgfile)["daemon"]["min_uid"] == 500


def test_under_sudo_a_safe_change_and_a_longer_list_are_fine(capsys, as_root, cfgfile, sudo):
    groups = list(root_only.PRIVILEGED_GROUPS) + ["gpu-root"]
    assert run(capsys, "config", "set", "daemon.privileged_groups", repr(groups).replace("'", '"'))[0] == 0
    assert run(capsys, "config", "set", "daemon.min_uid", "2000")[0] == 0
    # A low value root set earlier does not block an unrelated change.
    cfgfile.write_text("[daemon]\nmin_uid = 500\n")  # as root left it
    assert run(capsys, "config", "set", "hub.port", "8080")[0] == 0


def test_adduser_of_a_root_equivalent_account_is_refused_under_sudo(capsys, as_root, cfgfile, sudo, monkeypatch):
    name = pwd.getpwuid(os.getuid()).pw_name if os.getuid() >= 1000 else "nobody"
    monkeypatch.setattr(users, "groups_of", lambda n: ["users", "docker"])
    monkeypatch.setattr(access, "run", lambda *a, **k: pytest.fail("nothing may change"))
    code, out, err = run(capsys, "adduser", name)
    assert code == 1 and "docker" in err and "root in all but name" in err


def test_token_for_a_root_equivalent_account_is_refused_under_sudo(capsys, as_root, cfgfile, sudo, monkeypatch):
    monkeypatch.setattr(users, "groups_of", lambda n: ["sudo"])
    code, out, err = run(capsys, "token", "nobody")
    assert code == 1 and "root in all but name (a member of sudo" in err


def test_kernel_interpreters_anyone_but_root_can_change_are_refused_under_sudo(tmp_path, monkeypatch, sudo):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    d = tmp_path / "env" / "bin"
    d.mkdir(parents=True)
    python = d / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    for p in (tmp_path, tmp_path / "env", d):
        p.chmod(0o755)
    if os.getuid() == 0:
        privilege.check_executable(str(python))  # root's, in root's directories: accepted
    python.chmod(0o777)
    with pytest.raises(privilege.PrivilegeError, match="writable by others"):
        privilege.check_executable(str(python))
    python.chmod(0o755)
    if os.getuid() == 0:
        os.chown(d, 65534, 65534)
        with pytest.raises(privilege.PrivilegeError, match="owned by uid 65534"):
            privilege.check_executable(str(python))
        # A symlink into that directory is judged by where it leads, too.
        link = tmp_path / "python-link"
        link.symlink_to(python)
        with pytest.raises(privilege.PrivilegeError):
            privilege.check_executable(str(link))
    monkeypatch.delenv("SUDO_UID")
    privilege.check_executable(str(python))  # root itself may


@pytest.mark.skipif(os.getuid() != 0, reason="the environment must be root's, so the test makes it as root")
def test_a_kernel_environment_with_one_file_anyone_could_change_is_refused_under_sudo(tmp_path, monkeypatch, sudo):
    env = tmp_path / "venv"
    site = env / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to("/usr/bin/python3")  # out of the tree, to root's: fine
    (env / "lib64").symlink_to("lib")  # inside the tree: fine
    module = site / "module.py"
    module.write_text("")
    for p in (tmp_path, env, env / "bin", env / "lib", site.parent, site):
        p.chmod(0o755)
    python = str(env / "bin" / "python")
    privilege.check_executable(python)
    module.chmod(0o666)
    with pytest.raises(privilege.PrivilegeError, match=f"{module} is writable by others"):
        privilege.check_executable(python)
    module.chmod(0o644)
    os.chown(module, 65534, 65534)
    with pytest.raises(privilege.PrivilegeError, match=f"{module} is owned by uid 65534"):
        privilege.check_executable(python)
    os.chown(module, 0, 0)
    # A link inside the tree to a place someone else may change is refused too.
    outside = tmp_path / "theirs"
    outside.mkdir()
    os.chown(outside, 65534, 65534)
    (site / "extra").symlink_to(outside)
    with pytest.raises(privilege.PrivilegeError, match=f"{site / 'extra'} is a link to {outside}, which is owned"):
        privilege.check_executable(python)
    os.chown(outside, 0, 0)
    outside.chmod(0o1777)  # sticky: anyone could still add a module there
    with pytest.raises(privilege.PrivilegeError, match=f"{outside} is writable by others"):
        privilege.check_executable(python)
    monkeypatch.delenv("SUDO_UID")
    privilege.check_executable(python)  # root itself may
