"""Ephemeral (workshop) mode on the booted appliance: visitors with no account land in
a server of their own, run as a transient uid, see the shared folder read-only,
and leave nothing behind; the cap, the site password, the warm pool, the daemon's
own reading of the mode, and the way back to accounts mode.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from booted import USERS
from browser import Browser
from visitor_client import VISITOR, arrive, hub_api, pool, ready_pool, units

SHARED = "/srv/workshop"
MAX_VISITORS = 2
PASSWORD = "workshop-pass-7"


def main_uid(app, name: str) -> int:
    pid = app.unit_props(f"jupyter-{name}.service", "MainPID")["MainPID"]
    return int(app.sh(f"stat -c %u /proc/{pid}").stdout)


def wait_gone(app, name: str, within: float = 60) -> None:
    """Until the server, its home and the hub's user are gone."""
    deadline = time.monotonic() + within
    while True:
        left = [what for what, there in (
            ("unit", f"jupyter-{name}.service" in units(app)),
            ("home", app.sh(f"ls -d /var/lib/private/jupyter-{name} /var/lib/jupyter-{name}", check=False)
             .stdout.strip() != ""),
            ("hub user", hub_api(app, "GET", f"/users/{name}") is not None)) if there]
        if not left:
            return
        if time.monotonic() > deadline:
            said = app.sh("journalctl -u jupyterhub-appliance -n 30 --no-pager; ls -la /var/lib /var/lib/private",
                          check=False).stdout
            raise AssertionError(f"{name}: still there after {within} s: {', '.join(left)}\n{said}")
        time.sleep(1)


@pytest.fixture(scope="module")
def workshop(appliance):
    app = appliance
    app.sh(f"mkdir -p {SHARED} && echo 'lesson one' > {SHARED}/README.txt")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f'mode = "ephemeral"\n[ephemeral]\nmax_visitors = {MAX_VISITORS}\nwarm_pool = 1\n'
        f'shared_dir = "{SHARED}"\nmem_limit = "1G"\n'))
    app.sh("applctl reload")
    app.wait_hub()
    yield app
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload", check=False)


def test_visitors_get_their_own_transient_uid_and_nothing_of_theirs_is_kept(workshop):
    app = workshop
    b1, v1, _ = arrive(app)
    b2, v2, _ = arrive(app)
    assert v1 != v2
    uid1, uid2 = main_uid(app, v1), main_uid(app, v2)
    # systemd's range of dynamic uids: never an account of /etc/passwd or of the group
    assert uid1 != uid2 and all(61184 <= u <= 65519 for u in (uid1, uid2))
    passwd = app.sh("cat /etc/passwd").stdout
    members = app.sh("getent group jupyterhub-users").stdout
    assert v1 not in passwd and v2 not in passwd and v1 not in members and v2 not in members
    assert app.unit_props(f"jupyter-{v1}.service", "MemoryMax")["MemoryMax"] == str(1024**3)

    k1, k2 = b1.start_kernel(v1), b2.start_kernel(v2)
    home2 = b2.execute(v2, k2, "import os; open('secret.txt', 'w').write('mine'); print(os.getcwd())").strip()
    # the home is systemd's StateDirectory of a DynamicUser: /var/lib/NAME, a link into /var/lib/private
    assert home2 in (f"/var/lib/jupyter-{v2}", f"/var/lib/private/jupyter-{v2}")
    probe = b1.execute(v1, k1, f"""
import os
def can(f):
    try:
        f(); return 'yes'
    except OSError as e:
        return type(e).__name__
print(can(lambda: open('{home2}/secret.txt').read()))
print(sorted({{os.stat('/proc/' + p).st_uid for p in os.listdir('/proc') if p.isdigit()}} - {{os.getuid()}}))
print(open(os.path.expanduser('~/shared/README.txt')).read().strip())
print(can(lambda: open(os.path.expanduser('~/shared/mine.txt'), 'w')))
print(os.listdir('/home'))
open('notes.txt', 'w').write('kept?')
""").split("\n")
    assert probe[0] in ("PermissionError", "FileNotFoundError"), probe  # not readable by another visitor
    assert probe[1] == "[]", probe  # no other uid's process is visible (ProtectProc=invisible)
    assert probe[2] == "lesson one"  # the shared folder is readable...
    assert probe[3] in ("OSError", "PermissionError"), probe  # ...and not writable
    assert probe[4] == "[]", probe  # the machine's people are out of sight (ProtectHome=tmpfs)

    app.sh(f"applctl stop {v1}")
    wait_gone(app, v1)
    leftovers = app.sh(f"find / -xdev -uid {uid1} 2>/dev/null | head -5; ls /var/lib/private", check=False).stdout
    assert f"jupyter-{v1}" not in leftovers and str(uid1) not in leftovers, leftovers
    status = json.loads(app.sh("applctl status --json", check=False).stdout)
    assert status["mode"] == "ephemeral" and status["visitors_served"] >= 2


def test_a_visitor_over_the_cap_is_told_the_hub_is_full_and_gets_no_server(workshop):
    app = workshop
    while len([u for u in units(app) if u.removeprefix("jupyter-").removesuffix(".service") not in pool(app)]) \
            < MAX_VISITORS:
        arrive(app)
    before = units(app)
    r = Browser(app.url).get("/")
    assert r.status_code == 503 and "This hub is full; try again in a few minutes" in r.text
    time.sleep(2)
    # The warm pool may refill meanwhile (every few seconds): its servers are no visitor's.
    assert {u for u in units(app) - before if u.removeprefix("jupyter-").removesuffix(".service")
            not in pool(app)} == set()
    app.sh("applctl stop --all >/dev/null")


def test_a_pooled_server_answers_only_its_visitor_and_the_pool_refills(workshop):
    app = workshop
    pooled = ready_pool(app)
    other, other_name, _ = arrive(app)
    ready_pool(app)
    pooled = pool(app)
    b, name, seconds = arrive(app)
    print(f"\nlogin to ready with a warm server: {seconds:.2f} s")
    assert name in pooled and name not in pool(app)
    assert b.api_status(name).status_code == 200
    # Another visitor's cookies do not open it: the hub's OAuth says no.
    r = other.get(f"/user/{name}/api/status")
    assert r.status_code == 403 or f"/user/{name}/" not in r.url, (r.status_code, r.url)
    refill = ready_pool(app)
    assert name not in refill
    app.sh("applctl stop --all >/dev/null")


def test_the_site_password_is_asked_before_anything_starts(workshop):
    app = workshop
    app.sh("applctl ephemeral password set --stdin", input=PASSWORD + "\n")
    assert app.sh("stat -c '%a %U %G' /etc/jupyterhub/ephemeral-password").stdout.split() == \
        ["640", "root", "jupyterhub"]
    app.wait_hub()
    b = Browser(app.url)
    page = b.get("/")
    assert 'id="password_input"' in page.text and "visitor-" not in page.url
    before = units(app)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    wrong = b.s.post(page.url, data={"_xsrf": xsrf, "password": "not-it"}, timeout=60)
    assert wrong.status_code == 403 and "That is not the password" in wrong.text
    assert units(app) - before <= set(f"jupyter-{n}.service" for n in pool(app))
    right = b.s.post(page.url, data={"_xsrf": xsrf, "password": PASSWORD}, timeout=60)
    m = VISITOR.search(right.url) or VISITOR.search(right.text)
    assert m, (right.status_code, right.url)
    b.wait_for_server(m.group(1))
    app.sh("applctl ephemeral password off")
    app.sh("applctl stop --all >/dev/null")


def test_the_daemon_decides_the_mode_and_accounts_come_back(workshop):
    app = workshop
    reply = json.loads(app.daemon_request('{"op": "spawn", "user": "alice"}').stdout)
    assert reply["error"]["code"] == "wrong_mode", reply
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("applctl reload")
    app.wait_hub()
    reply = json.loads(app.daemon_request('{"op": "spawn", "user": "visitor-abcdefghij"}').stdout)
    assert reply["error"]["code"] == "wrong_mode", reply
    # The pool's servers are gone with the mode, and nothing of them stays.
    deadline = time.monotonic() + 60
    while units(app) or app.sh("ls /var/lib/private", check=False).stdout.count("jupyter-visitor-"):
        assert time.monotonic() < deadline, (units(app), app.sh("ls /var/lib/private", check=False).stdout)
        time.sleep(1)
    app.sh("applctl adduser alice >/dev/null 2>&1 || true")
    b = Browser(app.url)
    b.login_and_start("alice", USERS["alice"])
    b.wait_for_server("alice")
    app.sh("applctl stop alice")
