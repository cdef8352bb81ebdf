"""Fixtures of the tests on a booted Debian (tests/system, and the tests of
tests/packaging marked `system`): the built .deb, installed with apt into a booted
Debian 13 container (TESTING.md), with the appliance started on free ports.
packaging/test_releases.py and test_upgrade.py use Debian 12 containers of their own.

A plugin of tests/conftest.py (pytest_plugins), not a conftest of tests/system, so
that tests/packaging shares the one `appliance` of the session: its
test_package_lifecycle purges the package that tests/system installed (and finds
test_1_core's files kept), so it runs after them (tests/conftest.py orders the tiers).

Without root or nspawn these tests skip, saying why; under CI (CI set to anything, tests/ci.py) they fail
instead, because CI must run them all.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import debs  # noqa: E402
from container import DEFAULT_RELEASE, Container, ensure_base, missing_tools  # noqa: E402
from machine import OnMachine  # noqa: E402

from tests.ci import in_ci  # noqa: E402

HERE = Path(__file__).parent
TOP = Path(__file__).resolve().parents[2]
HUB_PY = "/usr/lib/jupyterhub-appliance/hub/bin/python"

USERS = {"alice": "wonderland-1", "bob": "builder-22", "carol": "carol-pass-3", "dave": "dave-pass-4"}


def booted(item) -> bool:
    """Whether the test needs a booted container: all of tests/system, and the tests
    marked `system` elsewhere (tests/packaging)."""
    return HERE in Path(item.fspath).parents or item.get_closest_marker("system") is not None


def pytest_collection_modifyitems(config, items):
    why = None
    if os.geteuid() != 0:
        why = "system tests need root (they boot a container with systemd-nspawn)"
    elif missing_tools():
        why = "system tests need " + ", ".join(missing_tools()) + " (apt-get install debootstrap systemd-container)"
    mine = [item for item in items if booted(item)]
    for item in mine:
        item.add_marker(pytest.mark.system)
        if why:
            if in_ci():
                raise pytest.UsageError(f"CI must run the system tests, but: {why}")
            item.add_marker(pytest.mark.skip(reason=why))
    if why:
        return
    names = {Path(item.fspath).name for item in mine}
    # What the later modules need is made while the earlier tests run: this tree's
    # default-release .deb first (the first test waits for it, and for the container
    # base, debootstrapped beside it), then one at a time (the machine may have 2
    # cores): lintian's verdict on it, Debian 12's .deb, lintian's verdict on that,
    # the previous version's .deb.
    if not names:
        return
    later = []
    if "test_lintian.py" in names:
        later.append(debs.lintian)
    if names & {"test_upgrade.py", "test_releases.py", "test_lintian.py", "test_dist_upgrade.py"}:
        later.append(lambda: debs.start("bookworm", one_at_a_time=True))
    if "test_lintian.py" in names:
        later.append(lambda: debs.lintian("bookworm"))
    if "test_upgrade.py" in names:
        import previous
        later.append(previous.start_in_background)
    debs.start().add_done_callback(lambda _: [start() for start in later])
    # The container base debootstraps meanwhile: mostly downloads.
    debs.in_background("container-base", lambda: ensure_base(DEFAULT_RELEASE))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the appliance's journal: the why is usually there."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    app = _appliance_of(item)
    if app is not None:
        journal = app.sh("journalctl -u 'jupyter*' -n 80 --no-pager", check=False).stdout
        report.sections.append(("appliance journal (last 80 lines)", journal))
        # A server that crashed while starting says why in its own unit's lines, which the
        # hub's polling of its spawn page pushes out of the 80 above.
        servers = app.sh("journalctl -u 'jupyter-*' -n 40 --no-pager", check=False).stdout
        report.sections.append(("users' servers' journal (last 40 lines)", servers))


def _appliance_of(item):
    """The booted appliance a test uses, whatever its fixture is called (some fixtures
    give a tuple with it first)."""
    for value in item.funcargs.values():
        for v in value if isinstance(value, tuple) else (value,):
            if hasattr(v, "sh") and hasattr(v, "ct"):
                return v
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Appliance(OnMachine):
    """The appliance in a container: sh, unit_props, wait_hub come from tests/machine.py."""

    ct: Container
    port: int
    hub_port: int
    proxy_api_port: int
    # Free ports for the other loopback listeners too: containers side by side share
    # the host's network.
    dashboard_port: int = field(default_factory=lambda: free_port())
    metrics_port: int = field(default_factory=lambda: free_port())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def machine(self) -> Container:
        return self.ct

    def config_text(self, extra: str = "", newer_ports: bool = True) -> str:
        """appliance.toml with this appliance's ports; newer_ports=False leaves out
        those 0.1.0 does not know (dashboard, metrics), for an older package."""
        newer = f"dashboard_port = {self.dashboard_port}\nmetrics_port = {self.metrics_port}\n" if newer_ports else ""
        return (f"[hub]\nport = {self.port}\nhub_port = {self.hub_port}\n"
                f"proxy_api_port = {self.proxy_api_port}\n{newer}{extra}")

    def daemon_request(self, request: str, user: str = "root"):
        """Send one raw request line to the daemon as `user`; returns the reply text."""
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); "
                "s.connect('/run/jupyterhub-appliance/daemon.sock'); s.sendall(sys.stdin.buffer.read()); "
                "print(s.makefile().readline())")
        return self.sh(f"{HUB_PY} -c \"{code}\"", user=None if user == "root" else user,
                       input=request + "\n", check=False)


@pytest.fixture(scope="session")
def appliance(deb: Path):
    ct = Container(f"sys{os.getpid()}")
    try:
        ct.boot()
        ct.install_deb(deb)
        app = Appliance(ct, free_port(), free_port(), free_port())
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
        for name, password in USERS.items():
            app.sh(f"useradd --create-home --shell /bin/bash {name}")
            app.sh("chpasswd", input=f"{name}:{password}\n")
        app.sh("systemctl daemon-reload && systemctl start jupyterhub")
        app.wait_hub()
        yield app
    finally:
        ct.destroy()
