"""`sudo applctl config validate FILE` reads no file for its caller that the caller
may not read, and shows no value from any file (issue 26, item 4).
tests/system/test_7_sudo_path.py shows it on the booted appliance with /etc/shadow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from appliance import config
from appliance.cli import configcmd

from .cli_run import run

NOBODY = 65534
SECRET = "hunter2-never-shown"

real_root = pytest.mark.skipif(os.geteuid() != 0, reason="opening a file as another uid needs root")


@pytest.fixture
def own_config(tmp_path, monkeypatch):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nport = 8000\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    return path


@pytest.fixture
def under_sudo(monkeypatch):
    """As `sudo applctl` run by uid 65534 (nobody): root, with SUDO_UID and SUDO_GID."""
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))


@pytest.fixture
def shared_dir():
    """A directory anyone may enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="applctl-validate-"))
    d.chmod(0o755)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
    d.rmdir()


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("applctl: "), (code, out, err)
    assert "Traceback" not in err
    return err


@real_root
def test_a_file_the_caller_may_not_read_is_not_read(capsys, own_config, under_sudo, shared_dir):
    secret = shared_dir / "root-only.toml"
    secret.write_text(f'[hub]\npassword = "{SECRET}"\n')  # unknown key: root alone would name its value
    secret.chmod(0o600)
    err = one_line_error(*run(capsys, "config", "validate", str(secret)))
    assert "permission denied" in err and "reads FILE as you" in err and "no FILE for" in err
    assert SECRET not in err
    code, out, err = run(capsys, "config", "validate", "--json", str(secret))
    assert code == 1 and SECRET not in out + err


@real_root
def test_etc_shadow_is_not_shown(capsys, own_config, under_sudo):
    if not Path("/etc/shadow").exists():
        pytest.skip("no /etc/shadow on this machine")
    err = one_line_error(*run(capsys, "config", "validate", "/etc/shadow"))
    lines = [line for line in Path("/etc/shadow").read_text().splitlines() if line.strip()]
    assert not [line for line in lines if line in err or line.split(":")[1] in err.split()]
    assert "$y$" not in err and "$6$" not in err


@real_root
def test_the_callers_own_file_still_validates_and_its_values_are_not_shown(capsys, own_config, under_sudo,
                                                                           shared_dir):
    mine = shared_dir / "mine.toml"
    mine.write_text("[hub]\nport = 8080\n")
    bad = shared_dir / "bad.toml"
    bad.write_text(f'[hub]\nport = "{SECRET}"\n')
    for p in (shared_dir, mine, bad):
        os.chown(p, NOBODY, NOBODY)
    mine.chmod(0o600)
    bad.chmod(0o600)
    assert run(capsys, "config", "validate", str(mine)) == (0, f"{mine}: valid\n", "")
    err = one_line_error(*run(capsys, "config", "validate", str(bad)))
    assert err == f"applctl: {bad}: hub.port is not accepted: an integer from 1 to 65535\n"
    # And relative to the caller's directory, as they typed it.
    cwd = os.getcwd()
    try:
        os.chdir(shared_dir)
        assert run(capsys, "config", "validate", "mine.toml") == (0, "mine.toml: valid\n", "")
    finally:
        os.chdir(cwd)


@real_root
def test_a_link_to_another_file_is_followed_as_the_caller(capsys, own_config, under_sudo, shared_dir):
    secret = shared_dir / "secret.toml"
    secret.write_text(f'[x]\ny = "{SECRET}"\n')
    secret.chmod(0o600)
    link = shared_dir / "link.toml"
    link.symlink_to(secret)
    err = one_line_error(*run(capsys, "config", "validate", str(link)))
    assert "permission denied" in err and SECRET not in err


@real_root
def test_what_is_no_regular_file_is_refused_without_hanging(capsys, own_config, under_sudo, shared_dir):
    fifo = shared_dir / "fifo"
    os.mkfifo(fifo, 0o666)
    for path in (str(fifo), "/dev/zero", str(shared_dir)):
        err = one_line_error(*run(capsys, "config", "validate", path))
        assert "not a regular file" in err, err
    err = one_line_error(*run(capsys, "config", "validate", str(shared_dir / "absent.toml")))
    assert "no such file" in err


def test_the_appliances_own_file_is_read_as_root(capsys, own_config, under_sudo, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(configcmd, "read_as", lambda *a: pytest.fail("the own file is read directly"))
    assert run(capsys, "config", "validate") == (0, f"{own_config}: valid\n", "")
    assert run(capsys, "config", "validate", str(own_config)) == (0, f"{own_config}: valid\n", "")
    own_config.write_text(f'[hub]\nport = "{SECRET}"\n')
    err = one_line_error(*run(capsys, "config", "validate"))
    assert err == f"applctl: {own_config}: hub.port is not accepted: an integer from 1 to 65535\n"


def test_messages_without_values():
    def error(text: str) -> str:
        with pytest.raises(config.ConfigError) as e:
            config.loads(text, "/x.toml")
        return configcmd.without_values(e.value)
    assert error("root:$y$j9T$abcdef:19000:0:99999:7:::\n") == (
        f"/x.toml: not valid TOML (at line 1, column 5); give a TOML file such as {config.DEFAULT_PATH}")
    assert error(f'[{SECRET}]\na = 1\n').startswith(f"/x.toml: {SECRET} is not accepted: known sections are ")
    assert error(f'[hub]\nmode = "{SECRET}"\n').startswith("/x.toml: hub.mode is not accepted: one of ")
    assert error(f'[gpu]\nquota_users = {{ alice = "{SECRET}" }}\n') == (
        f"/x.toml: gpu.quota_users.alice is not accepted: an integer from 0 to {config.MAX_GPUS}")
    for text in (f'[hub]\nport = "{SECRET}"\n', f'[spawner]\nmem_limit = "{SECRET}"\n',
                 f'[profiles.a]\ndisplay_name = "A"\nmem_limit = "{SECRET}"\n', f'x = "{SECRET}"\n'):
        assert SECRET not in error(text), text


def test_root_itself_still_sees_the_value(capsys, own_config, tmp_path, monkeypatch):
    """Without sudo, root reads what it likes anyway: the full message stays."""
    monkeypatch.delenv("SUDO_UID", raising=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\nport = "x"\n')
    code, out, err = run(capsys, "config", "validate", str(bad))
    assert code == 1 and err == f"applctl: {bad}: hub.port = 'x' is not accepted: an integer from 1 to 65535\n"
