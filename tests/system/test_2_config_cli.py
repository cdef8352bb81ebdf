"""Configuration errors and applctl's refusals, on the booted appliance."""

from __future__ import annotations

import json
import time

import pytest
from booted import USERS

# At module level: collected before tests/vm, whose conftest would otherwise be the
# `conftest` a function-level import finds.
from browser import Browser


def test_bad_config_stops_the_hub_with_one_clear_message(appliance):
    good = appliance.config_text()
    try:
        appliance.ct.write("/etc/jupyterhub/appliance.toml", good + "\n[spawner]\nmem_limit = \"lots\"\n")
        out = appliance.sh("applctl config validate", check=False)
        assert out.returncode != 0
        assert "spawner.mem_limit = 'lots' is not accepted" in out.stderr
        assert "Traceback" not in out.stderr
        appliance.sh("systemctl restart jupyterhub", check=False)
        # It checks the file first thing and exits 78, which the unit does not
        # restart on: it stays failed until the file is fixed.
        appliance.ct.wait_unit("jupyterhub.service", ("failed",), timeout=30)
        status = appliance.sh("systemctl status jupyterhub --no-pager --full -n 20", check=False).stdout
        assert "/etc/jupyterhub/appliance.toml: spawner.mem_limit = 'lots' is not accepted" in status
        time.sleep(3)  # longer than RestartSec: a restart loop would show by now
        assert appliance.unit_props("jupyterhub.service", "ActiveState", "NRestarts") == {
            "ActiveState": "failed", "NRestarts": "0"}
        # The daemon refuses the same file the same way.
        appliance.sh("systemctl restart jupyterhub-appliance.service", check=False)
        appliance.ct.wait_for("journalctl -u jupyterhub-appliance.service -n 20 --no-pager | "
                              "grep -qF \"spawner.mem_limit = 'lots' is not accepted\"", timeout=30)
    finally:
        appliance.ct.write("/etc/jupyterhub/appliance.toml", good)
        appliance.sh("systemctl reset-failed jupyterhub jupyterhub-appliance.service; "
                     "systemctl start jupyterhub-appliance.socket jupyterhub")
    appliance.wait_hub()


def test_unknown_key_is_named(appliance):
    appliance.ct.write("/root/typo.toml", "[hub]\nprot = 8000\n")
    out = appliance.sh("applctl config validate /root/typo.toml", check=False)
    assert out.returncode == 1
    assert out.stderr.strip() == ("applctl: /root/typo.toml: hub.prot = 8000 is not accepted: "
                                  "known keys in [hub] are port, bind_address, hub_port, proxy_api_port, dashboard_port, "
                                  "metrics_port, log_level, mode")
    out = appliance.sh("applctl config validate --json /root/typo.toml", check=False)
    assert json.loads(out.stdout)["key"] == "hub.prot"


@pytest.mark.parametrize("name, says", [
    ("root", "root can never have a server"),
    ("../x", "is not a valid user name"),
    ("'a b'", "is not a valid user name"),
    ("x" * 300, "is not a valid user name"),
    ("nosuchuser", "there is no user nosuchuser"),
    ("daemon", "is a system account"),
])
def test_adduser_refuses_bad_names_and_changes_nothing(appliance, name, says):
    before = appliance.sh("getent group jupyterhub-users jupyterhub-admins; getent passwd | wc -l").stdout
    out = appliance.sh(f"applctl adduser {name}", check=False)
    assert out.returncode != 0
    assert says in out.stderr and "Traceback" not in out.stderr
    assert appliance.sh("getent group jupyterhub-users jupyterhub-admins; getent passwd | wc -l").stdout == before


def test_adduser_create_and_admin_and_idempotent(appliance):
    out = appliance.sh("applctl adduser --create --admin --json erin")
    assert json.loads(out.stdout) == {"user": "erin", "created": True,
                                      "added_to": ["jupyterhub-users", "jupyterhub-admins"], "gpus": None}
    assert "already had this access" in appliance.sh("applctl adduser erin").stdout
    users = json.loads(appliance.sh("applctl users --json").stdout)
    erin = {"user": "erin", "admin": True, "server": "stopped", "gpus": [], "last_activity": None,
            "limits": {"mem": None, "cpu": None, "tasks": None}}
    assert erin in users
    # An admin may run applctl through sudo, and nothing else.
    appliance.sh("chpasswd", input="erin:erin-pass-5\n")
    ok = appliance.sh("sudo -S -p '' applctl users --json", user="erin", input="erin-pass-5\n", check=False)
    assert ok.returncode == 0, ok.stderr
    assert erin in json.loads(ok.stdout)
    denied = appliance.sh("sudo -S -p '' id", user="erin", input="erin-pass-5\n", check=False)
    assert denied.returncode != 0 and "not allowed" in denied.stderr


def test_applctl_needs_root_and_says_so(appliance):
    out = appliance.sh("applctl adduser bob", user="bob", check=False)
    assert out.returncode != 0
    assert "needs root" in out.stderr and "sudo applctl" in out.stderr
    assert "bob" not in appliance.sh("getent group jupyterhub-users").stdout


def test_users_and_status_report_running_servers(appliance):
    users = {u["user"]: u for u in json.loads(appliance.sh("applctl users --json").stdout)}
    assert users["alice"]["server"] == "active"
    status = appliance.sh("applctl status --json", check=False)
    data = json.loads(status.stdout)
    assert status.returncode == 0, data["problems"]
    assert data["units"]["jupyterhub.service"] == "active"
    assert data["url"].endswith(f":{appliance.port}/")


def test_deluser_stops_server_first_and_revokes_login(appliance):
    out = json.loads(appliance.sh("applctl deluser --json carol").stdout)
    assert out == {"user": "carol", "stopped": True, "removed_from": ["jupyterhub-users"], "hub_record_deleted": True,
                   "gpu_quota_removed": False, "issued_tokens_revoked": 0, "account_deleted": False,
                   "home_deleted": False}
    assert appliance.sh("systemctl is-active jupyter-carol.service", check=False).stdout.strip() != "active"
    r = Browser(appliance.url).login("carol", USERS["carol"])
    assert r.status_code == 403 and "carol has not been given access" in r.text
    assert "had no access" in appliance.sh("applctl deluser carol").stdout
