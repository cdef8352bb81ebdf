"""lintian, Debian's package checker (the host's), passes on the default release's
.deb: no error and no warning, except what packaging/debian/lintian-overrides
overrides, each with its reason (the bundled virtualenvs). It runs on the host, in
the background from collection on (debs.lintian), since it takes minutes."""

from __future__ import annotations

import debs
import pytest

from tests.ci import in_ci


def test_lintian_finds_no_error_or_warning():
    # Started in the background when this module was collected (conftest.py).
    r = debs.lintian().result()
    if r is None:
        if in_ci():
            pytest.fail("CI must run lintian: apt-get install lintian (scripts/host-tools test)")
        pytest.skip("lintian is not installed (apt-get install lintian, or scripts/host-tools test)")
    findings = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not findings, f"lintian exited {r.returncode}:\n{r.stdout}{r.stderr}"
