"""What a jupyterhub-admin (sudo applctl) may not change in appliance.toml (issue 26,
item 8): an ephemeral.shared_dir that shows anonymous visitors the host (/proc/1/root,
/home, /etc, ...) or that anyone but root could fill or swap, and hub.mode. Each is
refused in one line that names the key, and the file stays as it was; root may."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance import config, config_edit, privilege

from .cli_run import run
from .test_applctl_cli import as_root, cfgfile  # noqa: F401 (fixtures)

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="makes directories owned by root and by others")


@pytest.fixture
def sudo(monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")


def refused(capsys, cfgfile: Path, *args: str) -> str:
    """applctl ARGS must fail in one line and leave the file as it was: that line."""
    before = cfgfile.read_text()
    code, out, err = run(capsys, *args)
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert err.startswith("applctl: ") and len(err.strip().splitlines()) == 1, err
    assert err.rstrip().endswith("; the file is unchanged"), err
    assert cfgfile.read_text() == before
    return err.strip()


def set_shared(capsys, cfgfile: Path, value: str) -> str:
    err = refused(capsys, cfgfile, "config", "set", "ephemeral.shared_dir", value)
    assert err.startswith(f"applctl: ephemeral.shared_dir = {value!r} is not accepted: "), err
    assert "accepted under sudo: an existing directory outside /proc, /sys, /dev, /run, /home, /root, /etc " \
           "and /var/lib, owned by root and writable only by root" in err, err
    return err


@pytest.fixture
def root_dir(tmp_path) -> Path:
    """A directory as root would make for a workshop: root's, 0755, in root's directories."""
    d = tmp_path / "srv" / "workshop"
    d.mkdir(parents=True)
    for p in (tmp_path, tmp_path / "srv", d):
        p.chmod(0o755)
    return d


# --- ephemeral.shared_dir ----------------------------------------------------------------

@pytest.mark.parametrize("path, why", [
    ("/proc", "it is /proc"),
    ("/proc/1/root", "it is inside /proc"),
    ("/proc/self/cwd", "it is inside /proc"),
    ("/sys", "it is /sys"),
    ("/sys/firmware", "it is inside /sys"),
    ("/dev", "it is /dev"),
    ("/dev/shm", "it is inside /dev"),
    ("/run", "it is /run"),
    ("/run/user/1000", "it is inside /run"),
    ("/home", "it is /home"),
    ("/home/alice/course", "it is inside /home"),
    ("/root", "it is /root"),
    ("/etc", "it is /etc"),
    ("/etc/ssh", "it is inside /etc"),
    ("/var/lib", "it is /var/lib"),
    ("/var/lib/jupyterhub", "it is inside /var/lib"),
    ("/var", "it holds /var/lib"),
])
def test_places_visitors_must_not_see_are_refused_under_sudo(capsys, as_root, cfgfile, sudo, path, why):
    err = set_shared(capsys, cfgfile, path)
    assert f"is not accepted: {why}; " in err, err


@needs_root
@pytest.mark.parametrize("target, why", [
    ("/etc", "it leads to /etc;"),
    ("/etc/ssh", "it leads to /etc/ssh, which is inside /etc"),
    # The whole host: "/" where root may read the link, refused as unresolvable where not.
    ("/proc/1/root", ("it leads to /, which holds /proc", "it cannot be resolved (Permission denied)")),
    ("/home", "it leads to /home;"),
    ("/var/lib", "it leads to /var/lib;"),
    ("/var", "it leads to /var, which holds /var/lib"),
])
def test_a_link_is_judged_by_where_it_leads(capsys, as_root, cfgfile, sudo, root_dir, target, why):
    link = root_dir.parent / "link"
    link.symlink_to(target)
    err = set_shared(capsys, cfgfile, str(link))
    assert any(w in err for w in ((why,) if isinstance(why, str) else why)), err


@needs_root
def test_a_link_through_a_linked_directory_is_resolved_too(capsys, as_root, cfgfile, sudo, root_dir):
    (root_dir.parent / "sys-link").symlink_to("/sys")
    err = set_shared(capsys, cfgfile, str(root_dir.parent / "sys-link" / "kernel"))
    assert "it leads to /sys/kernel, which is inside /sys" in err, err


@needs_root
def test_the_folder_must_exist_be_a_directory_and_be_roots_alone(capsys, as_root, cfgfile, sudo, root_dir):
    assert "it does not exist" in set_shared(capsys, cfgfile, str(root_dir / "absent"))
    f = root_dir / "file"
    f.write_text("x")
    assert "it is not a directory" in set_shared(capsys, cfgfile, str(f))
    d = root_dir / "theirs"
    d.mkdir(mode=0o755)
    os.chown(d, 1234, 1234)
    assert "it is owned by uid 1234, not root" in set_shared(capsys, cfgfile, str(d))
    os.chown(d, 0, 0)
    d.chmod(0o775)
    assert "it is writable by its group (mode 0775)" in set_shared(capsys, cfgfile, str(d))
    d.chmod(0o757)
    assert "it is writable by others (mode 0757)" in set_shared(capsys, cfgfile, str(d))
    d.chmod(0o1777)
    assert "it is writable by others (mode 1777)" in set_shared(capsys, cfgfile, str(d))


@needs_root
def test_a_directory_above_it_must_be_roots_too(capsys, as_root, cfgfile, sudo, root_dir):
    above = root_dir.parent
    os.chown(above, 1234, 1234)  # its owner could move workshop away and put a link to / in its place
    assert f"{above} above it is owned by uid 1234, not root" in set_shared(capsys, cfgfile, str(root_dir))
    os.chown(above, 0, 0)
    above.chmod(0o777)
    assert f"{above} above it is writable by others" in set_shared(capsys, cfgfile, str(root_dir))
    above.chmod(0o1777)  # sticky, as /tmp: nobody else may rename root's folder in it
    assert run(capsys, "config", "set", "ephemeral.shared_dir", str(root_dir))[0] == 0


@needs_root
def test_a_link_to_a_directory_owned_by_someone_else_is_refused(capsys, as_root, cfgfile, sudo, root_dir):
    theirs = root_dir.parent / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 1234, 1234)
    link = root_dir / "link"
    link.symlink_to(theirs)
    err = set_shared(capsys, cfgfile, str(link))
    assert "it is owned by uid 1234, not root" in err


@needs_root
def test_roots_directory_is_accepted_under_sudo_and_unset_always(capsys, as_root, cfgfile, sudo, root_dir):
    assert run(capsys, "config", "set", "ephemeral.shared_dir", str(root_dir))[0] == 0
    assert config.load(cfgfile)["ephemeral"]["shared_dir"] == str(root_dir)
    link = root_dir.parent / "current"
    link.symlink_to(root_dir)  # a link root made, to root's directory
    assert run(capsys, "config", "set", "ephemeral.shared_dir", str(link))[0] == 0
    assert run(capsys, "config", "unset", "ephemeral.shared_dir")[0] == 0
    assert config.load(cfgfile)["ephemeral"]["shared_dir"] == ""


def test_a_hand_edit_under_sudo_is_judged_the_same(as_root, cfgfile, sudo):
    old = cfgfile.read_text()
    with pytest.raises(config_edit.EditError, match=r"^ephemeral.shared_dir = '/proc/1/root' is not accepted: "
                       r"it is inside /proc; .*; the file is unchanged$"):
        config_edit.replace(cfgfile, old + '[ephemeral]\nshared_dir = "/proc/1/root"\n', old)
    assert cfgfile.read_text() == old


def test_what_root_set_earlier_does_not_block_another_change(capsys, as_root, cfgfile, sudo):
    cfgfile.write_text('[ephemeral]\nshared_dir = "/etc"\n')  # as root left it
    assert run(capsys, "config", "set", "ephemeral.max_visitors", "30")[0] == 0
    assert config.load(cfgfile)["ephemeral"]["max_visitors"] == 30


def test_root_may_set_any_folder(capsys, as_root, cfgfile, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert run(capsys, "config", "set", "ephemeral.shared_dir", "/srv/not-yet-there")[0] == 0
    assert config.load(cfgfile)["ephemeral"]["shared_dir"] == "/srv/not-yet-there"


def test_root_in_a_sudo_of_its_own_is_root(capsys, as_root, cfgfile, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "0")
    assert run(capsys, "config", "set", "ephemeral.shared_dir", "/var/lib/course")[0] == 0


def test_check_shared_dir_is_silent_for_root_and_for_none(monkeypatch, sudo):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    privilege.check_shared_dir("")  # "" is no folder at all
    monkeypatch.delenv("SUDO_UID")
    privilege.check_shared_dir("/proc/1/root")


# --- hub.mode ------------------------------------------------------------------------------

MODE_REFUSAL = ("applctl: hub.mode decides who gets a server: people with an account, or anyone who opens the "
                "hub's address, with no login, so only root may change it (a root login, not sudo applctl); "
                "it stays {}; the file is unchanged")


def test_an_admin_cannot_switch_to_ephemeral(capsys, as_root, cfgfile, sudo):
    err = refused(capsys, cfgfile, "config", "set", "hub.mode", "ephemeral")
    assert err == MODE_REFUSAL.format("'accounts'")


@pytest.mark.parametrize("args", [("config", "set", "hub.mode", "accounts"), ("config", "unset", "hub.mode")])
def test_an_admin_cannot_switch_back_either(capsys, as_root, cfgfile, sudo, args):
    cfgfile.write_text('[hub]\nmode = "ephemeral"\n')  # as root left it
    assert refused(capsys, cfgfile, *args) == MODE_REFUSAL.format("'ephemeral'")


def test_an_admin_cannot_switch_by_editing_the_file(as_root, cfgfile, sudo):
    old = cfgfile.read_text()
    with pytest.raises(config_edit.EditError, match="^hub.mode decides who gets a server"):
        config_edit.replace(cfgfile, old.replace("[hub]\n", '[hub]\nmode = "ephemeral"\n'), old)
    assert cfgfile.read_text() == old


def test_an_admin_may_change_other_keys_of_either_mode(capsys, as_root, cfgfile, sudo):
    cfgfile.write_text('[hub]\nmode = "ephemeral"\n')
    assert run(capsys, "config", "set", "hub.port", "8080")[0] == 0
    assert run(capsys, "config", "set", "hub.mode", "ephemeral")[0] == 0  # no change: nothing to refuse
    assert config.load(cfgfile)["hub"]["mode"] == "ephemeral"


def test_root_may_switch_modes(capsys, as_root, cfgfile, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    assert run(capsys, "config", "set", "hub.mode", "ephemeral")[0] == 0
    assert run(capsys, "config", "set", "hub.mode", "accounts")[0] == 0
    assert config.load(cfgfile)["hub"]["mode"] == "accounts"


def test_the_root_only_keys_are_the_tokens_cap_the_mode_the_secrets_file_the_gpu_group_and_what_visitors_see():
    # and who logs in as whom: the login method and every single sign-on key but scopes
    oidc = [("oidc", k) for k in config.SCHEMA["oidc"] if k != "scopes"]
    assert config.root_only_keys() == [("hub", "mode"), ("spawner", "environment_file"), ("gpu", "device_group"),
                                       ("ephemeral", "visible_paths"), ("auth", "type"), *oidc,
                                       ("tokens", "max_days_under_sudo"), ("cluster", "engine"),
                                       ("cluster", "account")]


def test_an_admin_under_sudo_cannot_move_servers_to_slurm_or_charge_another_account(capsys, as_root, cfgfile, sudo):
    err = refused(capsys, cfgfile, "config", "set", "cluster.engine", "slurm")
    assert "cluster.engine decides where every server runs" in err and "only root" in err, err
    err = refused(capsys, cfgfile, "config", "set", "cluster.account", "physics")
    assert "cluster.account decides which Slurm account pays for every server" in err, err
    assert run(capsys, "config", "set", "cluster.partition", "gpu")[0] == 0  # the rest is the admins'


def test_an_admin_under_sudo_cannot_show_visitors_a_folder(capsys, as_root, cfgfile, sudo):
    err = refused(capsys, cfgfile, "config", "set", "ephemeral.visible_paths", '["/srv/data"]')
    assert "ephemeral.visible_paths" in err and "only root" in err, err


# --- daemon.min_uid (issue 26, item 1): for root too ------------------------------------

@pytest.mark.parametrize("uid", ["60001", "61184", "65519", "65534", "65535", "524288", "2147483647"])
@pytest.mark.parametrize("who", ["root", "sudo"])
def test_a_min_uid_above_the_people_is_refused_in_one_line(capsys, as_root, cfgfile, monkeypatch, uid, who):
    if who == "root":
        monkeypatch.delenv("SUDO_UID", raising=False)
    else:
        monkeypatch.setenv("SUDO_UID", "1234")
    err = refused(capsys, cfgfile, "config", "set", "daemon.min_uid", uid)
    assert err.startswith(f"applctl: {cfgfile}: daemon.min_uid = {uid} is not accepted: an integer from 1 to 60000 "
                          "(UID_MAX of login.defs); above it are systemd's dynamic users (61184-65519), nobody "
                          "(65534) and containers, not people"), err
