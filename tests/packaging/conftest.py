"""The Arch package's build starts in the background at collection, one build at a
time after the Debian packages' (tests/system/debs.py), instead of when its first
test runs: about a minute and a half of the run's wall time, which the booted
tiers' waits (culler timeouts, restarts) now cover."""

from __future__ import annotations

import os
from pathlib import Path

import debs
from test_arch_package import ARCH_JOB, build, can_build

SYSTEM = Path(__file__).resolve().parents[1] / "system"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("APPLIANCE_ARCH_PKG") or not can_build():
        return  # given, or its fixture says what is missing
    if not any(Path(str(item.fspath)).name == "test_arch_package.py" for item in items):
        return
    # After this tree's .deb, which the first booted test waits for.
    first = debs.start() if any(SYSTEM in Path(str(item.fspath)).parents for item in items) else None
    debs.in_background(ARCH_JOB, build, one_at_a_time=True, after=first)
