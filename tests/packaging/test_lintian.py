"""lintian, Debian's package checker, passes on each release's .deb: no error and
no warning, except what packaging/debian/lintian-overrides overrides, each with its
reason (the bundled virtualenvs). Each .deb is judged by its own release's lintian
(scripts/lintian-deb, in a chroot of that release), not the host's: their checks
differ (trixie's flags /lib paths that bookworm's accepts). Started in the
background from collection on (debs.lintian, tests/system/booted.py), since each takes minutes."""

from __future__ import annotations

import debs
import pytest
from container import RELEASES

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system


@pytest.mark.parametrize("release", list(RELEASES))
def test_lintian_finds_no_error_or_warning(release):
    r = debs.lintian(release).result()
    findings = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not findings, \
        f"scripts/lintian-deb --release {release} exited {r.returncode}:\n{r.stdout}{r.stderr}"
