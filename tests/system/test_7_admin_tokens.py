"""An admin's powers end with the role (issue 26, item 5), on the booted appliance.

adele is a jupyterhub-admin: she may `sudo applctl`, and tries to keep more than
that. tobias is an ordinary user she issues tokens for. Each test shows an attempt
failing: no service token, no token past the cap, no raising the cap, and no token
she issued still working once `applctl admin remove adele` (or a removal behind
applctl's back) took her role.
"""

from __future__ import annotations

import calendar
import json
import re
import time

import pytest
import requests

PASSWORD = "admin-tokens-7"
CONFIG = "/etc/jupyterhub/appliance.toml"
ADMIN, USER = "adele", "tobias"


@pytest.fixture(scope="module", autouse=True)
def app(appliance):
    saved = appliance.sh(f"cat {CONFIG}").stdout
    for name in (ADMIN, USER):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
        appliance.sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    appliance.sh(f"applctl adduser --admin {ADMIN} && applctl adduser {USER}")
    # The hub makes her an admin at her first login; a token gives her a record first.
    appliance.sh(f"applctl token {ADMIN} >/dev/null && applctl admin add {ADMIN}")
    yield appliance
    appliance.ct.write(CONFIG, saved)
    appliance.sh(f"applctl deluser {ADMIN}; applctl deluser {USER}", check=False)
    appliance.wait_hub()


def as_admin(app, args: str, sudo_args: str = ""):
    """sudo applctl ARGS as the jupyterhub-admin; never a traceback."""
    r = app.sh(f"sudo -S -p '' {sudo_args} applctl {args}", user=ADMIN, input=f"{PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def errors(r) -> list[str]:
    """stderr without sudo's warning about the container's hostname."""
    return [line for line in r.stderr.splitlines() if "unable to resolve host" not in line]


def no_token_in(*texts: str) -> None:
    for text in texts:
        assert not re.search(r"\b[0-9a-f]{32}\b", text), text


def status(app, path: str, token: str) -> int:
    return requests.get(f"{app.url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                        timeout=30).status_code


def days_left(expires_at: str) -> float:
    return (calendar.timegm(time.strptime(expires_at[:19], "%Y-%m-%dT%H:%M:%S")) - time.time()) / 86400


def service_token(app) -> str:
    return app.sh("applctl token --service").stdout.strip()


def notes_of(app, user: str) -> list[str]:
    r = requests.get(f"{app.url}/hub/api/users/{user}/tokens",
                     headers={"Authorization": f"token {service_token(app)}"}, timeout=30)
    return [t["note"] for t in r.json()["api_tokens"]]


def test_an_admin_cannot_get_the_service_token(app):
    r = as_admin(app, "token --service")
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert errors(r) == ["applctl: --service: the applctl service's token has every admin right and never expires, "
                         "so it is for root only (a root login), not sudo applctl; issue a user's token instead: "
                         "sudo applctl token NAME"]
    # Nor by posing as root: sudo itself refuses to let her set SUDO_UID, or run anything but applctl.
    forged = as_admin(app, "token --service", sudo_args="SUDO_UID=0 SUDO_USER=root")
    assert forged.returncode != 0 and "not allowed to set the following environment variables" in forged.stderr
    via_env = app.sh("sudo -S -p '' env SUDO_UID=0 applctl token --service", user=ADMIN, input=f"{PASSWORD}\n",
                     check=False)
    assert via_env.returncode != 0 and "is not allowed to execute" in via_env.stderr, via_env.stderr
    no_token_in(r.stdout, r.stderr, forged.stdout, forged.stderr, via_env.stdout, via_env.stderr)
    assert status(app, "/users", service_token(app)) == 200  # root still gets it


def test_an_admin_cannot_get_a_token_past_the_cap(app):
    for args, says in ((f"token --expires-in 91d {USER}", "--expires-in: '91d' is longer than the 90 days a token "
                        "issued through sudo applctl may live ([tokens] max_days_under_sudo, which only root may "
                        "change); ask for 90d or less"),
                       (f"token --expires-in 10y {USER}", "--expires-in: '10y' is not accepted"),
                       (f"token --expires-in 400d {ADMIN}", "longer than the 90 days"),
                       (f"token --no-expiry {USER}", "a token without expiry is for root only"),
                       (f"token --expires-in never {ADMIN}", "a token without expiry is for root only")):
        r = as_admin(app, args)
        assert r.returncode == 1 and r.stdout == "", (args, r.stdout, r.stderr)
        assert len(errors(r)) == 1 and says in errors(r)[0], (args, r.stderr)
    data = json.loads(as_admin(app, f"token --json --expires-in 90d {USER}").stdout)
    assert 89.9 < days_left(data["expires_at"]) < 90.1, data
    data = json.loads(as_admin(app, f"token --json {USER}").stdout)
    assert 29.9 < days_left(data["expires_at"]) < 30.1, data  # the usual default, within the cap


def test_an_admin_cannot_raise_the_cap(app):
    # Root may lower it, and the lower cap holds for her at once (applctl reads the file each time).
    app.sh("applctl config set tokens.max_days_under_sudo 7")
    before = app.sh(f"sha256sum {CONFIG}").stdout
    for args in ("config set tokens.max_days_under_sudo 3650", "config unset tokens.max_days_under_sudo"):
        r = as_admin(app, args)  # unset would bring back the default, 90
        assert r.returncode == 1 and errors(r) == [
            "applctl: tokens.max_days_under_sudo bounds what a jupyterhub-admin may do, so only root may change it "
            "(a root login, not sudo applctl); it stays 7; the file is unchanged"], (args, r.stderr)
    assert app.sh(f"sha256sum {CONFIG}").stdout == before
    r = as_admin(app, f"token --expires-in 8d {USER}")
    assert r.returncode == 1 and "longer than the 7 days" in r.stderr, r.stderr
    data = json.loads(as_admin(app, f"token --json {USER}").stdout)
    assert 6.9 < days_left(data["expires_at"]) < 7.1, data
    app.sh("applctl config unset tokens.max_days_under_sudo")


def test_a_hub_admin_makes_api_tokens_only_for_themselves(app):
    """JupyterHub gives hub admins the `tokens` scope: a token for tobias made in
    the hub's API would escape the cap, the record and the revocation above."""
    mine = json.loads(as_admin(app, f"token --json {ADMIN}").stdout)["token"]
    assert status(app, "/users", mine) == 200  # she is a hub admin: every user's model
    r = requests.post(f"{app.url}/hub/api/users/{USER}/tokens", json={"note": "mine now"},
                      headers={"Authorization": f"token {mine}"}, timeout=30)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert f"a token for {USER} comes from an administrator: sudo applctl token {USER}" in r.json()["message"]
    assert "mine now" not in notes_of(app, USER)
    own = requests.post(f"{app.url}/hub/api/users/{ADMIN}/tokens", json={"note": "own", "expires_in": 600},
                        headers={"Authorization": f"token {mine}"}, timeout=30)
    assert own.status_code == 201, (own.status_code, own.text[:300])
    # applctl, through its service, still makes tokens for anyone.
    assert status(app, "/user", app.sh(f"applctl token {USER}").stdout.strip()) == 200


def test_tokens_an_admin_issued_work_until_admin_remove(app):
    mine = json.loads(as_admin(app, f"token --json --note 'backup job' {ADMIN}").stdout)
    theirs = json.loads(as_admin(app, f"token --json {USER}").stdout)
    uid = app.sh(f"id -u {ADMIN}").stdout.strip()
    issued = f"issued by {ADMIN} (uid {uid}) through sudo applctl"
    assert mine["note"] == f"backup job; {issued}" and theirs["note"] == issued
    assert issued in notes_of(app, USER)  # the hub's API shows who issued it
    root_token = app.sh(f"applctl token {USER}").stdout.strip()  # root's own: stays
    assert status(app, "/users", mine["token"]) == 200  # an admin's token: every user
    assert status(app, "/user", theirs["token"]) == 200 and status(app, "/user", root_token) == 200

    out = app.sh(f"applctl admin remove {ADMIN}").stdout
    assert re.fullmatch(rf"{ADMIN} is no longer a hub admin; revoked [1-9][0-9]* API token\(s\) of theirs and "
                        r"[1-9][0-9]* they issued through sudo applctl\n", out), out
    assert status(app, "/users", mine["token"]) in (401, 403)
    assert status(app, "/user", mine["token"]) in (401, 403)
    assert status(app, "/user", theirs["token"]) in (401, 403)  # tobias's token, but she issued it
    assert status(app, "/user", root_token) == 200
    assert not [n for n in notes_of(app, USER) if n.endswith(issued)]
    # And sudo applctl is over for her.
    r = as_admin(app, f"token {USER}")
    assert r.returncode != 0 and "not in the sudoers file" in r.stderr, r.stderr
    no_token_in(r.stdout)


def test_tokens_go_at_the_next_hub_start_when_removed_behind_applctls_back(app):
    app.sh(f"applctl admin add {ADMIN}")
    theirs = as_admin(app, f"token {USER}").stdout.strip()
    assert status(app, "/user", theirs) == 200
    app.sh(f"gpasswd -d {ADMIN} jupyterhub-admins")  # not through applctl: nothing revoked yet
    assert status(app, "/user", theirs) == 200
    app.sh("systemctl restart jupyterhub")
    app.wait_hub()
    assert status(app, "/user", theirs) in (401, 403)
    log = app.sh("journalctl -u jupyterhub -n 300 --no-pager").stdout
    assert re.search(rf"{ADMIN} may no longer run sudo applctl: [1-9][0-9]* token\(s\) they issued revoked", log), log
