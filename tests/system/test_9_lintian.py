"""lintian, Debian's package checker, passes on the built .deb: no error and no
warning, except what packaging/debian/lintian-overrides overrides, each with its
reason (the bundled virtualenvs). Runs on the host; needs no container."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci import in_ci


def test_lintian_finds_no_error_or_warning(deb: Path):
    if not shutil.which("lintian"):
        if in_ci():
            pytest.fail("CI must run lintian: apt-get install lintian (scripts/host-tools test)")
        pytest.skip("lintian is not installed (apt-get install lintian, or scripts/host-tools test)")
    r = subprocess.run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb)],
                       capture_output=True, text=True, timeout=1800)
    findings = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not findings, f"lintian exited {r.returncode}:\n{r.stdout}{r.stderr}"
