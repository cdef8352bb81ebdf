"""`sudo applctl` runs nothing the caller chose: its helpers by full path, from the
system's own directories, and a clean environment (issue 26, item 3).
tests/system/test_7_sudo_path.py shows the same on the booted appliance."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from appliance import tools
from appliance.cli import entry, host
from appliance.revproxy import install

TOP = Path(__file__).resolve().parents[2]


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A directory on PATH, first, with a 'systemctl' of the caller's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "journalctl", "openssl"):
        (bin_dir / name).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{name}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_a_helper_is_found_in_the_system_directories_only(planted):
    for name in ("systemctl", "journalctl"):
        path = tools.tool(name)
        assert os.path.isabs(path) and path.endswith("/" + name)
        assert os.path.dirname(path) in tools.SAFE_PATH.split(":"), path
        assert not path.startswith(str(planted))


def test_a_missing_helper_fails_as_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(tools, "SAFE_PATH", str(tmp_path))
    assert tools.tool("useradd") == f"{tmp_path}/useradd"
    with pytest.raises(host.Failure, match="^useradd is not installed$"):
        host.run(["useradd", "x"])


def test_only_the_named_helpers_are_run():
    with pytest.raises(ValueError, match="not one of the helpers"):
        tools.tool("sh")
    assert tools.resolved(["/bin/true", "x"]) == ["/bin/true", "x"]
    assert tools.resolved(["gpasswd", "-a", "u", "g"])[0] == tools.tool("gpasswd")


def test_the_run_wrappers_run_the_full_path(planted, monkeypatch):
    seen = []

    def fake(argv, **kw):
        seen.append(argv[0])
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(subprocess, "run", fake)
    host.run(["systemctl", "daemon-reload"])
    host.unit_props("jupyterhub.service", "ActiveState")
    host.last_run_journal("jupyterhub.service")
    install.is_active("nginx.service")
    assert seen and all(os.path.isabs(p) and not p.startswith(str(planted)) for p in seen), seen


# Every call that starts a program, in what applctl runs (the hub's and the daemon's
# code run under systemd, with their units' environment).
STARTERS = {("subprocess", n) for n in ("run", "call", "check_call", "check_output", "Popen")} | {
    ("os", n) for n in ("execv", "execve", "execvp", "execvpe", "execl", "execlp", "execlpe", "spawnv",
                        "spawnvp", "system", "popen")}


def _bare_program_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in STARTERS):
            continue
        if node.func.attr in ("execvp", "execvpe", "execlp", "execlpe", "spawnvp", "system", "popen"):
            found.append(f"{path}:{node.lineno}: {node.func.attr} searches PATH")
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, (ast.List, ast.Tuple)) and first.elts:
            first = first.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("/"):
            found.append(f"{path}:{node.lineno}: runs {first.value!r} by name")
    return found


def test_no_program_is_started_by_a_bare_name():
    files = [p for p in (TOP / "appliance").rglob("*.py")
             if not {"hub", "daemon"} & set(p.relative_to(TOP / "appliance").parts[:-1])]
    assert len(files) > 20
    bare = [hit for p in files for hit in _bare_program_calls(p)]
    assert not bare, "start these through appliance.tools (tool(NAME) or resolved(argv)):\n" + "\n".join(bare)


def test_the_scan_sees_a_bare_name(tmp_path):
    bad = tmp_path / "example.py"
    bad.write_text('import os, subprocess\nsubprocess.run(["systemctl", "x"])\nos.execvpe("a", ["a"], {})\n'
                   'subprocess.run([tool("systemctl"), "x"])\nos.execve("/usr/bin/a", ["a"], {})\n')
    assert len(_bare_program_calls(bad)) == 2


def test_the_environment_is_reset(monkeypatch):
    caller = {
        "PATH": "/home/mallory/bin:/usr/bin", "HOME": "/home/mallory", "USER": "mallory",
        "PYTHONPATH": "/home/mallory/py", "PYTHONSTARTUP": "/home/mallory/s.py", "PYTHONINSPECT": "1",
        "LD_PRELOAD": "/home/mallory/x.so", "PAGER": "sh -c id", "SYSTEMD_PAGER": "sh", "LESSOPEN": "|sh %s",
        "TMPDIR": "/home/mallory/tmp", "SYSTEMD_EDITOR": "sh", "BASH_ENV": "/home/mallory/.x",
        "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "/home/mallory/locale", "LC_TIME": "en_GB.UTF-8",
        "TZ": "Europe/Berlin", "NO_COLOR": "1", "SUDO_UID": "1001", "SUDO_GID": "1001", "SUDO_USER": "mallory",
        "EDITOR": "nano", "_APPLCTL_COMPLETE": "bash_complete",
    }
    clean = entry.clean_environment(caller, euid=0)
    assert clean == {
        "PATH": tools.SAFE_PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root",
        "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_TIME": "en_GB.UTF-8", "TZ": "Europe/Berlin",
        "NO_COLOR": "1", "SUDO_UID": "1001", "SUDO_GID": "1001", "SUDO_USER": "mallory", "EDITOR": "nano",
        "_APPLCTL_COMPLETE": "bash_complete",
    }
    assert entry.clean_environment({"TZ": "/home/mallory/zone"}, euid=0).get("TZ") is None


def test_the_installed_entry_resets_the_environment_before_the_commands_load(monkeypatch):
    order = []
    monkeypatch.setattr(entry, "reset_environment", lambda: order.append("reset"))
    import appliance.cli.app as app
    monkeypatch.setattr(app, "main", lambda: order.append("run"))
    entry.main()
    assert order == ["reset", "run"]


def test_the_staged_applctl_runs_python_isolated_through_the_entry():
    """scripts/stage-tree writes /usr/lib/jupyterhub-appliance/hub/bin/applctl (what
    /usr/bin/applctl links to) for both packages; see test_arch_package for the built one."""
    text = (TOP / "scripts" / "stage-tree").read_text()
    assert 'echo "#!$lib/hub/bin/python -I"' in text
    assert 'echo "from appliance.cli.entry import main"' in text
    assert '> "$dest$lib/hub/bin/applctl"' in text
    assert 'ln -sf "../lib/jupyterhub-appliance/hub/bin/applctl" "$dest/usr/bin/applctl"' in text


def test_the_sudoers_drop_in_resets_the_environment_and_path():
    text = (TOP / "etc" / "sudoers.d" / "jupyterhub-appliance").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == ['Defaults!/usr/bin/applctl env_reset, secure_path="/usr/sbin:/usr/bin:/sbin:/bin"',
                     "%jupyterhub-admins ALL=(root) /usr/bin/applctl"]
    assert tools.SAFE_PATH in rules[0]
    visudo = tools.tool("visudo")
    if os.path.exists(visudo):
        r = subprocess.run([visudo, "-cf", str(TOP / "etc" / "sudoers.d" / "jupyterhub-appliance")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_the_editor_is_looked_up_in_the_system_and_local_directories_only(planted, monkeypatch, tmp_path):
    from appliance.cli import configcmd
    local = tmp_path / "local"
    local.mkdir()
    for d in (planted / "bin", local):
        (d / "myedit").write_text("#!/bin/sh\n")
        (d / "myedit").chmod(0o755)
    monkeypatch.setattr(configcmd, "EDITOR_PATH", str(local))
    monkeypatch.setenv("EDITOR", "myedit -w")
    assert configcmd.editor_command() == [str(local / "myedit"), "-w"]
    assert configcmd.EDITOR_PATH != tools.SAFE_PATH
    monkeypatch.setattr(configcmd, "EDITOR_PATH", "/usr/local/sbin:/usr/local/bin:" + tools.SAFE_PATH)
    assert not configcmd.editor_command()[0].startswith(str(planted))
