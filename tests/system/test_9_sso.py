"""Single sign-on through a real OpenID provider (issue 29), on the booted appliance:
npm's oidc-provider (oidc_provider.py) with two people, alice (an account here) and
quentin (none), and two groups, lab and lab-admins. The hub is switched to
[auth] type = "oidc" for this module and back to PAM at its end.

The authorization code flow lands alice in her server; quentin is refused, saying why;
forged callbacks (a wrong state, another issuer) are refused; the client secret is
root's, reaches the hub only as a systemd credential, and is in no unit property.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from browser import Browser
from oidc_provider import CLIENT_ID, CLIENT_SECRET, CONFIG, SECRET_FILE, UNIT, oidc_toml, single_sign_on
from visitor_client import hub_api


@pytest.fixture(scope="module")
def sso(appliance):
    with single_sign_on(appliance, 'admin_groups = ["lab-admins"]\n') as provider:
        yield appliance, provider


def start_login(app) -> tuple[Browser, object]:
    """A browser opens the hub's single sign-on: (it, the hub's redirect to the provider)."""
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    return b, r


def test_the_code_flow_with_pkce_and_state_lands_alice_in_her_server(sso):
    app, provider = sso
    assert "Sign in with single sign-on" in Browser(app.url).get("/hub/login").text  # JupyterHub's own page
    b, r = start_login(app)
    to = urlsplit(r.headers["location"])
    q = parse_qs(to.query)
    assert f"{to.scheme}://{to.netloc}" == provider.issuer and to.path == "/auth"
    assert q["response_type"] == ["code"] and q["client_id"] == [CLIENT_ID]
    assert q["redirect_uri"] == [f"{app.url}/hub/oauth_callback"]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43  # PKCE
    assert q["state"][0]
    back = provider.sign_in(b.s, r, "alice")
    assert back.headers["location"].startswith(f"{app.url}/hub/oauth_callback?code=")
    page = b.s.get(back.headers["location"], timeout=120)
    if 'id="spawn_form"' in page.text:  # GPUs visible (a fake NVML left by the GPU tests)
        b.spawn_with_form("alice", {"gpus": "0"})
    b.wait_for_server("alice")
    k = b.start_kernel("alice")
    assert b.execute("alice", k, "import os; print(os.getuid() == os.stat(os.path.expanduser('~')).st_uid)") \
        .strip() == "True"
    user = hub_api(app, "GET", "/users/alice")
    # lab-admins at the provider: a hub admin; its groups are the provider's
    assert user["admin"] is True and {"lab", "lab-admins"} <= set(user["groups"])
    # and nothing more: not an applctl admin (jupyterhub-admins), no sudo at all
    assert "jupyterhub-admins" not in app.sh("id -nG alice").stdout.split()
    assert "is not allowed to run sudo" in app.sh("sudo -l -U alice", check=False).stdout
    # a real server of the local account alice, in its own unit
    uid = app.sh("id -u alice").stdout.strip()
    pid = app.unit_props("jupyter-alice.service", "MainPID")["MainPID"]
    assert app.sh(f"stat -c %u /proc/{pid}").stdout.strip() == uid


def test_a_name_this_machine_does_not_know_is_refused_in_words(sso):
    app, provider = sso
    # (other modules add users to this shared machine: a name none of them uses)
    assert app.sh("id quentin", check=False).returncode != 0
    b, r = start_login(app)
    back = provider.sign_in(b.s, r, "quentin")
    page = b.s.get(back.headers["location"], timeout=60)
    assert page.status_code == 403, (page.status_code, page.text[:300])
    assert "You signed in as quentin, but this machine does not let that name use JupyterHub: there is no user quentin" \
        in page.text
    assert not logged_in(app, b)
    assert hub_api(app, "GET", "/users/quentin") is None


def logged_in(app, b: Browser) -> bool:
    return not b.get("/hub/home").url.startswith(f"{app.url}/hub/login")


def forged_callback(app, provider, change: dict) -> tuple[Browser, object]:
    """A real code of alice's, brought to the hub's callback with a parameter changed."""
    b, r = start_login(app)
    back = provider.sign_in(b.s, r, "alice")
    q = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
    q.update(change)
    return b, b.s.get(f"{app.url}/hub/oauth_callback?{urlencode(q)}", allow_redirects=False, timeout=60)


@pytest.mark.parametrize("change, says", [
    ({"state": "eyJzdGF0ZV9pZCI6ICJmb3JnZWQifQ=="}, "OAuth state mismatch"),  # {"state_id": "forged"}
    ({"iss": "http://127.0.0.1:1"}, "This login did not come from this hub"),  # RFC 9207: a mix-up
])
def test_a_forged_callback_is_refused(sso, change, says):
    app, provider = sso
    b, r = forged_callback(app, provider, change)
    assert r.status_code == 400 and says in r.text, (r.status_code, r.text[:500])
    assert not logged_in(app, b)


def test_the_client_secret_is_root_s_and_reaches_the_hub_only_as_a_credential(sso):
    app, _ = sso
    assert app.sh(f"stat -c '%U %a' {SECRET_FILE}").stdout.split() == ["root", "600"]
    assert app.sh(f"cat {SECRET_FILE}", user="alice", check=False).returncode != 0
    assert app.sh(f"cat {SECRET_FILE}", user="jupyterhub", check=False).returncode != 0  # the file itself: root only
    props = app.sh("systemctl show jupyterhub.service; systemctl cat jupyterhub.service").stdout
    assert f"LoadCredential=oidc-client-secret:{SECRET_FILE}" in props
    assert CLIENT_SECRET not in props
    pid = app.unit_props("jupyterhub.service", "MainPID")["MainPID"]
    assert CLIENT_SECRET not in app.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
    # The hub's private copy (systemd's credentials directory, in the hub's own view of
    # the file system): the hub's uid reads it, alice's does not, inside that view or out.
    cred = "/run/credentials/jupyterhub.service/oidc-client-secret"
    hub_uid, alice_uid = (app.sh(f"id -u {n}").stdout.strip() for n in ("jupyterhub", "alice"))
    assert app.sh(f"nsenter -t {pid} -m -S {hub_uid} -G {hub_uid} cat {cred}").stdout.strip() == CLIENT_SECRET
    assert app.sh(f"nsenter -t {pid} -m -S {alice_uid} -G {alice_uid} cat {cred}", check=False).returncode != 0
    assert app.sh(f"cat {cred}", user="alice", check=False).returncode != 0
    assert app.unit_props(UNIT, "ActiveState")["ActiveState"] == "active"


def test_a_secret_file_others_can_read_is_refused_before_anything_restarts(sso):
    app, _ = sso
    pid = app.unit_props("jupyterhub.service", "MainPID")["MainPID"]
    app.sh(f"chmod 644 {SECRET_FILE}")
    try:
        r = app.sh("applctl reload", check=False)
    finally:
        app.sh(f"chmod 600 {SECRET_FILE}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"[oidc] client_secret_file = '{SECRET_FILE}': it has owner uid 0 and mode 0644" in r.stderr
    assert "nothing was restarted" in r.stderr
    assert app.unit_props("jupyterhub.service", "MainPID")["MainPID"] == pid


def test_claims_from_the_id_token_let_in_a_person_whose_groups_only_it_carries(sso):
    """Entra ID's case ([oidc] claims_from = "id_token"): ida's group "lab" is in her
    ID token and not in her userinfo. From userinfo she is refused (not in
    allowed_groups); from the ID token, whose signature the hub checks against the
    provider's real keys (its jwks_uri), she gets in, with the group."""
    app, provider = sso
    app.sh("id ida >/dev/null 2>&1 || useradd -m ida; applctl adduser ida >/dev/null")

    def sign_in_as_ida():
        b, r = start_login(app)
        back = provider.sign_in(b.s, r, "ida")
        return b, b.s.get(back.headers["location"], allow_redirects=False, timeout=60)

    b, page = sign_in_as_ida()
    assert page.status_code == 403 and not logged_in(app, b), (page.status_code, page.text[:300])
    app.ct.write(CONFIG, app.config_text(oidc_toml(provider, 'admin_groups = ["lab-admins"]\nclaims_from = "id_token"\n')))
    app.sh("applctl reload")
    app.wait_hub()
    b, page = sign_in_as_ida()
    assert page.status_code == 302 and logged_in(app, b), (page.status_code, page.text[:300])
    assert hub_api(app, "GET", "/users/ida")["groups"] == ["lab"]


def test_a_provider_that_does_not_answer_is_said_in_the_hub_s_journal(sso):
    """Last: it leaves the hub down until the module's end switches back to PAM."""
    app, provider = sso
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        f'[auth]\ntype = "oidc"\n[oidc]\nissuer = "http://127.0.0.1:1"\nclient_id = "{CLIENT_ID}"\n'))
    r = app.sh("applctl reload --timeout 30", check=False)
    said = r.stderr + app.sh("journalctl -u jupyterhub -n 20 --no-pager", check=False).stdout
    assert r.returncode != 0, r.stdout
    assert ('jupyterhub: single sign-on ([auth] type = "oidc") cannot work: cannot read the provider\'s discovery '
            "document http://127.0.0.1:1/.well-known/openid-configuration") in said, said
