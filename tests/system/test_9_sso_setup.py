"""`applctl sso setup` on the booted appliance, against the real OpenID provider of
test_9_sso.py (oidc_provider.py): it writes root's 0600 secret file and [auth] +
[oidc] into appliance.toml, prints the redirect URI, and after `applctl reload` a
person logs in through the provider. Bad input changes nothing, and a
jupyterhub-admin (sudo applctl) cannot point the hub at a provider of their own.
With single sign-on so set up, a code the provider issued to another of its clients
is refused at the hub's callback (issue 29's forged callbacks), and a person in a
real browser (chromium, real_browser.py) goes through the provider's login page into
JupyterLab and runs a cell.
The configuration and the secret file are put back when the module ends.
"""

from __future__ import annotations

import re
import shlex
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

pytest.register_assert_rewrite("real_browser")
from browser import Browser  # noqa: E402
from oidc_provider import CLIENT_ID, CLIENT_SECRET, CONFIG, OTHER_CLIENT_ID, SECRET_FILE, Provider  # noqa: E402
from playwright.sync_api import expect  # noqa: E402
from real_browser import run_in_a_new_notebook  # noqa: E402
from visitor_client import hub_api  # noqa: E402

pytest_plugins = ["real_browser"]  # the chromium and page fixtures, the screenshot on failure

ADMIN, PASSWORD = "ines", "ines-pass-4"  # a jupyterhub-admin of this module


@pytest.fixture(scope="module")
def setup(appliance):
    app = appliance
    provider = Provider(app, f"{app.url}/hub/oauth_callback")
    saved = app.sh(f"cat {CONFIG}").stdout
    added = "jupyterhub-users" not in app.sh("id -nG alice").stdout.split()
    app.sh(f"id {ADMIN} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {ADMIN}")
    app.sh(f"usermod -aG jupyterhub-users,jupyterhub-admins {ADMIN} && chpasswd", input=f"{ADMIN}:{PASSWORD}\n")
    app.sh(f"rm -f {SECRET_FILE}")
    try:
        yield app, provider
    finally:
        app.ct.write(CONFIG, saved)
        app.sh(f"rm -f {SECRET_FILE}; applctl reload", check=False)
        app.wait_hub()
        hub_api(app, "DELETE", "/users/alice/server")
        provider.stop()
        app.sh(f"gpasswd -d {ADMIN} jupyterhub-admins; gpasswd -d {ADMIN} jupyterhub-users"
               + ("; gpasswd -d alice jupyterhub-users" if added else ""), check=False)


def sso_setup(app, args: str, secret: str = CLIENT_SECRET + "\n", user: str | None = None):
    r = app.sh(f"applctl sso setup {args}" if user is None else f"sudo -S -p '' applctl sso setup {args}",
               input=secret if user is None else f"{PASSWORD}\n{secret}", user=user, check=False)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def fingerprint(app) -> str:
    return app.sh(f"sha256sum {CONFIG}; ls -l --time-style=full-iso {SECRET_FILE} 2>&1; "
                  f"sha256sum {SECRET_FILE} 2>&1", check=False).stdout


def test_bad_input_says_what_is_wrong_and_changes_nothing(setup):
    app, provider = setup
    before = fingerprint(app)
    for args, secret, says in [
        (f"--issuer {provider.issuer}/ --client-id {CLIENT_ID}", None, "names the issuer"),  # not exactly it
        (f"--issuer http://127.0.0.1:1 --client-id {CLIENT_ID}", None, "cannot read the provider's discovery"),
        (f"--issuer http://login.example.org --client-id {CLIENT_ID}", None, "http:// only for a provider on"),
        (f"--issuer {provider.issuer} --client-id 'two words'", None, "--client-id: 'two words' is not accepted"),
        (f"--issuer {provider.issuer} --client-id {CLIENT_ID}", "", "no client secret on standard input"),
        (f"--issuer {provider.issuer} --client-id {CLIENT_ID}", "a\nb\n", "the client secret must be one line"),
    ]:
        r = sso_setup(app, args, CLIENT_SECRET + "\n" if secret is None else secret)
        assert r.returncode == 1 and r.stdout == "", (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, (args, r.stderr)
        assert r.stderr.rstrip().endswith("nothing changed"), r.stderr
        assert fingerprint(app) == before, args


def test_a_jupyterhub_admin_cannot_point_the_hub_at_a_provider(setup):
    app, provider = setup
    before = fingerprint(app)
    r = sso_setup(app, f"--issuer {provider.issuer} --client-id {CLIENT_ID}", user=ADMIN)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "only root may run it (a root login, not sudo applctl); nothing changed" in r.stderr
    # nor key by key, through config set
    r = app.sh(f"sudo -S -p '' applctl config set oidc.issuer {shlex.quote(provider.issuer)}", user=ADMIN,
               input=f"{PASSWORD}\n", check=False)
    assert r.returncode == 1 and "only root may change it" in r.stderr, r.stderr
    assert fingerprint(app) == before


def test_setup_writes_the_secret_and_config_and_a_login_works_after_reload(setup):
    app, provider = setup
    r = sso_setup(app, f"--issuer {provider.issuer} --client-id {CLIENT_ID} --scopes openid,profile,groups")
    assert r.returncode == 0, r.stderr
    assert "register this redirect URI at the provider: https://HOST/hub/oauth_callback" in r.stdout
    assert r.stdout.rstrip().endswith("apply it with: sudo applctl reload")
    assert CLIENT_SECRET not in r.stdout + r.stderr
    assert app.sh(f"stat -c '%U %G %a' {SECRET_FILE}").stdout.split() == ["root", "root", "600"]
    assert app.sh(f"cat {SECRET_FILE}").stdout == CLIENT_SECRET + "\n"
    assert app.sh(f"cat {SECRET_FILE}", user="jupyterhub", check=False).returncode != 0
    effective = app.sh("applctl config get auth.type; applctl config get oidc.issuer; "
                       "applctl config get oidc.client_id").stdout.split()
    assert effective == ["oidc", provider.issuer, CLIENT_ID]
    assert f"port = {app.port}" in app.sh(f"cat {CONFIG}").stdout  # the rest of the file is kept
    # nothing restarted until the administrator says so
    assert "Sign in with single sign-on" not in Browser(app.url).get("/hub/login").text
    said = app.sh("applctl adduser alice").stdout
    assert "single sign-on is on: alice logs in at" in said and "jupyterhub-users membership" in said
    app.sh("applctl reload")
    app.wait_hub()
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["location"].startswith(provider.issuer + "/auth?")
    back = provider.sign_in(b.s, r, "alice")
    page = b.s.get(back.headers["location"], timeout=120)
    assert page.status_code < 400, (page.status_code, page.text[:300])
    assert hub_api(app, "GET", "/users/alice")["name"] == "alice"


def test_a_code_issued_to_another_client_logs_nobody_in(setup):
    """The hub's own login (its state and PKCE challenge), but the code is asked for
    by another client of the same provider: only the client differs, and the hub's
    exchange of that code, as its own client, must fail."""
    app, provider = setup
    assert app.sh("applctl config get auth.type").stdout.strip() == "oidc", "runs after the setup test"
    b = Browser(app.url)
    r = b.s.get(app.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    to = urlsplit(r.headers["location"])
    q = parse_qs(to.query)
    assert q["client_id"] == [CLIENT_ID]
    q["client_id"] = [OTHER_CLIENT_ID]
    r = b.s.get(f"{provider.issuer}{to.path}?{urlencode(q, doseq=True)}", allow_redirects=False, timeout=30)
    back = provider.sign_in(b.s, r, "alice")
    assert back.headers["location"].startswith(f"{app.url}/hub/oauth_callback?code=")  # a real code, for the other
    page = b.s.get(back.headers["location"], allow_redirects=False, timeout=60)
    # the provider refuses the hub's exchange (invalid_grant), and the person is told
    assert page.status_code == 400, (page.status_code, page.headers.get("location"), page.text[:300])
    assert "The identity provider did not accept this login" in page.text
    assert b.get("/hub/home").url.startswith(f"{app.url}/hub/login")  # not logged in
    said = app.sh("journalctl -u jupyterhub.service -n 300 --no-pager", check=False).stdout
    assert '"error": "invalid_grant"' in said and "the provider refused this login: HTTP 400" in said

def test_a_person_in_a_real_browser_signs_in_at_the_provider_and_runs_a_cell(setup, page):
    app, provider = setup
    assert app.sh("applctl config get auth.type").stdout.strip() == "oidc", "runs after the setup test"
    page.goto(app.url + "/hub/login")
    page.get_by_text("Sign in with single sign-on").click()  # JupyterHub's own login page
    # The provider's own login page (oidc-provider's development form).
    page.wait_for_url(re.compile(rf"^{re.escape(provider.issuer)}/"))
    page.locator('input[name="login"]').fill("alice")
    page.locator('input[name="password"]').fill("any")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(re.compile(rf"^{re.escape(app.url)}/(hub/(spawn|home)|user/alice/)"))
    if "/hub/spawn" in page.url and page.locator("#spawn_form").count():  # GPUs visible: another module's fakes
        if page.locator("select#gpus").count():
            page.locator("select#gpus").select_option("0")
        page.locator("#spawn_form").get_by_role("button", name="Start").click()
    uid = app.sh("id -u alice").stdout.strip()
    expect(run_in_a_new_notebook(page, "alice", "import os; print(os.getuid())")).to_have_text(
        re.compile(rf"^\s*{uid}\s*$"))
