"""Single sign-on with [oidc] accounts = "create" (issue 29), on the booted appliance,
through the real OpenID provider of oidc_provider.py: rosa (no account here, in the
provider groups lab and gpu), alice (a local account made otherwise) and mallory
(whose name at the provider is root).

The root daemon makes rosa's account at her first login, once: a uid in [oidc]
uid_min..uid_max, primary group jupyterhub-sso, a 0700 home, a locked password and
no login shell; her server runs as it, and the provider's gpu group gives her that
group's GPU quota. alice is never taken over, root is refused in words, and the
hub's uid cannot have an account made when appliance.toml says "existing".
"""

from __future__ import annotations

import json

import pytest
from browser import Browser
from gpus import fake_config, holders, install_fake_gpus
from oidc_provider import oidc_toml, single_sign_on
from visitor_client import hub_api

UID_MIN, UID_MAX = 70100, 70199


def sso_config(accounts: str = "create") -> str:
    return (f'accounts = "{accounts}"\nuid_min = {UID_MIN}\nuid_max = {UID_MAX}\n'
            # nobody gets a GPU but through a group: rosa's, at the provider
            "[gpu]\nquota = 0\nquota_groups = { gpu = 2 }\nqueue = false\n")


@pytest.fixture(scope="module")
def sso(appliance, tmp_path_factory):
    app = appliance
    install_fake_gpus(app, tmp_path_factory, fake_config())
    try:
        # the daemon restarts to load the fake NVML
        with single_sign_on(app, sso_config(), servers=("alice", "rosa"),
                            reload="systemctl daemon-reload && systemctl stop jupyterhub-appliance.service "
                                   "&& applctl reload") as provider:
            yield app, provider
    finally:
        app.sh("userdel -r rosa 2>/dev/null", check=False)


def sign_in(app, provider, login: str):
    """Through the hub's single sign-on as LOGIN: (the browser, the hub's answer to the callback)."""
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    back = provider.sign_in(b.s, r, login)
    return b, b.s.get(back.headers["location"], timeout=120)


def made_accounts(app, name: str) -> int:
    return app.sh(f"journalctl -u jupyterhub-appliance --no-pager | grep -c 'made the single sign-on account {name} '",
                  check=False).stdout.strip()


def passwd(app, name: str) -> list[str]:
    return app.sh(f"getent passwd {name}").stdout.strip().split(":")


def test_the_first_login_makes_the_account_once_with_a_locked_password_and_no_shell(sso):
    app, provider = sso
    assert app.sh("id rosa", check=False).returncode != 0
    b, page = sign_in(app, provider, "rosa")
    assert page.status_code == 200 and 'id="spawn_form"' in page.text, (page.status_code, page.text[:300])
    _, _, uid, gid, _, home, shell = passwd(app, "rosa")
    assert UID_MIN <= int(uid) <= UID_MAX
    assert app.sh("getent group jupyterhub-sso").stdout.split(":")[2] == gid
    assert (home, shell) == ("/home/rosa", "/usr/sbin/nologin")
    assert app.sh("stat -c '%U %a' /home/rosa").stdout.split() == ["rosa", "700"]
    assert app.sh("passwd -S rosa").stdout.split()[1] == "L"  # locked: no password logs in
    assert "jupyterhub-users" in app.sh("id -nG rosa").stdout.split()
    assert app.sh("grep -q '^rosa:' /etc/subuid /etc/subgid", check=False).returncode != 0
    assert app.sh("su -c true rosa", check=False).returncode != 0  # nologin
    # the second login finds it: the same account, made once
    b2, page = sign_in(app, provider, "rosa")
    assert page.status_code == 200, (page.status_code, page.text[:300])
    assert passwd(app, "rosa")[2] == uid
    assert made_accounts(app, "rosa") == "1"


def test_the_provider_gpu_group_gives_its_quota_and_the_server_runs_as_the_new_account(sso):
    app, provider = sso
    # The hub's uid asking for rosa without her provider groups: the default quota, 0.
    reply = json.loads(app.daemon_request(json.dumps({"op": "spawn", "user": "rosa", "gpus": 2}),
                                          user="jupyterhub").stdout)
    assert reply["error"]["code"] == "quota", reply
    b, page = sign_in(app, provider, "rosa")
    r = b.spawn_with_form("rosa", {"gpus": "2"})
    assert r.status_code == 302, (r.status_code, r.text[:500])
    b.wait_for_server("rosa")
    assert list(holders(app).values()).count("rosa") == 2
    k = b.start_kernel("rosa")
    assert b.execute("rosa", k, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name)").strip() == "rosa"


def test_an_existing_account_is_never_taken_over(sso):
    app, provider = sso
    before = passwd(app, "alice")
    _, page = sign_in(app, provider, "alice")
    assert page.status_code == 403, (page.status_code, page.text[:300])
    assert ("You signed in as alice, but this machine makes no account for that name: alice is already an account "
            "on this machine that single sign-on did not make") in page.text
    assert passwd(app, "alice") == before


def test_a_name_the_daemon_refuses_is_refused_in_words(sso):
    app, provider = sso
    root = passwd(app, "root")
    _, page = sign_in(app, provider, "mallory")  # her name at the provider: root
    assert page.status_code == 403, (page.status_code, page.text[:300])
    assert "You signed in as root, but this machine makes no account for that name: root is a name this machine " \
           "keeps for itself" in page.text
    assert passwd(app, "root") == root and hub_api(app, "GET", "/users/root") is None


def test_the_hub_uid_cannot_have_accounts_made_unless_appliance_toml_says_create(sso):
    """Last: it switches the module to accounts = "existing"."""
    app, provider = sso
    ask = json.dumps({"op": "account", "user": "zed"})
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(oidc_toml(provider, sso_config("existing"))))
    app.sh("applctl reload")
    app.wait_hub()
    reply = json.loads(app.daemon_request(ask, user="jupyterhub").stdout)
    assert reply["error"]["code"] == "config" and 'accounts = "create"' in reply["error"]["message"], reply
    assert app.sh("id zed", check=False).returncode != 0
