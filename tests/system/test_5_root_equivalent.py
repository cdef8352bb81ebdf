"""Root in all but name through sudo, incus-admin or polkit: no access under sudo
applctl, no server from the daemon, named by doctor; on the booted appliance.

reva is a jupyterhub-admin (sudo applctl). sally gets a sudoers rule for one harmless
command, ingrid is in incus-admin, paula is named by a polkit rule, gus is in a
group a polkit rule names, nora has access and gets a sudoers rule afterwards.
"""

from __future__ import annotations

import json
import time

import pytest

PASSWORD = "root-eq-5"
CONFIG = "/etc/jupyterhub/appliance.toml"
SUDOERS = "/etc/sudoers.d/test-root-eq"
POLKIT = "/etc/polkit-1/rules.d/50-test-root-eq.rules"
NAMES = ("sally", "ingrid", "paula", "gus", "nora")
RULES = """polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.systemd1.manage-units" &&
        (subject.user == "paula" || subject.isInGroup("polkitops"))) {
        return polkit.Result.YES;
    }
});
"""


@pytest.fixture(scope="module", autouse=True)
def app(appliance):
    a = appliance
    a.sh("getent group incus-admin >/dev/null || groupadd incus-admin; "
         "getent group polkitops >/dev/null || groupadd polkitops")
    for name in ("reva", *NAMES):
        a.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
        a.sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    a.sh("usermod -aG jupyterhub-users,jupyterhub-admins reva && usermod -aG incus-admin ingrid && "
         "usermod -aG polkitops gus")
    a.ct.write(SUDOERS, "sally ALL=(root) /usr/bin/true\n")
    a.sh(f"chmod 0440 {SUDOERS} && visudo -cqf {SUDOERS} && mkdir -p /etc/polkit-1/rules.d")
    a.ct.write(POLKIT, RULES)
    a.sh("applctl adduser nora")
    yield a
    a.sh(f"rm -f {SUDOERS} {POLKIT}")
    for name in ("reva", *NAMES):
        a.sh(f"applctl stop {name}; applctl deluser {name}", check=False)


def as_reva(app, args: str):
    r = app.sh(f"sudo -S -p '' applctl {args}", user="reva", input=f"{PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def refused_for_reva(app, args: str, says: str) -> None:
    before = app.sh("getent group jupyterhub-users jupyterhub-admins").stdout
    r = as_reva(app, args)
    assert r.returncode == 1 and "root in all but name" in r.stderr and says in r.stderr, (args, r.stderr)
    # One line of applctl's (the container's sudo also warns that its hostname does not resolve).
    assert len([line for line in r.stderr.splitlines() if not line.startswith("sudo:")]) == 1, r.stderr
    assert app.sh("getent group jupyterhub-users jupyterhub-admins").stdout == before, "access changed"


def spawn_refusal(app, name: str) -> dict:
    """What the daemon answers the hub's uid (a compromised hub) asking for NAME's server."""
    reply = json.loads(app.daemon_request(json.dumps({"op": "spawn", "user": name}), user="jupyterhub").stdout)
    assert reply["ok"] is False, reply
    assert app.sh(f"systemctl is-active jupyter-{name}.service", check=False).stdout.strip() != "active"
    return reply["error"]


def test_a_jupyterhub_admin_cannot_give_access_to_root_equivalent_accounts(app):
    refused_for_reva(app, "adduser sally", "sudo grants it (root) /usr/bin/true")
    refused_for_reva(app, "adduser ingrid", "a member of incus-admin")
    refused_for_reva(app, "adduser paula", f"polkit rule {POLKIT} names it")
    refused_for_reva(app, "adduser gus", f"polkit rule {POLKIT} names its group polkitops")
    # The appliance's own sudoers rule (sudo applctl) is not a grant: reva is cleared.
    assert as_reva(app, "adduser --admin reva").returncode == 0


def test_a_right_given_after_access_is_seen_by_admin_add_and_by_the_daemon_without_a_reload(app):
    app.sh(f"echo 'nora ALL=(root) /usr/bin/id' >> {SUDOERS}")
    refused_for_reva(app, "admin add nora", "sudo grants it (root) /usr/bin/id")
    # The path unit judges again when sudoers changes: no reload, no applctl.
    deadline = time.monotonic() + 30
    while "nora" not in verdict(app)["granted"]:
        assert time.monotonic() < deadline, f"the sudoers change was not judged in 30 s: {verdict(app)}"
        time.sleep(0.3)
    error = spawn_refusal(app, "nora")
    assert error["code"] == "privileged_user" and "/usr/bin/id" in error["message"], error


def verdict(app) -> dict:
    return json.loads(app.sh("cat /run/jupyterhub-appliance/root-grants.json").stdout)


def test_the_daemon_starts_no_server_for_them_even_when_root_gave_access(app):
    # Root may give access on purpose; the daemon still refuses (until
    # daemon.allow_privileged_users), whether or not its verdict has judged them yet.
    app.sh("applctl adduser sally && applctl adduser ingrid && applctl adduser paula && applctl adduser gus")
    for name, says in (("sally", "sudo grants it (root) /usr/bin/true"), ("ingrid", "incus-admin"),
                       ("paula", f"polkit rule {POLKIT} names it"), ("gus", "names its group polkitops")):
        error = spawn_refusal(app, name)
        assert error["code"] == "privileged_user" and says in error["message"], (name, error)
    # The verdict is root's, and no one else may read who has sudo.
    assert app.sh("stat -c '%U %a' /run/jupyterhub-appliance/root-grants.json").stdout.split() == ["root", "600"]
    # Why the daemon cannot ask sudo itself: in its sandbox (no capabilities, its
    # system call filter) sudo does not run.
    r = app.sh("systemd-run --quiet --wait --pipe -p CapabilityBoundingSet= -p NoNewPrivileges=yes "
               "-p SystemCallFilter=@system-service -p 'SystemCallFilter=~@privileged @resources' "
               "/usr/bin/sudo -n -l -U sally", check=False)
    assert r.returncode != 0 and "may run the following commands" not in r.stdout, (r.stdout, r.stderr)


def test_doctor_names_them(app):
    r = app.sh("applctl doctor --json", check=False)
    check = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "root-equivalent accounts")
    assert not check["ok"]
    for name in ("sally", "ingrid", "paula", "gus", "nora"):
        assert f"{name} is root in all but name" in check["detail"], check
    assert "reva" not in check["detail"] and "alice" not in check["detail"]


def test_without_the_grants_they_are_cleared(app):
    app.sh(f"rm -f {SUDOERS} {POLKIT} && gpasswd -d ingrid incus-admin && gpasswd -d gus polkitops")
    app.sh("systemctl start jupyterhub-appliance-rootcheck.service")
    cleared = verdict(app)
    assert {"sally", "nora", "paula", "gus", "ingrid", "reva"} <= set(cleared["checked"])
    assert cleared["granted"] == {}, cleared
    check = next(c for c in json.loads(app.sh("applctl doctor --json", check=False).stdout)["checks"]
                 if c["name"] == "root-equivalent accounts")
    assert check["ok"], check
