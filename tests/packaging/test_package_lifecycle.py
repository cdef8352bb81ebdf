"""Reinstall, remove and purge, on the session's appliance of tests/system: after all
of tests/system (tests/conftest.py runs this tier after it), because they take the
appliance down; the purge must keep the file test_1_core's alice wrote in her home."""

from __future__ import annotations

import pytest
from visitor_client import arrive

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system


def test_reinstall_same_version_is_harmless(appliance, deb):
    secret = appliance.sh("cat /var/lib/jupyterhub/jupyterhub_cookie_secret").stdout
    before = appliance.unit_props("jupyter-alice.service", "InvocationID")["InvocationID"]
    appliance.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall /root/{deb.name}")
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


def test_purge_removes_what_it_created_but_not_homes(appliance):
    appliance.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y jupyterhub-appliance")
    assert appliance.sh("test -e /var/lib/jupyterhub", check=False).returncode != 0
    assert appliance.sh("test -e /var/lib/jupyterhub-appliance/secrets", check=False).returncode != 0
    assert appliance.sh("test -e /etc/jupyterhub", check=False).returncode != 0
    for name in ("jupyterhub", "jupyterhub-users", "jupyterhub-admins"):
        assert appliance.sh(f"getent group {name}", check=False).returncode != 0, name
    assert appliance.sh("getent passwd jupyterhub", check=False).returncode != 0
    assert appliance.sh("cat /home/alice/notes.txt").stdout == "kept"
