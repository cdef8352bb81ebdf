"""Fixtures of the real-kernel tier: the built .deb installed with apt into a Debian
13 VM under qemu (KVM, or its emulator where KVM cannot boot Debian's kernel; vm.py),
the hub on a port forwarded to the host.

Without root or qemu these tests skip, saying why (named in the run's last lines);
under CI they fail instead, because CI must run them all.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "system"))
import vm  # noqa: E402
from machine import OnMachine  # noqa: E402
from vm import PASSWORD, VM, accelerator, missing, prepare_in_background  # noqa: E402

from tests.ci import in_ci  # noqa: E402


def pytest_collection_modifyitems(config, items):
    why = missing()
    mine = [item for item in items if HERE in Path(item.fspath).parents]
    for item in mine:
        item.add_marker(pytest.mark.vm)
        if why:
            if in_ci():
                raise pytest.UsageError(f"CI must run the VM tier, but: {why}")
            item.add_marker(pytest.mark.skip(reason=why))
    if mine and not why:
        prepare_in_background()


def pytest_terminal_summary(terminalreporter):
    accel, why = accelerator()
    if why != "not yet booted":
        terminalreporter.write_line(f"real kernel (qemu VM) ran on {why}")
    if vm.image_seconds is not None:
        terminalreporter.write_line(f"VM image made in {vm.image_seconds:.0f} s (in the background from collection on)")


@dataclass
class VMAppliance(OnMachine):
    """The appliance in the VM: sh, unit_props, wait_hub come from tests/machine.py."""

    vm: VM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.vm.ports[8000]}"

    @property
    def machine(self) -> VM:
        return self.vm

    def configure(self, toml: str) -> None:
        # Emulated (TCG) and under a CPU quota, JupyterLab can take minutes to answer.
        self.vm.write("/etc/jupyterhub/appliance.toml", "[spawner]\nstart_timeout = 300\nhttp_timeout = 300\n" + toml)
        self.sh("applctl reload")
        self.wait_hub()

    def add_user(self, name: str) -> None:
        self.sh(f"id {name} >/dev/null 2>&1 || useradd -m {name}; echo {name}:{PASSWORD} | chpasswd; "
                f"applctl adduser {name} >/dev/null 2>&1 || true")

    def wait_hub(self, timeout: float = 120) -> None:
        super().wait_hub(timeout)  # emulated, the hub takes longer


@pytest.fixture(scope="session")
def machine(deb: Path):
    vm = VM(f"t{os.getpid()}", forward=(8000,))
    try:
        vm.boot()
        vm.copy_in(deb, "/root/appliance.deb")
        vm.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/appliance.deb >/dev/null", timeout=900)
        m = VMAppliance(vm)
        m.vm.write("/etc/jupyterhub/appliance.toml", "")
        m.sh("systemctl enable --now jupyterhub >/dev/null 2>&1")
        m.wait_hub()
        yield m
    finally:
        vm.destroy()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the VM's appliance journal: the why is usually there."""
    outcome = yield
    report = outcome.get_result()
    m = item.funcargs.get("machine")
    if report.failed and m is not None:
        journal = m.sh("journalctl -u 'jupyter*' -n 80 --no-pager", check=False).stdout
        report.sections.append(("VM journal (last 80 lines)", journal))
