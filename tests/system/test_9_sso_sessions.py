"""Single sign-on's sessions (issue 29 item 3), on the booted appliance with npm's
oidc-provider (oidc_provider.py): logout offers the provider's end-session endpoint;
a refresh token keeps alice logged in past her access token's life; disabling her at
the provider refuses her next login and stops her server, with the reason on her home
page; a provider that does not answer stops nothing; and the key of the tokens in the
hub's database is root's, reaching the hub only as a systemd credential.

Access tokens live ACCESS_TTL s here and the hub checks a person again after
REFRESH_AGE s ([oidc] refresh_age), so that a refresh happens within a test.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from booted import HUB_PY
from browser import Browser
from oidc_provider import CLIENT_ID, UNIT, single_sign_on
from visitor_client import hub_api

KEY_FILE = "/var/lib/jupyterhub-appliance/secrets/jupyterhub_crypt_key"
ACCESS_TTL, REFRESH_AGE = 12, 10


@pytest.fixture(scope="module")
def sso(appliance):
    with single_sign_on(appliance, f"refresh_age = {REFRESH_AGE}\n", access_token_ttl=ACCESS_TTL) as provider:
        yield appliance, provider


def log_in(app, provider, login: str = "alice") -> Browser:
    """alice through the provider's login form, back at the hub with its cookie (the
    callback's redirect to a spawn not followed)."""
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    back = provider.sign_in(b.s, r, login)
    r = b.s.get(back.headers["location"], allow_redirects=False, timeout=60)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    return b


def try_to_sign_in(provider, s, r, login: str, rounds: int = 2):
    """Provider.sign_in, giving up after ROUNDS of the login form: the response
    where it stopped (a disabled person's login only ever brings the form back)."""
    while r.is_redirect and r.headers["location"].startswith(("/", provider.issuer + "/")):
        r = s.get(urljoin(r.url, r.headers["location"]), allow_redirects=False, timeout=30)
        if r.status_code == 200 and "<form" in r.text:
            if rounds == 0:
                break
            rounds -= 1
            action = re.search(r'<form[^>]*action="([^"]+)"', r.text).group(1)
            fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', r.text), login=login,
                          password="any")
            r = s.post(urljoin(r.url, action), data=fields, allow_redirects=False, timeout=30)
    return r


def logged_in(app, b: Browser) -> bool:
    return not b.get("/hub/home").url.startswith(f"{app.url}/hub/login")


def start_server(app, b: Browser) -> None:
    page = b.get("/hub/spawn")
    if 'id="spawn_form"' in page.text:  # GPUs visible (a fake NVML left by the GPU tests)
        b.spawn_with_form("alice", {"gpus": "0"})
    b.wait_for_server("alice")


def running(app) -> bool:
    return bool((hub_api(app, "GET", "/users/alice") or {}).get("servers"))


def whose(app, token: str) -> int:
    """The status of /hub/api/user with an API token."""
    return requests.get(app.url + "/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=60).status_code


def hub_log(app, since: str) -> str:
    return app.sh(f"journalctl -u jupyterhub --since '{since}' --no-pager -o cat", check=False).stdout


def now(app) -> str:
    return app.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()


def test_logout_ends_the_hub_session_and_offers_the_providers_end_session(sso):
    app, provider = sso
    b = log_in(app, provider)
    assert logged_in(app, b)
    r = b.s.get(app.url + "/hub/logout", allow_redirects=False, timeout=30)
    to = urlsplit(r.headers.get("location", ""))
    assert r.status_code == 302 and f"{to.scheme}://{to.netloc}{to.path}" == provider.issuer + "/session/end"
    assert parse_qs(to.query) == {"client_id": [CLIENT_ID]}
    assert not logged_in(app, b)  # the hub's session is over already
    # The provider asks whether to sign out there too; yes ends its session, so the
    # next single sign-on asks for the password again.
    page = b.s.get(r.headers["location"], timeout=30)
    assert page.status_code == 200 and "<form" in page.text
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text).group(1)
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text), logout="yes")
    assert b.s.post(urljoin(page.url, action), data=fields, timeout=30).status_code == 200
    r = b.s.get(app.url + "/hub/oauth_login", timeout=30)
    assert r.url.startswith(provider.issuer) and 'name="login"' in r.text


def test_a_refresh_token_keeps_the_session_past_the_access_tokens_life(sso):
    app, provider = sso
    b = log_in(app, provider)
    since = now(app)
    deadline = time.monotonic() + 90  # the provider's clock may allow a token a little longer
    while "Refreshing oauth access token for alice" not in (said := hub_log(app, since)):
        assert time.monotonic() < deadline, said[-2000:]
        time.sleep(REFRESH_AGE / 2)
        assert logged_in(app, b)
    assert logged_in(app, b)  # the hub checked with the provider and traded the refresh token
    assert "Requiring fresh login" not in hub_log(app, since)
    # the refreshed session still spawns (JupyterHub refreshes again before a spawn)
    start_server(app, b)


def test_an_unreachable_provider_stops_nothing(sso):
    app, provider = sso
    b = log_in(app, provider)
    if not running(app):
        start_server(app, b)
    app.sh(f"systemctl kill -s STOP {UNIT}")  # no answer at all, as from a provider that is down
    try:
        since = now(app)
        time.sleep(max(ACCESS_TTL, REFRESH_AGE) + 2)
        b.get("/hub/home", timeout=120)
        assert "the session stands" in hub_log(app, since)
    finally:
        app.sh(f"systemctl kill -s CONT {UNIT}")
    assert running(app) and logged_in(app, b)


def test_a_person_disabled_at_the_provider_cannot_log_in_and_loses_the_server_with_the_reason(sso):
    app, provider = sso
    b = log_in(app, provider)
    if not running(app):
        start_server(app, b)
    token = hub_api(app, "POST", "/users/alice/tokens")["token"]  # an API token of hers
    assert whose(app, token) == 200
    provider.disable("alice")
    try:
        time.sleep(REFRESH_AGE + 1)
        assert not logged_in(app, b)  # her next request: the hub checked, the provider refused her
        deadline = time.monotonic() + 120
        while running(app):
            assert time.monotonic() < deadline, "alice's server was not stopped"
            time.sleep(1)
        assert app.unit_props("jupyter-alice.service", "ActiveState")["ActiveState"] != "active"
        assert whose(app, token) == 403  # her API tokens ended with her session
        # her next login: the provider's form takes her back, never to the hub
        other = Browser(app.url)
        r = other.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
        r = try_to_sign_in(provider, other.s, r, "alice")
        # (oidc-provider answers the resumed authorization of an account it no longer
        # finds with an error page, or its login form again)
        assert not (r.is_redirect and r.headers["location"].startswith(app.url)), r.headers
        assert r.status_code in (200, 400, 500) and not logged_in(app, other)
    finally:
        provider.disable("alice", False)
    # enabled again: her home page says why her server stopped
    home = log_in(app, provider).get("/hub/home")
    assert "because your account was disabled at the identity provider." in home.text, home.text[-2000:]


def test_the_tokens_key_is_root_s_and_reaches_the_hub_only_as_a_credential(sso):
    app, _ = sso
    key = app.sh(f"cat {KEY_FILE}").stdout.strip()
    assert len(key) == 64
    assert app.sh(f"stat -c '%U %a' {KEY_FILE} $(dirname {KEY_FILE})").stdout.split() == ["root", "600", "root", "700"]
    for who in ("alice", "jupyterhub"):  # a person, and the hub's uid outside systemd's copy
        assert app.sh(f"cat {KEY_FILE}", user=who, check=False).returncode != 0
    props = app.sh("systemctl show jupyterhub.service; systemctl cat jupyterhub.service").stdout
    assert f"LoadCredential=crypt-key:{KEY_FILE}" in props and key not in props
    pid = app.unit_props("jupyterhub.service", "MainPID")["MainPID"]
    assert key not in app.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
    cred = "/run/credentials/jupyterhub.service/crypt-key"
    hub_uid, alice_uid = (app.sh(f"id -u {n}").stdout.strip() for n in ("jupyterhub", "alice"))
    assert app.sh(f"nsenter -t {pid} -m -S {hub_uid} -G {hub_uid} cat {cred}").stdout.strip() == key
    assert app.sh(f"nsenter -t {pid} -m -S {alice_uid} -G {alice_uid} cat {cred}", check=False).returncode != 0
    # what a jupyterhub-admin may run under sudo never shows it
    assert key not in app.sh("applctl doctor", check=False).stdout
    # the database holds alice's tokens only encrypted: a copy of it gives none away
    app.ct.write("/root/auth_state.py", "import sqlite3\nprint(sqlite3.connect('file:/var/lib/jupyterhub/"
                 "jupyterhub.sqlite?mode=ro', uri=True).execute(\"select encrypted_auth_state from users where "
                 "name = 'alice'\").fetchone()[0][:200])\n")
    stored = app.sh(f"{HUB_PY} /root/auth_state.py").stdout
    assert stored.startswith("b'gAAAAA") and "token" not in stored  # Fernet's version byte, base64
