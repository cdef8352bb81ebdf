"""The .deb's preinst, before anything is unpacked, refuses a package built for
another Debian release and a downgrade: the real script, with what build-deb puts
in (a trixie build here), run with dpkg's arguments on a machine whose os-release
the test writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci import in_ci

PREINST = Path(__file__).resolve().parents[2] / "packaging/debian/preinst"

TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n' \
         'VERSION="13 (trixie)"\nVERSION_CODENAME=trixie\nID=debian\n'
BOOKWORM = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n' \
           'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
FORKY = 'PRETTY_NAME="Debian GNU/Linux forky/sid"\nNAME="Debian GNU/Linux"\nVERSION_CODENAME=forky\nID=debian\n'
UBUNTU = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n' \
         'ID=ubuntu\nID_LIKE=debian\n'


@pytest.fixture
def preinst(tmp_path):
    """preinst(os_release_text, python3=(installed, candidate)) -> the script as
    build-deb --release trixie makes it, reading that os-release instead of the
    machine's /etc/os-release, and told those versions of python3 by dpkg-query
    and apt-cache (Debian 12's by default: the machine's own do not count)."""
    if not shutil.which("dpkg"):
        if in_ci():
            pytest.fail("CI must run the preinst tests, but dpkg is missing (apt-get install dpkg)", pytrace=False)
        pytest.skip("dpkg --compare-versions is Debian's")
    source = PREINST.read_text()
    assert source.count("/etc/os-release") == 1  # the one line the test points elsewhere

    assert source.count("dpkg-query -W") == 1 and source.count("apt-cache policy") == 1

    def make(os_release: str = TRIXIE, python3: tuple[str, str] = ("3.11.2-1+b1", "3.11.2-1+b1")) -> Path:
        (tmp_path / "os-release").write_text(os_release)
        installed, candidate = python3
        fakes = {"dpkg-query": f"printf '%s' '{installed}'",
                 "apt-cache": f"printf 'python3:\\n  Installed: {installed or '(none)'}\\n  Candidate: {candidate}\\n'"}
        for name, body in fakes.items():
            (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
            (tmp_path / name).chmod(0o755)
        script = tmp_path / "preinst"
        script.write_text(source.replace("@VERSION@", "0.3.0+deb13").replace("@DEBIAN_VERSION_ID@", "13")
                          .replace("@DEBIAN_CODENAME@", "trixie").replace("@PYTHON_VERSION@", "3.13")
                          .replace("/etc/os-release", str(tmp_path / "os-release"))
                          .replace("dpkg-query -W", f"{tmp_path}/dpkg-query -W")
                          .replace("apt-cache policy", f"{tmp_path}/apt-cache policy"))
        script.chmod(0o755)
        return script
    return make


@pytest.mark.parametrize("args, refused", [
    (["install"], False),
    (["upgrade", "0.2.0"], False),  # an upgrade
    (["upgrade", "0.2.0+deb12"], False),  # after a dist-upgrade from bookworm
    (["upgrade", "0.3.0+deb12"], False),
    (["upgrade", "0.3.0+deb13"], False),  # a reinstall
    (["upgrade", "0.4.0+deb13"], True),
    (["upgrade", "0.3.0+deb14"], True),  # newer in dpkg's order
    (["abort-upgrade", "0.4.0+deb13"], False),
])
def test_a_downgrade_is_refused_with_a_clear_message(preinst, args, refused):
    r = subprocess.run([str(preinst()), *args], capture_output=True, text=True)
    assert (r.returncode != 0) == refused, r
    if refused:
        assert f"downgrading from {args[1]} to 0.3.0+deb13 is not supported" in r.stderr
        assert "Nothing was changed" in r.stderr


@pytest.mark.parametrize("args", [["install"], ["upgrade", "0.2.0+deb12"]])
def test_a_package_for_another_release_is_refused_and_names_the_right_one(preinst, args):
    r = subprocess.run([str(preinst(BOOKWORM)), *args], capture_output=True, text=True)
    assert r.returncode != 0, r
    assert r.stderr.strip() == (
        "jupyterhub-appliance 0.3.0+deb13 is built for Debian 13 (trixie), but this machine runs "
        "Debian 12 (bookworm): install jupyterhub-appliance_0.3.0+deb12_amd64.deb. Nothing was changed.")


def test_debian_testing_is_told_by_its_codename(preinst):
    r = subprocess.run([str(preinst(FORKY)), "install"], capture_output=True, text=True)
    assert r.returncode != 0, r
    assert "built for Debian 13 (trixie), but this machine runs Debian forky" in r.stderr
    assert "Nothing was changed" in r.stderr
    testing_trixie = FORKY.replace("forky/sid", "trixie/sid").replace("forky", "trixie")
    r = subprocess.run([str(preinst(testing_trixie)), "install"], capture_output=True, text=True)
    assert r.returncode == 0, r


def test_the_release_check_leaves_derivatives_to_the_depends(preinst):
    # Not Debian: whether its python3 fits is apt's Depends to say.
    r = subprocess.run([str(preinst(UBUNTU)), "install"], capture_output=True, text=True)
    assert r.returncode == 0, r


def test_removal_steps_are_never_refused_for_the_release(preinst):
    # dpkg runs the new preinst with abort-upgrade when an upgrade fails: it must
    # not fail there (the old package is being put back).
    r = subprocess.run([str(preinst(BOOKWORM)), "abort-upgrade", "0.3.0+deb13"], capture_output=True, text=True)
    assert r.returncode == 0, r


@pytest.mark.parametrize("python3", [("3.11.2-1+b1", "3.13.5-1"), ("3.13.5-1", "3.13.5-1"), ("", "3.13.5-1")])
def test_a_release_upgrade_in_progress_is_not_refused(preinst, python3):
    # apt full-upgrade from 12 to 13 may unpack this package while /etc/os-release
    # still says 12: python3 3.13 is already unpacked, or apt is about to bring it
    # (its Depends make dpkg configure this package only after it).
    r = subprocess.run([str(preinst(BOOKWORM, python3)), "upgrade", "0.3.0+deb12"], capture_output=True, text=True)
    assert r.returncode == 0, r


def test_the_versions_of_the_two_releases_sort_so_that_apt_takes_13s():
    # Same upstream version: +deb13 is the newer, so a Debian 12 -> 13 upgrade takes it
    # and its preinst does not see a downgrade; a newer upstream for 12 is still newer.
    def gt(a, b):
        return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0
    if not shutil.which("dpkg"):
        pytest.skip("dpkg --compare-versions is Debian's")
    assert gt("0.3.0+deb13", "0.3.0+deb12") and gt("0.3.1+deb12", "0.3.0+deb13")
    assert gt("0.3.0+deb13", "0.3.0~rc1+deb13") and gt("0.3.0+deb12", "0.2.1+deb13")
