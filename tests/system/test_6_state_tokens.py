"""Root in /var/lib/jupyterhub follows nothing the hub planted; tokens expire and rotate.

Every path where root touches the hub's directory is tried with links planted in
place of the secrets: the package's install/upgrade script, applctl doctor --fix,
and applctl reading the service token. /etc/shadow and a root-only file must not
change, and their contents must never show.
"""

from __future__ import annotations

import calendar
import json
import time

import pytest
import requests

STATE = "/var/lib/jupyterhub"
SECRETS = ("jupyterhub_cookie_secret", "applctl_token")  # the proxy token is root's: test_5_low
TARGETS = ("/etc/shadow", "/root/secret")
PASSWORD = "tokens-pass-6"


@pytest.fixture(scope="module")
def app(appliance):
    appliance.sh("echo 'root-only-canary-6' > /root/secret && chmod 0600 /root/secret")
    for name, groups in (("olive", "jupyterhub-users,jupyterhub-admins"), ("percy", "jupyterhub-users")):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
        appliance.sh(f"usermod -aG {groups} {name}")
        appliance.sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    yield appliance
    appliance.sh("applctl doctor --fix >/dev/null", check=False)
    appliance.wait_hub()


def fingerprints(app) -> str:
    return app.sh("stat -c '%n %u %g %a %h' " + " ".join(TARGETS) + "; sha256sum " + " ".join(TARGETS)).stdout


def no_leak(*outputs: str) -> None:
    for text in outputs:
        assert "root-only-canary-6" not in text and "root:" not in text, text


def plant(app, kind: str) -> None:
    """As a compromised hub would (done as root here: with fs.protected_hardlinks the
    hub could not hard-link /etc/shadow itself, but the code must not rely on that)."""
    for name, target in zip(SECRETS, TARGETS * 2, strict=False):
        flag = "-s" if kind == "symlink" else ""
        app.sh(f"rm -f {STATE}/{name} && ln {flag} {target} {STATE}/{name}")


def hub_status(app, token: str) -> int:
    return requests.get(f"http://127.0.0.1:{app.hub_port}/hub/api/users",
                        headers={"Authorization": f"token {token}"}, timeout=10).status_code


def test_applctl_refuses_a_planted_token_and_doctor_fix_replaces_it(app):
    before = fingerprints(app)
    plant(app, "symlink")
    r = app.sh("applctl token --service", check=False)
    assert r.returncode == 1 and "is a link; refusing to follow it" in r.stderr, r.stderr
    users = app.sh("applctl users", check=False)
    doctor = app.sh("applctl doctor", check=False)
    assert doctor.returncode == 1 and "is a link or not a plain file" in doctor.stdout
    fixed = app.sh("applctl doctor --fix", check=False)
    no_leak(r.stdout, r.stderr, users.stdout, users.stderr, doctor.stdout, fixed.stdout, fixed.stderr)
    assert fingerprints(app) == before
    for name in SECRETS:
        assert app.sh(f"stat -c '%F %U %a %h' {STATE}/{name}").stdout.strip() == "regular file jupyterhub 600 1"
    app.wait_hub()
    assert hub_status(app, app.sh("applctl token --service").stdout.strip()) == 200


def test_the_package_upgrade_replaces_hard_links_without_touching_their_targets(app, deb):
    before = fingerprints(app)
    plant(app, "hardlink")
    out = app.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /root/{deb.name}")
    no_leak(out.stdout, out.stderr)
    assert "replaced it without following it" in out.stdout + out.stderr
    assert fingerprints(app) == before
    for name in SECRETS:
        assert app.sh(f"stat -c '%F %U %a %h' {STATE}/{name}").stdout.strip() == "regular file jupyterhub 600 1"
    # The proxy got a new token too: restart it and the hub, as doctor --fix would, and all works.
    app.sh("systemctl restart jupyterhub-proxy jupyterhub")
    app.wait_hub()


def test_tokens_expire_in_30_days_and_only_root_may_issue_one_that_never_does(app):
    data = json.loads(app.sh("applctl token --json percy").stdout)
    days = (calendar.timegm(time.strptime(data["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.time()) / 86400
    assert 29.9 < days < 30.1, data
    r = app.sh("sudo -S -p '' applctl token --no-expiry percy", user="olive", input=f"{PASSWORD}\n", check=False)
    assert r.returncode == 1 and "for root only" in r.stderr, r.stderr
    assert json.loads(app.sh("applctl token --json --no-expiry percy").stdout)["expires_at"] is None


def test_rotating_the_service_token_retires_the_old_one_and_keeps_servers(app):
    old = app.sh("applctl token --service").stdout.strip()
    assert hub_status(app, old) == 200
    app.sh("applctl token --rotate-service")
    app.wait_hub()
    new = app.sh("applctl token --service").stdout.strip()
    assert new != old and hub_status(app, new) == 200
    assert hub_status(app, old) in (401, 403)


def test_an_admin_removed_from_the_group_loses_admin_and_tokens_at_the_next_start(app):
    token = app.sh("applctl token olive").stdout.strip()  # gives olive her hub record too
    app.sh("applctl admin add olive")  # so the hub now knows her as an admin
    assert hub_status(app, token) == 200  # an admin may list users
    app.sh("gpasswd -d olive jupyterhub-admins")  # behind applctl's back
    app.sh("systemctl restart jupyterhub")
    app.wait_hub()
    assert hub_status(app, token) in (401, 403)
    log = app.sh("journalctl -u jupyterhub -n 200 --no-pager").stdout
    assert "olive is no longer in jupyterhub-admins: admin rights and 1 token(s) revoked" in log


def test_an_upgrade_rotates_the_service_token(app, deb):
    old = app.sh("applctl token --service").stdout.strip()
    app.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /root/{deb.name}")
    app.wait_hub()  # the package's script restarted the hub on the new token
    new = app.sh("applctl token --service").stdout.strip()
    assert new != old and hub_status(app, new) == 200
    assert hub_status(app, old) in (401, 403)
