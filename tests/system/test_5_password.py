"""The hub cannot read password hashes (issue 26, item 10), on the booted appliance.

jupyterhub-pam (root, no capabilities, socket-activated) runs the appliance's PAM
stack for the hub, limits failed attempts per name and per address, and honours
pam_faillock; the hub is in no group that reads /etc/shadow.

A right password of an account without access is told "has not been given access"
(the hub says so only after PAM said yes), a wrong one "Invalid username or
password": that is how these tests see PAM's verdict without starting servers.
"""

from __future__ import annotations

import re

import pytest
from browser import Browser

HUB_PY = "/usr/lib/jupyterhub-appliance/hub/bin/python"
PAM_FILE = "/etc/pam.d/jupyterhub-appliance"
ASK = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect('/run/jupyterhub-appliance/pam.sock'); "
       "s.sendall(sys.stdin.buffer.read()); print(s.makefile().readline())")
NO_ACCESS = "has not been given access"
WRONG = "Invalid username or password"


@pytest.fixture(scope="module")
def app(appliance):
    for name in ("paula", "guessed", "lockie"):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home {name}")
        appliance.sh("chpasswd", input=f"{name}:{name}-Secret-9\n")
    yield appliance
    # Counts are kept in the service's memory: start the rest of the run afresh.
    appliance.sh("systemctl restart jupyterhub-pam.service")


def says(app, name: str, password: str) -> tuple[int, str]:
    r = Browser(app.url).login(name, password)
    for text in (NO_ACCESS, WRONG, "Too many failed logins"):
        if text in r.text:
            return r.status_code, text
    return r.status_code, r.text[:300]


def test_code_run_as_the_hub_cannot_read_password_hashes(app):
    shadow_gid = app.sh("getent group shadow | cut -d: -f3").stdout.strip()
    hub_pid = app.unit_props("jupyterhub.service", "MainPID")["MainPID"]
    groups = re.search(r"^Groups:(.*)$", app.sh(f"cat /proc/{hub_pid}/status").stdout, re.M).group(1).split()
    assert shadow_gid not in groups, f"the hub runs in group shadow ({groups})"
    assert "jupyterhub" not in app.sh("getent group shadow").stdout
    # As the hub's uid with the groups systemd gives it: /etc/shadow is out of reach.
    r = app.sh("systemd-run --quiet --wait --pipe -p User=jupyterhub cat /etc/shadow", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stdout + r.stderr
    # The hub's unit asks for no extra groups.
    assert app.unit_props("jupyterhub.service", "SupplementaryGroups")["SupplementaryGroups"] == ""


def test_the_password_service_gives_pams_verdict(app):
    assert says(app, "paula", "paula-Secret-9") == (403, NO_ACCESS)
    assert says(app, "paula", "not-it") == (403, WRONG)
    assert says(app, "nobody-such", "x") == (403, WRONG)
    journal = app.sh("journalctl -u jupyterhub-pam.service --no-pager -n 50").stdout
    assert "wrong password for 'paula' from " in journal
    assert "not-it" not in journal  # never a password in the log


def test_guessing_one_name_is_stopped_even_with_the_right_password_after(app):
    for i in range(5):
        assert says(app, "guessed", f"guess-{i}") == (403, WRONG)
    status, text = says(app, "guessed", "guessed-Secret-9")
    assert (status, text) == (429, "Too many failed logins")
    r = Browser(app.url).login("guessed", "guessed-Secret-9")
    assert re.search(r"try again in \d+ seconds", r.text)
    # Other names are not held up by it.
    assert says(app, "paula", "paula-Secret-9") == (403, NO_ACCESS)


def test_local_users_cannot_ask_and_the_hubs_bad_requests_are_refused(app):
    r = app.sh(f"runuser -u alice -- {HUB_PY} -c \"{ASK}\"", check=False,
               input='{"user": "root", "password": "x", "source": "y"}\n')
    assert r.returncode != 0 and "Permission denied" in r.stderr
    for bad, said in (("not json", "one line of JSON"), ('{"user": "root"}', "nothing else"),
                      ('{"user": "a\\u0000b", "password": "x", "source": "y"}', "control characters")):
        r = app.sh(f"runuser -u jupyterhub -- {HUB_PY} -c \"{ASK}\"", input=bad + "\n")
        assert '"code": "invalid"' in r.stdout and said in r.stdout, r.stdout
    # Still serving.
    assert says(app, "paula", "paula-Secret-9") == (403, NO_ACCESS)


FAILLOCK_STACK = """\
auth     requisite                    pam_faillock.so preauth deny=3 unlock_time=600
auth     [success=1 default=ignore]   pam_unix.so
auth     [default=die]                pam_faillock.so authfail deny=3 unlock_time=600
auth     sufficient                   pam_faillock.so authsucc deny=3 unlock_time=600
auth     requisite                    pam_deny.so
auth     required                     pam_permit.so
account  required                     pam_faillock.so
@include common-account
"""


def test_pam_faillock_counts_hub_logins_and_locks_the_account(app):
    saved = app.sh(f"cat {PAM_FILE}").stdout
    app.ct.write(PAM_FILE, FAILLOCK_STACK)
    try:
        for i in range(3):
            assert says(app, "lockie", f"wrong-{i}") == (403, WRONG)
        tally = app.sh("faillock --user lockie").stdout
        assert len(re.findall(r"^\d{4}-\d\d-\d\d ", tally, re.M)) == 3, tally
        # Locked: the right password is refused now, by PAM.
        assert says(app, "lockie", "lockie-Secret-9") == (403, WRONG)
        app.sh("faillock --user lockie --reset")
        assert says(app, "lockie", "lockie-Secret-9") == (403, NO_ACCESS)
    finally:
        app.ct.write(PAM_FILE, saved)
