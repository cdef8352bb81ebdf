"""Debian 12 -> 13 with the appliance on it (docs/upgrades.md, "Debian 12 to 13"):
a Debian 12 container runs the +deb12 appliance from a signed apt repository, with
alice's server holding a GPU (fake NVML), a kernel, her files and a token; the
administrator switches every source from bookworm to trixie and runs
`apt full-upgrade`, as the documentation says. Then the +deb13 appliance runs with
the hub's users, tokens, config and homes kept, and alice's server, which ran on
Python 3.11, has been restarted on 3.13 with a GPU, and her home page says why.

Slow (the whole release is downloaded and upgraded): an opt-in tier of its own,
`scripts/test --dist-upgrade` (tests/conftest.py); its time is in docs/testing.md.
"""

from __future__ import annotations

import json
import os
import re
import time

import apt_repo
import pytest
import requests
from booted import Appliance, free_port
from browser import login
from container import Container
from gpus import PASSWORD, fake_config, holders, install_fake_gpus

pytestmark = [pytest.mark.system, pytest.mark.dist_upgrade]

APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold"
KEPT = ("/etc/jupyterhub/appliance.toml", "/etc/jupyterhub/jupyterhub_config.d/50-site.py",
        "/home/alice/notes/kept.txt")


@pytest.fixture(scope="module")
def on_bookworm(deb, deb_bookworm, tmp_path_factory):
    """The appliance installed from the repository on Debian 12, in use."""
    ct = Container(f"dup{os.getpid()}", release="bookworm")
    with apt_repo.served([deb_bookworm, deb], tmp_path_factory.mktemp("apt-repo")) as repo:
        try:
            ct.boot()
            repo.install_in(ct, suite="bookworm")
            repo.update_in(ct)
            ct.run(f"{APT} install jupyterhub-appliance </dev/null")
            app = Appliance(ct, free_port(), free_port(), free_port())
            install_fake_gpus(app, tmp_path_factory, fake_config())
            ct.write("/etc/jupyterhub/appliance.toml", app.config_text("[gpu]\nquota = 1\nqueue = false\n"))
            ct.write("/etc/jupyterhub/jupyterhub_config.d/50-site.py", "# the administrator's own\n")
            app.sh(f"useradd -m alice && echo alice:{PASSWORD} | chpasswd && applctl adduser alice >/dev/null")
            app.sh("systemctl daemon-reload && systemctl restart jupyterhub-appliance.service && "
                   "systemctl start jupyterhub")
            app.wait_hub()
            yield app, repo
        finally:
            ct.destroy()


def exec_start(app) -> str:
    return app.sh("systemctl show -P ExecStart jupyter-alice.service").stdout


def server(app) -> dict:
    """The daemon's status of alice's server: its state and the Python it runs. Not
    `systemctl show` while it restarts: that would load a unit of that name again."""
    return json.loads(app.daemon_request('{"op": "status", "user": "alice"}').stdout)


def test_debian_12_to_13_keeps_the_hub_and_restarts_servers_left_on_python_3_11(on_bookworm):
    app, repo = on_bookworm
    assert app.sh("dpkg-query -W -f='${Version}' jupyterhub-appliance").stdout.endswith("+deb12")
    alice = login(app, "alice", PASSWORD)
    r = alice.spawn_with_form("alice", {"gpus": "1"})
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    alice.wait_for_server("alice")
    kernel = alice.start_kernel("alice")
    assert alice.execute("alice", kernel, "import sys; print(sys.version_info[:2])").strip() == "(3, 11)"
    assert "/user/bin/python3.11 " in exec_start(app)
    app.sh("runuser -u alice -- sh -c 'mkdir -p ~/notes && echo forty-two > ~/notes/kept.txt'")
    token = app.sh("applctl token alice --expires-in 1d").stdout.strip().split()[-1]
    held = {u: h for u, h in holders(app).items() if h}
    assert list(held.values()) == ["alice"]
    kept = {f: app.sh(f"sha256sum {f}").stdout for f in KEPT}

    # The administrator's steps (docs/upgrades.md): every source to trixie, then
    # update and full-upgrade, keeping changed conffiles; nothing on stdin.
    app.sh("sed -i 's/\\bbookworm\\b/trixie/g' /etc/apt/sources.list "
           f"{apt_repo.SOURCES} && apt-get update -q")
    t0 = time.monotonic()
    up = app.sh(f"{APT} full-upgrade </dev/null", check=False)
    took = time.monotonic() - t0
    print(f"apt full-upgrade from Debian 12 to 13 took {took:.0f} s")
    assert up.returncode == 0, (up.stdout[-3000:], up.stderr[-3000:])
    assert app.sh(". /etc/os-release; echo $VERSION_ID").stdout.strip() == "13"
    assert app.sh("dpkg-query -W -f='${Version}' jupyterhub-appliance").stdout.endswith("+deb13")
    assert "Configuration file" not in up.stdout + up.stderr

    # The hub, with its users, tokens, config; homes kept.
    app.wait_hub()
    assert {f: app.sh(f"sha256sum {f}").stdout for f in KEPT} == kept
    me = requests.get(app.url + "/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30)
    assert me.status_code == 200 and me.json()["name"] == "alice", me.text
    assert "alice" in app.sh("applctl users").stdout
    assert app.sh("applctl config get gpu.quota").stdout.strip() == "1"

    # Her server was restarted by the hub on Python 3.13, with a GPU again.
    deadline = time.monotonic() + 180
    while (now := server(app))["state"] != "active" or now["python"] != "3.13":
        assert time.monotonic() < deadline, (now, app.sh("journalctl -u jupyterhub -n 60 --no-pager",
                                                         check=False).stdout)
        time.sleep(2)
    assert "/user/bin/python3.13 " in exec_start(app)
    assert [h for h in holders(app).values() if h] == ["alice"]
    journal = app.sh("journalctl APPLIANCE_STOP_REASON=python-upgrade -o json --no-pager").stdout
    assert any(json.loads(line).get("APPLIANCE_USER") == "alice" for line in journal.splitlines()), journal
    again = login(app, "alice", PASSWORD)
    again.wait_for_server("alice")
    kernel = again.start_kernel("alice")
    assert again.execute("alice", kernel, "import sys; print(sys.version_info[:2], "
                                          "open('notes/kept.txt').read().strip())").strip() == "(3, 13) forty-two"
    deadline = time.monotonic() + 30  # the hub records the restart as its last step
    while not (said := re.search(r'id="appliance-stop-reason"[^>]*>([^<]*)<', again.get("/hub/home").text)) \
            and time.monotonic() < deadline:
        time.sleep(1)
    if not said:
        print(app.sh("journalctl -u jupyterhub -u jupyterhub-appliance --no-pager | grep -v ' 200 GET '").stdout[-20000:])
        print(app.sh("/usr/lib/jupyterhub-appliance/hub/bin/python -c \"import sqlite3; print(sqlite3.connect("
                     "'/var/lib/jupyterhub/jupyterhub.sqlite').execute('select state from spawners').fetchall())\"",
                     check=False))
        print(again.get("/hub/home").text[:6000])
    assert said, "no stop reason on the home page (the hub's journal is above)"
    assert re.fullmatch(r"Your server was restarted at \d\d:\d\d on \d\d \w\w\w because the system was upgraded "
                        r"from Python 3\.11 to 3\.13; your files are kept, but what your kernels held in memory "
                        r"was lost\.", said[1].strip()), said[1]
