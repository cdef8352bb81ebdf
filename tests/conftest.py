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

# The booted appliance's fixtures (tests/system/booted.py), for tests/system and
# tests/packaging alike: one `appliance` for the session.
pytest_plugins = ["booted"]

_started = time.monotonic()
_seconds: dict[str, float] = defaultdict(float)
_module_seconds: dict[str, float] = defaultdict(float)  # test file -> wall time of its tests, fixtures included
_item_started: dict[str, float] = {}
DEBIAN_13 = "system (booted Debian 13)"
DIST_UPGRADE = "dist-upgrade (Debian 12 -> 13 in place, opt-in)"
# The opt-in tier: slow (the whole release is downloaded and upgraded), so it runs only
# when asked, with `scripts/test --dist-upgrade`, which sets this.
OPT_IN = "APPLIANCE_DIST_UPGRADE"
TOP_MODULES = 15  # how many of the biggest tier's modules the summary lists


def _tier(item_path: str) -> str:
    """The tier, by where a test runs: unit, the Arch package build, a booted Debian 13
    container (all of tests/system, and packaging's lintian and package lifecycle), the
    Debian 12 containers (packaging's releases and upgrade), the VM."""
    rel = Path(item_path).resolve().relative_to(HERE.resolve())
    if rel.parts[0] == "vm":
        return "real kernel (qemu VM)"
    if rel.name == "test_dist_upgrade.py":
        return DIST_UPGRADE
    if rel.parts[0] == "packaging" and rel.name in ("test_releases.py", "test_upgrade.py"):
        return "system (booted Debian 12, and the releases' refusals)"
    if rel.parts[0] == "system" or rel.name in ("test_lintian.py", "test_package_lifecycle.py",
                                                "test_package_contents.py"):
        return DEBIAN_13
    if rel.name in ("test_arch_package.py", "test_arch_aur.py"):
        return "arch package"
    return "unit"


def _order(item) -> int:
    """The tiers' order in a run: tests/system first (the .deb builds and lintian run
    in the background meanwhile), then the packaging tests on a booted Debian (the
    package lifecycle takes down the appliance tests/system used, so it comes after
    all of them), then the rest of tests/packaging (the Arch package's build, once the
    background work is done), the unit tests, and the VM last."""
    top = Path(str(item.fspath)).resolve().relative_to(HERE.resolve()).parts[0]
    if top == "packaging":
        return 1 if item.get_closest_marker("system") else 2
    return {"system": 0, "unit": 3, "vm": 4}.get(top, 3)


_left_out: list[str] = []  # the opt-in tier's tests, when not asked for


@pytest.hookimpl(tryfirst=True)  # before booted.py starts builds for what is collected
def pytest_collection_modifyitems(config, items):
    if not os.environ.get(OPT_IN):
        out = [item for item in items if item.get_closest_marker("dist_upgrade")]
        if out:
            _left_out.extend(item.nodeid for item in out)
            config.hook.pytest_deselected(items=out)
            items[:] = [item for item in items if not item.get_closest_marker("dist_upgrade")]
    items.sort(key=_order)  # stable: each directory's own order is kept


def pytest_runtest_logreport(report):
    _seconds[_tier(str(report.fspath))] += report.duration


def pytest_runtest_logstart(nodeid, location):
    _item_started[nodeid] = time.monotonic()


def pytest_runtest_logfinish(nodeid, location):
    started = _item_started.pop(nodeid, None)
    if started is not None:
        _module_seconds[nodeid.split("::")[0]] += time.monotonic() - started


def _biggest_tier_by_module(tr) -> None:
    """Where the booted Debian 13 tier's time goes: each test file's wall time, the
    sum of its tests' times from start to finish with setup and teardown (so the
    fixture that boots the container, installs the .deb or waits for a build counts
    in the module whose test first needs it)."""
    modules = {m: s for m, s in _module_seconds.items() if _tier(str(tr.config.rootpath / m)) == DEBIAN_13}
    if not modules:
        return
    total = sum(modules.values())
    tr.write_line(f"{DEBIAN_13}, wall time per test module ({min(TOP_MODULES, len(modules))} of {len(modules)}, "
                  f"{total:.0f} s in all):")
    for module, seconds in sorted(modules.items(), key=lambda kv: -kv[1])[:TOP_MODULES]:
        tr.write_line(f"  {seconds:6.0f} s  {100 * seconds / total:3.0f} %  {module}")


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
    if _left_out:
        tr.write_line(f"{DIST_UPGRADE}: not run ({len(_left_out)} test(s); scripts/test --dist-upgrade runs it)")
    _biggest_tier_by_module(tr)
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
