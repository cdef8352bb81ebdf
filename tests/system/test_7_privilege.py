"""No way to root from the hub or a jupyterhub-admin, on the booted appliance.

ivan is a jupyterhub-admin (so he may `sudo applctl`); trudy is a member of the
sudo group, root in all but name. Root itself may still do what ivan may not.
The configuration is restored when the module ends.
"""

from __future__ import annotations

import json

import pytest
from browser import Browser

PASSWORD = "priv-pass-7"
CONFIG = "/etc/jupyterhub/appliance.toml"
DROPIN = "/etc/jupyterhub/jupyterhub_config.d/70-test.py"


@pytest.fixture(scope="module", autouse=True)
def app(appliance):
    saved = appliance.sh(f"cat {CONFIG}").stdout
    for name, groups in (("ivan", "jupyterhub-users,jupyterhub-admins"), ("trudy", "sudo")):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
        appliance.sh(f"usermod -aG {groups} {name}")
        appliance.sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    alice_had_access = "jupyterhub-users" in appliance.sh("id -nG alice").stdout.split()
    appliance.sh("applctl stop --all && applctl adduser alice")  # whatever other modules left
    yield appliance
    appliance.ct.write(CONFIG, saved)
    appliance.sh(f"rm -f {DROPIN}; rm -rf /usr/local/share/jupyter/kernels/evil")
    appliance.sh("applctl stop --all; applctl deluser trudy", check=False)
    if not alice_had_access:
        appliance.sh("applctl deluser alice")
    appliance.sh("applctl reload", check=False)
    appliance.wait_hub()


def as_ivan(app, args: str):
    """sudo applctl ARGS as the jupyterhub-admin ivan; never a traceback."""
    r = app.sh(f"sudo -S -p '' applctl {args}", user="ivan", input=f"{PASSWORD}\n", check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def refused_for_ivan(app, args: str, says: str) -> None:
    before = app.sh(f"sha256sum {CONFIG}").stdout
    r = as_ivan(app, args)
    assert r.returncode == 1 and says in r.stderr, (args, r.returncode, r.stdout, r.stderr)
    assert app.sh(f"sha256sum {CONFIG}").stdout == before, "the configuration changed"


def spawn(app, name: str, password: str) -> tuple[bool, list[str]]:
    b = Browser(app.url)
    page = b.login_and_start(name, password)
    if page.status_code >= 400:  # the spawn failed at once: the hub shows its error page
        return False, [page.text]
    return b.spawn_outcome(name)


def daemon_refusal(app, request: dict) -> dict:
    """The daemon's answer to a raw request sent as the hub's own uid."""
    reply = json.loads(app.daemon_request(json.dumps(request), user="jupyterhub").stdout)
    assert reply["ok"] is False, reply
    return reply["error"]


def test_a_jupyterhub_admin_cannot_open_a_way_to_root_with_applctl(app):
    refused_for_ivan(app, "adduser trudy", "trudy is root in all but name (a member of sudo")
    assert "jupyterhub-users" not in app.sh("id -nG trudy").stdout
    refused_for_ivan(app, "config set daemon.min_uid 100", "UID_MIN is 1000")
    refused_for_ivan(app, "config set daemon.allow_privileged_users true", "only root")
    refused_for_ivan(app, 'config set daemon.privileged_groups \'["root"]\'', "may only grow")
    # An interpreter ivan owns would run as every user who opens the kernel.
    app.sh("mkdir -p /home/ivan/env/bin && cp /usr/bin/python3 /home/ivan/env/bin/python", user="ivan")
    refused_for_ivan(app, "kernels add --name evil --python /home/ivan/env/bin/python", "owned by uid")
    assert app.sh("test -e /usr/local/share/jupyter/kernels/evil", check=False).returncode != 0
    # What is safe stays possible under sudo.
    assert as_ivan(app, "config set daemon.min_uid 1001").returncode == 0
    assert as_ivan(app, "config set daemon.min_uid 1000").returncode == 0


def test_the_daemon_starts_no_server_for_a_root_equivalent_account(app):
    app.sh("applctl adduser trudy")  # root may give access, on purpose
    refused_for_ivan(app, "token trudy", "root in all but name")
    error = daemon_refusal(app, {"op": "spawn", "user": "trudy"})
    assert error["code"] == "privileged_user" and "sudo" in error["message"]
    ready, messages = spawn(app, "trudy", PASSWORD)
    assert not ready and any("root in all but name" in m for m in messages), messages
    assert app.sh("systemctl is-active jupyter-trudy.service", check=False).stdout.strip() != "active"


def test_root_may_allow_privileged_users(app):
    app.sh("applctl config set daemon.allow_privileged_users true && applctl reload")
    app.wait_hub()
    ready, messages = spawn(app, "trudy", PASSWORD)
    assert ready, messages
    app.sh("applctl stop trudy && applctl config unset daemon.allow_privileged_users && applctl reload")
    app.wait_hub()


def test_the_hub_may_not_choose_what_loads_code_in_a_server(app):
    for request, field in [
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env"),
        ({"env": {"JUPYTERHUB_SINGLEUSER_APP": "evil.App"}}, "env"),
        ({"env": {"JUPYTERHUB_USER": "bob"}}, "env"),
        ({"options": {"ServerApp.jpserver_extensions": {"evil": True}}}, "options"),
        ({"args": ["--config=/tmp/evil.py"]}, "args"),
    ]:
        error = daemon_refusal(app, {"op": "spawn", "user": "alice", **request})
        assert error["field"] == field, (request, error)
    assert app.sh("systemctl is-active jupyter-alice.service", check=False).stdout.strip() != "active"


def test_an_administrators_environment_reaches_the_server_and_bad_args_are_named(app):
    app.sh("applctl config set spawner.environment '{ HF_HOME = \"/srv/hf\" }' && applctl reload")
    app.wait_hub()
    ready, messages = spawn(app, "alice", "wonderland-1")
    assert ready, messages
    pid = app.unit_props("jupyter-alice.service", "MainPID")["MainPID"]
    assert "HF_HOME=/srv/hf" in app.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    app.sh("applctl stop alice")
    app.ct.write(DROPIN, 'c.Spawner.args = ["--ServerApp.extra_static_paths=/tmp"]\n')
    app.sh("applctl reload")
    app.wait_hub()
    ready, messages = spawn(app, "alice", "wonderland-1")
    assert not ready and any("Spawner.args" in m and "extra_static_paths" in m for m in messages), messages
    app.sh(f"rm -f {DROPIN}")
    app.ct.write(DROPIN, "c.SystemdSpawner.isolate_tmp = False\n")
    app.sh("applctl reload")
    app.wait_hub()
    ready, messages = spawn(app, "alice", "wonderland-1")
    assert not ready and any("SystemdSpawner.isolate_tmp = False" in m for m in messages), messages
    app.sh(f"rm -f {DROPIN}; applctl config unset spawner.environment; applctl reload")
    app.wait_hub()
