"""Single sign-on the way Entra ID needs it (issue 29), on the booted appliance with
npm's oidc-provider (oidc_provider.py): [oidc] claims_from = "id_token" and
username_domain. ines's user name (a UPN, ines@example.org) and her groups (lab,
lab-admins) are in her ID token only, as at Entra ID; her userinfo has neither.
The hub checks the token's signature against the provider's real keys (its
jwks_uri), maps the UPN to the local ines, and makes her a hub admin through
admin_groups; ivan, whose UPN is ines@evil.example, is refused. A refresh trades
the refresh token for a new, checked ID token; once the provider disables ines,
her session ends and her server stops.
"""

from __future__ import annotations

import time

import pytest
from browser import Browser
from oidc_provider import single_sign_on
from visitor_client import hub_api

REFRESH_AGE = 10
OIDC = (f'claims_from = "id_token"\nusername_domain = "example.org"\nadmin_groups = ["lab-admins"]\n'
        f"refresh_age = {REFRESH_AGE}\n")


@pytest.fixture(scope="module")
def sso(appliance):
    appliance.sh("id ines >/dev/null 2>&1 || useradd -m ines; applctl adduser ines >/dev/null")
    with single_sign_on(appliance, OIDC, servers=("alice", "ines")) as provider:
        yield appliance, provider


def sign_in(app, provider, login: str):
    """LOGIN through the provider's form: (the browser, the hub's answer to the callback)."""
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    back = provider.sign_in(b.s, r, login)
    return b, b.s.get(back.headers["location"], allow_redirects=False, timeout=60)


def logged_in(app, b: Browser) -> bool:
    return not b.get("/hub/home").url.startswith(f"{app.url}/hub/login")


def running(app, name: str) -> bool:
    return bool((hub_api(app, "GET", f"/users/{name}") or {}).get("servers"))


def hub_log(app, since: str) -> str:
    return app.sh(f"journalctl -u jupyterhub --since '{since}' --no-pager -o cat", check=False).stdout


def test_a_upn_and_groups_only_in_the_id_token_land_ines_in_her_server_as_a_hub_admin(sso):
    app, provider = sso
    b, r = sign_in(app, provider, "ines")
    assert r.status_code == 302, (r.status_code, r.text[:300])
    page = b.get("/hub/spawn")
    if 'id="spawn_form"' in page.text:  # GPUs visible (a fake NVML left by the GPU tests)
        b.spawn_with_form("ines", {"gpus": "0"})
    b.wait_for_server("ines")
    k = b.start_kernel("ines")
    assert b.execute("ines", k, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name)").strip() == "ines"
    user = hub_api(app, "GET", "/users/ines")
    assert user["admin"] is True and {"lab", "lab-admins"} <= set(user["groups"])  # from the ID token


def test_a_name_of_another_domain_is_refused_saying_so(sso):
    app, provider = sso
    b, r = sign_in(app, provider, "ivan")  # ines@evil.example
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert "takes only accounts of example.org, not of evil.example" in r.text
    assert not logged_in(app, b)


def test_a_refresh_takes_a_new_checked_id_token_and_a_disabled_person_loses_the_server(sso):
    app, provider = sso
    b, r = sign_in(app, provider, "ines")
    assert r.status_code == 302 and running(app, "ines")
    since = app.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(REFRESH_AGE + 1)
    assert logged_in(app, b)  # this request's refresh: the provider took the refresh token
    said = hub_log(app, since)
    assert "refreshing ines's tokens for a new ID token" in said and "refused" not in said, said[-2000:]
    provider.disable("ines")
    try:
        time.sleep(REFRESH_AGE + 1)
        assert not logged_in(app, b)  # the provider refused her refresh token (invalid_grant)
        deadline = time.monotonic() + 120
        while running(app, "ines"):
            assert time.monotonic() < deadline, "ines's server was not stopped"
            time.sleep(1)
    finally:
        provider.disable("ines", False)
    assert "the provider refused ines's refresh token" in hub_log(app, since)
