"""Upgrade in place: the previous version, installed and in use (alice's server with
a GPU and an open kernel, the administrator's settings, a token), then
`apt-get install ./NEW.deb` without a terminal, as unattended upgrades run it. Then
back to the previous version. In a Debian 12 container of its own: the release
the previous version was built for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import previous
import pytest
import requests
from booted import Appliance, free_port
from browser import Browser
from container import Container
from gpus import fake_config, install_fake_gpus
from previous import PREVIOUS_RELEASE, PREVIOUS_VERSION

# On a booted Debian: root, systemd-nspawn and the built .deb (tests/system/booted.py).
pytestmark = pytest.mark.system

PASSWORD = "alice-upgrades-1"
SITE_PY = "# the administrator's own\nc.Spawner.http_timeout = 61\n"
DROP_IN = "[Service]\n# the administrator's own\nTasksMax=4242\n"


@pytest.fixture(scope="module")
def old_deb() -> Path:
    return previous.deb()


@pytest.fixture(scope="module")
def running_old(old_deb, tmp_path_factory):
    ct = Container(f"upg{os.getpid()}", release=PREVIOUS_RELEASE)
    try:
        ct.boot()
        r = ct.install_deb(old_deb)
        assert r.returncode == 0, r.stderr[-2000:]
        app = Appliance(ct, free_port(), free_port(), free_port())
        # The administrator's settings: appliance.toml edited (so dpkg would have a
        # conffile prompt to make), a jupyterhub_config.d file, a drop-in.
        # Only the keys the previous version knows: the new ports take their defaults.
        ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
            "[culler]\n# ours: two hours\ntimeout = 7200\n[gpu]\nquota = 1\nqueue = false\n", newer_ports=False))
        ct.write("/etc/jupyterhub/jupyterhub_config.d/50-site.py", SITE_PY)
        ct.write("/etc/systemd/system/jupyter-.service.d/50-site.conf", DROP_IN)
        install_fake_gpus(app, tmp_path_factory, fake_config())
        app.sh(f"useradd -m alice && echo alice:{PASSWORD} | chpasswd && applctl adduser alice >/dev/null")
        app.sh("systemctl daemon-reload && systemctl restart jupyterhub-appliance.service && "
               "systemctl start jupyterhub")
        app.wait_hub()
        yield app
    finally:
        ct.destroy()


def main_pid(app, unit: str) -> str:
    return app.unit_props(unit, "MainPID")["MainPID"]


def holders(app) -> dict[str, str]:
    report = json.loads(app.daemon_request('{"op": "gpus"}').stdout)
    return {g["uuid"]: g["holder"] for g in report["gpus"] if g["holder"]}


def test_upgrade_keeps_servers_gpus_settings_and_users_and_a_downgrade_is_refused(running_old, deb_bookworm, old_deb):
    app, deb = running_old, deb_bookworm  # the previous version was built for Debian 12
    alice = Browser(app.url)
    alice.login("alice", PASSWORD)
    r = alice.spawn_with_form("alice", {"gpus": "1"})
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    alice.wait_for_server("alice")
    kernel = alice.start_kernel("alice")
    assert alice.execute("alice", kernel, "x = 41\nprint('set')").strip() == "set"
    token = app.sh("applctl token alice --expires-in 1h").stdout.strip().split()[-1]
    gpus_before = holders(app)
    assert list(gpus_before.values()) == ["alice"]
    server_pid = main_pid(app, "jupyter-alice.service")
    services = ("jupyterhub.service", "jupyterhub-proxy.service", "jupyterhub-appliance.service")
    pids_before = {u: main_pid(app, u) for u in services}
    files = ("/etc/jupyterhub/appliance.toml", "/etc/jupyterhub/jupyterhub_config.d/50-site.py",
             "/etc/systemd/system/jupyter-.service.d/50-site.conf")
    kept = {f: app.sh(f"sha256sum {f}").stdout for f in files}

    # The upgrade, as unattended-upgrades runs it: no terminal, nothing on stdin.
    app.ct.copy_in(deb, "/root/new.deb")
    up = app.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y /root/new.deb </dev/null", check=False)
    assert up.returncode == 0, (up.stdout[-2000:], up.stderr[-2000:])
    assert "Configuration file" not in up.stdout + up.stderr  # no conffile prompt
    new_version = app.sh("dpkg-query -W -f='${Version}' jupyterhub-appliance").stdout
    assert new_version != PREVIOUS_VERSION

    # Her server is the same process, with the same GPU; her kernel kept its state.
    assert main_pid(app, "jupyter-alice.service") == server_pid
    assert holders(app) == gpus_before
    deadline = time.monotonic() + 60  # the proxy's restart: the hub puts her route back
    while alice.api_status("alice").status_code != 200:
        assert time.monotonic() < deadline, "her server is not reachable 60 s after the upgrade"
        time.sleep(0.5)
    assert alice.execute("alice", kernel, "print(x + 1)").strip() == "42"
    # The administrator's files are untouched; keys the new version added have their defaults.
    assert {f: app.sh(f"sha256sum {f}").stdout for f in files} == kept
    assert app.sh("applctl config get culler.timeout").stdout.strip() == "7200"
    assert app.sh("applctl config get metrics.access").stdout.strip() == "loopback"
    # The hub, the proxy and the daemon run anew, on the new code; users and tokens kept.
    pids_after = {u: main_pid(app, u) for u in services}
    assert all(pids_after[u] != pids_before[u] for u in services), (pids_before, pids_after)
    app.wait_hub()
    me = requests.get(app.url + "/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30)
    assert me.status_code == 200 and me.json()["name"] == "alice"
    assert "alice" in app.sh("applctl users").stdout
    # Passwords are checked by jupyterhub-pam now: the hub left group shadow, and logs in.
    assert "jupyterhub" not in app.sh("getent group shadow").stdout.rsplit(":", 1)[-1]
    fresh = Browser(app.url).login("alice", PASSWORD)
    assert fresh.status_code == 200 and "Invalid username or password" not in fresh.text, fresh.status_code
    # The proxy token moved to root's directory; none is left where the hub could plant a link.
    assert app.sh("stat -c '%U %a' /var/lib/jupyterhub-appliance/secrets/proxy_token").stdout.strip() == "root 600"
    assert app.sh("test -e /var/lib/jupyterhub/proxy_token", check=False).returncode != 0
    # The new version's GPU dashboard answers (it sends visitors to log in).
    deadline = time.monotonic() + 30
    while (dash := requests.get(app.url + "/services/gpus/", allow_redirects=False, timeout=30)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert dash.status_code == 302, dash.status_code

    # Back to the previous version: 0.1.0 predates the preinst that refuses
    # downgrades (test_debian_scripts.py), and reads the same state: it works,
    # and her server keeps running through it too.
    app.ct.copy_in(old_deb, "/root/old.deb")
    down = app.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y --allow-downgrades /root/old.deb </dev/null",
                  check=False)
    assert down.returncode == 0, (down.stdout[-2000:], down.stderr[-2000:])
    assert app.sh("dpkg-query -W -f='${Version}' jupyterhub-appliance").stdout == PREVIOUS_VERSION
    assert main_pid(app, "jupyter-alice.service") == server_pid and holders(app) == gpus_before
    assert {f: app.sh(f"sha256sum {f}").stdout for f in files} == kept
    app.wait_hub()
    assert alice.execute("alice", kernel, "print(x + 2)").strip() == "43"
