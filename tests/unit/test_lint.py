"""Lint as part of the tests, so that a lint error fails CI: ruff (pyflakes,
pycodestyle, bugbear, isort; configured in pyproject.toml) over the Python, and
shellcheck over every shell script, following what they source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci import in_ci

TOP = Path(__file__).resolve().parents[2]
SHELL_PLACES = ["scripts", "packaging/debian", ".ci"]


def shell_scripts() -> list[Path]:
    found = []
    for place in SHELL_PLACES:
        for path in sorted((TOP / place).iterdir()):
            if path.is_file():
                first = path.read_bytes()[:64].split(b"\n")[0]
                if first.startswith(b"#!") and (first.endswith(b"/sh") or first.endswith(b"bash")):
                    found.append(path)
    return found


def test_ruff():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is not in the test venv: it is pinned in requirements/test.txt (scripts/test installs it)"
    proc = subprocess.run([str(ruff), "check", "--no-cache", str(TOP)], capture_output=True, text=True, cwd=TOP)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", shell_scripts(), ids=lambda p: p.relative_to(TOP).as_posix())
def test_shellcheck(path):
    if shutil.which("shellcheck") is None:
        if in_ci():
            pytest.fail("needs shellcheck (scripts/host-tools installs it), and CI must run this test", pytrace=False)
        pytest.skip("needs shellcheck (apt-get install shellcheck)")
    # From the top, where the scripts' `. scripts/...` sources resolve.
    proc = subprocess.run(["shellcheck", "-x", str(path.relative_to(TOP))], capture_output=True, text=True, cwd=TOP)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_shell_script_is_checked():
    names = {p.relative_to(TOP).as_posix() for p in shell_scripts()}
    assert {"scripts/test", "scripts/build-deb", "packaging/debian/postinst", ".ci/run"} <= names, names
