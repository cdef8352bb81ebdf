"""Both Debian releases. The full suite runs on Debian 13 (trixie), the default;
here the Debian 12 (bookworm) package is installed on Debian 12, from the signed
apt repository as README says (the key with signed-by=, the bookworm suite), and
runs the login journey and the GPU isolation test, and each release's package is
refused, with a message that says what to install, on the other release, changing
nothing.
"""

from __future__ import annotations

import os

import apt_repo
import pytest
from booted import Appliance, free_port
from container import RELEASES, Container
from gpus import GPUS, PASSWORD, UUID, device_access, fake_config, holders, install_fake_gpus, spawn

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system


def package_state(ct: Container) -> str:
    """dpkg's state of the package ("installed", "not-installed", "half-installed", ...)."""
    out = ct.run("dpkg-query -W -f='${Status}' jupyterhub-appliance", check=False).stdout.split()
    return out[-1] if out else "not-installed"


def refused_on(ct: Container, deb, built_for: str) -> None:
    """apt and dpkg both refuse `deb` on this container's release, and leave no trace."""
    ct.copy_in(deb, f"/root/{deb.name}")
    apt = ct.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y /root/{deb.name} </dev/null", check=False)
    assert apt.returncode != 0
    # apt stops at the Depends: the Python minor version the package's venvs were built with.
    assert "jupyterhub-appliance : Depends: python3 (" in apt.stdout + apt.stderr, apt.stdout + apt.stderr
    # dpkg -i gets past Depends to the preinst, which says what to install instead.
    dpkg = ct.run(f"dpkg -i /root/{deb.name} </dev/null", check=False)
    said = dpkg.stdout + dpkg.stderr
    assert dpkg.returncode != 0
    assert f"is built for {RELEASES[built_for]} ({built_for})" in said, said
    assert f"this machine runs {RELEASES[ct.release]} ({ct.release})" in said, said
    right = "+deb" + RELEASES[ct.release].split()[-1] + "_amd64.deb"  # this machine's package
    assert f"install jupyterhub-appliance_{deb.name.split('_')[1].split('+')[0]}{right}" in said, said
    assert "Nothing was changed" in said, said
    assert package_state(ct) == "not-installed"
    assert ct.run("test -e /etc/jupyterhub || test -e /usr/lib/jupyterhub-appliance || getent passwd jupyterhub",
                  check=False).returncode != 0, "the refused package left files or its user behind"


@pytest.fixture(scope="module")
def bookworm(deb, deb_bookworm):
    """A Debian 12 container; the tests below install into it in order."""
    ct = Container(f"bkw{os.getpid()}", release="bookworm")
    try:
        ct.boot()
        yield ct
    finally:
        ct.destroy()


def test_the_debian_13_package_is_refused_on_debian_12(bookworm, deb):
    refused_on(bookworm, deb, "trixie")


def test_the_debian_12_package_is_refused_on_debian_13(deb_bookworm):
    ct = Container(f"tri{os.getpid()}", release="trixie")
    try:
        ct.boot()
        refused_on(ct, deb_bookworm, "bookworm")
    finally:
        ct.destroy()


@pytest.fixture(scope="module")
def app12(bookworm, deb_bookworm, tmp_path_factory):
    with apt_repo.served([deb_bookworm], tmp_path_factory.mktemp("apt")) as repo:
        repo.install_in(bookworm, "bookworm")
        repo.update_in(bookworm)
        got = bookworm.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                           "jupyterhub-appliance").stdout
    assert f"{repo.url} bookworm/main amd64 jupyterhub-appliance" in got, got
    assert bookworm.run("dpkg-query -W -f='${Version}' jupyterhub-appliance").stdout.endswith("+deb12")
    app = Appliance(bookworm, free_port(), free_port(), free_port())
    install_fake_gpus(app, tmp_path_factory, fake_config())
    bookworm.write("/etc/jupyterhub/appliance.toml", app.config_text("[gpu]\nquota = 1\nqueue = false\n"))
    for name in ("alice", "gina", "hank"):
        app.sh(f"useradd -m {name} && echo {name}:{PASSWORD} | chpasswd && applctl adduser {name} >/dev/null")
    app.sh("systemctl daemon-reload && systemctl restart jupyterhub-appliance.service && systemctl start jupyterhub")
    app.wait_hub()
    return app


def test_on_debian_12_alice_logs_in_and_runs_code(app12):
    b, ready, messages = spawn(app12, "alice", {"gpus": "0"})
    assert ready, messages
    b.wait_for_server("alice")
    kernel = b.start_kernel("alice")
    out = b.execute("alice", kernel, "import os, pwd, sys; print(pwd.getpwuid(os.getuid()).pw_name, 6 * 7, "
                                     "sys.version_info[:2])")
    assert out.strip() == "alice 42 (3, 11)"  # Debian 12's python, in the server's environment


def test_on_debian_12_gpus_are_isolated_by_the_device_cgroup(app12):
    b_gina, ready, messages = spawn(app12, "gina", {"gpus": "1"})
    assert ready, messages
    b_hank, ready, messages = spawn(app12, "hank", {"gpus": "1"})
    assert ready, messages
    held = {uuid: user for uuid, user in holders(app12).items() if user}
    assert sorted(held.values()) == ["gina", "hank"]
    minor = {UUID.format(index): m for index, m in GPUS}
    for name, b in (("gina", b_gina), ("hank", b_hank)):
        mine = next(minor[uuid] for uuid, user in held.items() if user == name)
        seen = device_access(b, name)
        assert seen["dev"] == {m: "ENXIO" if m == mine else "EPERM" for _, m in GPUS}, (name, seen)
