"""Reinstall, remove and purge, on the session's appliance of tests/system: after all
of tests/system (tests/conftest.py runs this tier after it), because they take the
appliance down; the purge must keep the file test_1_core's alice wrote in her home."""

from __future__ import annotations

import pytest
from visitor_client import arrive

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system


def byte_code(appliance) -> int:
    """How many .pyc files postinst compiled (the package ships none)."""
    return int(appliance.sh("find /usr/lib/jupyterhub-appliance -name '*.pyc' 2>/dev/null | wc -l").stdout)


def test_reinstall_same_version_is_harmless(appliance, deb):
    # postinst compiled the byte-code of both environments: the hub's and a server's.
    assert byte_code(appliance) > 3000
    for module in ("hub/lib/python3*/site-packages/jupyterhub/app", "user/lib/python3*/site-packages/jupyterlab/labapp"):
        found = appliance.sh(f"ls /usr/lib/jupyterhub-appliance/{module.rsplit('/', 1)[0]}/__pycache__/"
                             f"{module.rsplit('/', 1)[1]}.cpython-3*.pyc", check=False)
        assert found.returncode == 0, module
    secret = appliance.sh("cat /var/lib/jupyterhub/jupyterhub_cookie_secret").stdout
    before = appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"]
    before_pyc = byte_code(appliance)
    appliance.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall /root/{deb.name}")
    # prerm deleted the byte-code, postinst compiled it again.
    assert byte_code(appliance) == before_pyc
    assert appliance.sh("cat /var/lib/jupyterhub/jupyterhub_cookie_secret").stdout == secret
    assert appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"] == before
    # The administrator's configuration (a conffile) is kept.
    assert f"port = {appliance.port}" in appliance.sh("cat /etc/jupyterhub/appliance.toml").stdout
    appliance.wait_hub()


def test_remove_stops_services_and_keeps_data(appliance):
    # A visitor's server runs when the package goes: its home goes too (the daemon
    # that would delete it once the server stops is stopped first).
    appliance.ct.write("/etc/jupyterhub/appliance.toml", appliance.config_text('mode = "ephemeral"\n'))
    appliance.sh("applctl reload >/dev/null")
    appliance.wait_hub()
    _, visitor, _ = arrive(appliance)
    assert appliance.sh(f"test -d /var/lib/private/jupyter-{visitor}", check=False).returncode == 0
    appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y jupyterhub-appliance")
    assert appliance.sh("ls -d /var/lib/private/jupyter-visitor-* /var/lib/jupyter-visitor-*",
                        check=False).stdout.strip() == ""
    assert appliance.sh(f"systemctl is-active jupyter-{visitor}.service", check=False).stdout.strip() != "active"
    for unit in ("jupyterhub.service", "jupyterhub-proxy.service", "jupyter-alice.service"):
        assert appliance.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active", unit
    # (visitors-served: ephemeral mode's count, if test_8_ephemeral ran)
    assert set(appliance.sh("ls /var/lib/jupyterhub").stdout.split()) - {"visitors-served"} == {
        "applctl_token", "jupyterhub.sqlite", "jupyterhub_cookie_secret"}
    assert appliance.sh("ls /var/lib/jupyterhub-appliance/secrets").stdout.split() == ["proxy_token"]
    assert appliance.sh("test -f /etc/jupyterhub/appliance.toml", check=False).returncode == 0
    # prerm deleted the byte-code postinst made: none is left (nor its directories,
    # which would keep dpkg from removing the package's).
    assert byte_code(appliance) == 0
    assert appliance.sh("find /usr/lib/jupyterhub-appliance -name __pycache__ 2>/dev/null").stdout == ""


def test_purge_removes_what_it_created_but_not_homes(appliance):
    appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y jupyterhub-appliance")
    assert appliance.sh("test -e /var/lib/jupyterhub", check=False).returncode != 0
    assert appliance.sh("test -e /var/lib/jupyterhub-appliance/secrets", check=False).returncode != 0
    assert appliance.sh("test -e /etc/jupyterhub", check=False).returncode != 0
    for name in ("jupyterhub", "jupyterhub-users", "jupyterhub-admins"):
        assert appliance.sh(f"getent group {name}", check=False).returncode != 0, name
    assert appliance.sh("getent passwd jupyterhub", check=False).returncode != 0
    assert appliance.sh("cat /home/alice/notes.txt").stdout == "kept"
