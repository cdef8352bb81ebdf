"""What every run prints last: where the time went and which tiers ran.

A tier that could not run (no root, no nspawn, no qemu) is named here, in the
last lines, never skipped in silence.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "system"))
import container  # noqa: E402
import debs  # noqa: E402

_started = time.monotonic()
_seconds: dict[str, float] = defaultdict(float)


def _tier(item_path: str) -> str:
    rel = Path(item_path).resolve().relative_to(HERE.resolve())
    if rel.parts[0] == "system":
        if rel.name in ("test_9_releases.py", "test_9_upgrade.py"):
            return "system (booted Debian 12, and the releases' refusals)"
        return "system (booted Debian 13)"
    if rel.parts[0] == "vm":
        return "real kernel (qemu VM)"
    if rel.name in ("test_arch_package.py", "test_arch_aur.py"):
        return "arch package"
    return "unit"


def pytest_runtest_logreport(report):
    _seconds[_tier(str(report.fspath))] += report.duration


def pytest_terminal_summary(terminalreporter):
    ran: dict[str, int] = defaultdict(int)
    skipped: dict[str, set[str]] = defaultdict(set)
    for outcome in ("passed", "failed", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "call") == "call" or outcome == "error":
                ran[_tier(str(rep.fspath))] += 1
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        skipped[_tier(str(rep.fspath))].add(reason.removeprefix("Skipped: "))
    tr = terminalreporter
    tr.section("tiers and time")
    if os.environ.get("APPLIANCE_TIMES"):
        tr.write_line(f"setup: {os.environ['APPLIANCE_TIMES']}")
    if debs.seconds:  # builds, overlapping the tests that did not wait for them
        tr.write_line("builds: " + ", ".join(f"{name} {s:.0f} s" for name, s in sorted(debs.seconds.items())))
    for line in debs.build_lines:
        tr.write_line(f"  {line}")
    if container.bootstrapped:
        tr.write_line("container bases debootstrapped: " +
                      ", ".join(f"{r} {s:.0f} s" for r, s in sorted(container.bootstrapped.items())))
    for tier in sorted(set(ran) | set(skipped) | set(_seconds)):
        line = f"{tier}: {ran.get(tier, 0)} tests, {_seconds.get(tier, 0):.0f} s"
        if skipped.get(tier):
            line += f"; SKIPPED: {'; '.join(sorted(skipped[tier]))}"
        tr.write_line(line)
    tr.write_line(f"pytest wall time: {time.monotonic() - _started:.0f} s")


@pytest.fixture(scope="session")
def deb() -> Path:
    """The .deb of this tree for the default release (Debian 13), or APPLIANCE_DEB;
    for the system and VM tiers, built once per run (tests/system/debs.py)."""
    return debs.deb()


@pytest.fixture(scope="session")
def deb_bookworm() -> Path:
    """The .deb of this tree for Debian 12, or APPLIANCE_DEB_BOOKWORM."""
    return debs.deb("bookworm")
