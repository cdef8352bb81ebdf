"""`applctl sso setup` (issue 29 item 1): it checks the options, the provider's
discovery document (a real HTTP server on loopback) and the secret before it writes
anything, and then writes the secret file (root, 0600) and [auth] + [oidc] into
appliance.toml, keeping its comments. Bad input changes nothing. The same command
against a real OpenID provider in a booted system: tests/system/test_9_sso_setup.py."""

from __future__ import annotations

import io
import json
import os
import stat
import sys

import pytest

from appliance import config
from appliance.cli import sso as sso_cli
from appliance.revproxy import setup_record

from .cli_run import run
from .stub_http import stub_http
from .test_applctl_parts import accounts  # noqa: F401 (alice and bob, as adduser sees them)
from .test_sso import provider  # noqa: F401 (a discovery document served on loopback)

CONFIG = '[hub]\nport = 8000  # public\n\n[oidc]\n# issuer = ""\nclient_secret_file = "{secret}"\n'


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A configuration and a place for the secret, as root would run applctl."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.setattr(setup_record, "STATE", tmp_path / "reverse-proxy.json")  # no proxy set up
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    path = etc / "appliance.toml"
    secret = etc / "oidc-client-secret"
    path.write_text(CONFIG.format(secret=secret))
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    return path, secret


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def setup(capsys, issuer, *more):
    return run(capsys, "sso", "setup", "--issuer", issuer, "--client-id", "jupyterhub", *more)


def test_setup_writes_the_secret_and_the_section_and_prints_the_redirect_uri(box, provider, capsys,  # noqa: F811
                                                                             monkeypatch):
    path, secret = box
    stdin(monkeypatch, "s3cret-from-the-provider\n")
    provider.doc["jwks_uri"] = provider.issuer + "/jwks"  # claims_from = "id_token" needs the keys
    code, out, err = setup(capsys, provider.issuer, "--username-claim", "sub", "--scopes", "openid,profile,groups",
                           "--claims-from", "id_token", "--username-domain", "Contoso.edu")
    assert (code, err) == (0, "")
    assert secret.read_text() == "s3cret-from-the-provider\n"
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
    assert config.read_client_secret(str(secret)) == "s3cret-from-the-provider"  # as reload and the generator read it
    cfg = config.load(path)
    assert cfg["auth"]["type"] == "oidc"
    assert (cfg["oidc"]["issuer"], cfg["oidc"]["client_id"]) == (provider.issuer, "jupyterhub")
    assert (cfg["oidc"]["username_claim"], cfg["oidc"]["scopes"]) == ("sub", ["openid", "profile", "groups"])
    assert (cfg["oidc"]["claims_from"], cfg["oidc"]["username_domain"]) == ("id_token", "contoso.edu")
    text = path.read_text()
    assert "port = 8000  # public" in text and f'# issuer = ""\nissuer = "{provider.issuer}"' in text
    assert "s3cret" not in out + text
    assert "register this redirect URI at the provider: https://HOST/hub/oauth_callback" in out
    assert "HOST: the name people reach this hub by" in out
    assert out.rstrip().endswith("apply it with: sudo applctl reload")


def test_on_a_terminal_the_secret_is_asked_for_without_echo(box, provider, capsys, monkeypatch):  # noqa: F811
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    asked = []
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr(sso_cli.getpass, "getpass", lambda prompt: asked.append(prompt) or "typed-secret")
    code, _, err = setup(capsys, provider.issuer)
    assert (code, err, asked) == (0, "", ["client secret (not shown): "])
    assert box[1].read_text() == "typed-secret\n"


def test_the_redirect_uri_names_the_host_applctl_proxy_set_up(box, provider, capsys, monkeypatch):  # noqa: F811
    setup_record.STATE.write_text(json.dumps({"site": {
        "kind": "nginx", "server_name": "hub.example.org", "cert": "/etc/ssl/certs/hub.pem",
        "key": "/etc/ssl/private/hub.key", "https_port": 8443}}))
    stdin(monkeypatch, "x\n")
    code, out, _ = setup(capsys, provider.issuer, "--json")
    assert code == 0
    reply = json.loads(out)
    assert (reply["redirect_uri"], reply["host_known"]) == ("https://hub.example.org:8443/hub/oauth_callback", True)


def unchanged(box, before: str) -> None:
    path, secret = box
    assert path.read_text() == before
    assert not os.path.lexists(secret)


@pytest.mark.parametrize("options, secret, says", [
    (["--issuer", "http://login.example.org"], "x", "--issuer: 'http://login.example.org' is not accepted: "
     '"" (none), or the provider\'s issuer URL'),
    (["--issuer", ""], "x", "--issuer is empty: give"),
    (["--client-id", "two words"], "x", "--client-id: 'two words' is not accepted: \"\" (none), or the client id"),
    (["--scopes", "profile,email"], "x", "--scopes: 'profile,email' is not accepted: a list of scopes with "
     '"openid"'),
    (["--scopes", ","], "x", "--scopes is empty: give scopes the hub asks for"),
    (["--username-claim", "a b"], "x", "--username-claim: 'a b' is not accepted: the name of a claim"),
    (["--username-domain", "@contoso.edu"], "x", "--username-domain: '@contoso.edu' is not accepted: \"\" (the claim "
     "is the account name), or the domain of names like alice@contoso.edu"),
    (["--username-domain", ""], "x", "--username-domain is empty: give the domain of a username claim"),
    (["--claims-from", "id_token"], "x", '--issuer: [oidc] claims_from = "id_token": the provider\'s discovery '
     "document (http://127.0.0.1:"),  # which names no jwks_uri
    (["--issuer", "{issuer}/"], "x", "names the issuer 'http://127.0.0.1:"),   # discovery names another issuer
    (["--issuer", "http://127.0.0.1:9"], "x", "--issuer: cannot read the provider's discovery document "
     "http://127.0.0.1:9/.well-known/openid-configuration"),
    ([], "", "no client secret on standard input"),
    ([], "\n", "no client secret on standard input"),
    ([], "one\ntwo\n", "the client secret must be one line"),
    ([], "with space\n", "the client secret is not accepted: 1 to 4000 printable ASCII characters, no spaces"),
])
def test_bad_input_is_one_line_naming_it_and_changes_nothing(box, provider, capsys, monkeypatch,  # noqa: F811
                                                             options, secret, says):
    before = box[0].read_text()
    stdin(monkeypatch, secret)
    argv = ["--issuer", provider.issuer, "--client-id", "jupyterhub"]
    for i in range(0, len(options), 2):
        argv[argv.index(options[i]) + 1 if options[i] in argv else len(argv):] = (
            [options[i + 1].format(issuer=provider.issuer)] + argv[argv.index(options[i]) + 2:]
            if options[i] in argv else [options[i], options[i + 1]])
    code, out, err = run(capsys, "sso", "setup", *argv)
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and says in err and err.rstrip().endswith("nothing changed"), err
    unchanged(box, before)


def test_a_provider_without_the_code_flow_endpoints_is_refused(box, provider, capsys, monkeypatch):  # noqa: F811
    del provider.doc["userinfo_endpoint"]
    before = box[0].read_text()
    stdin(monkeypatch, "x\n")
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1 and "gives no userinfo_endpoint" in err
    unchanged(box, before)


def test_a_jupyterhub_admin_through_sudo_is_refused_before_reading_anything(box, provider, capsys,  # noqa: F811
                                                                           monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1000")
    before = box[0].read_text()
    stdin(monkeypatch, "x\n")
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1
    assert "only root may run it (a root login, not sudo applctl); nothing changed" in err
    assert sys.stdin.read() == "x\n"  # the secret was not even read
    unchanged(box, before)


def test_an_unprivileged_user_is_told_to_use_root(box, provider, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1 and "sso setup needs root" in err


def test_root_writes_no_secret_where_another_user_could_redirect_it(box, provider, capsys,  # noqa: F811
                                                                    monkeypatch, tmp_path):
    path, _ = box
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename or link in here
    path.write_text(CONFIG.format(secret=shared / "secret"))
    before = path.read_text()
    stdin(monkeypatch, "x\n")
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1 and f"{shared} above it is writable by others" in err
    assert path.read_text() == before and not os.listdir(shared)


def test_a_link_in_the_secrets_place_is_refused_not_followed(box, provider, capsys, monkeypatch,  # noqa: F811
                                                             tmp_path):
    path, secret = box
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    secret.symlink_to(target)
    before = path.read_text()
    stdin(monkeypatch, "x\n")
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1 and "is not a regular file (a link or other)" in err
    assert target.read_text() == "kept\n" and secret.is_symlink() and path.read_text() == before


def test_if_the_configuration_cannot_be_written_the_old_secret_comes_back(box, provider, capsys,  # noqa: F811
                                                                          monkeypatch):
    path, secret = box
    secret.write_text("old\n")
    secret.chmod(0o600)
    before = path.read_text()

    def refuse(*a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sso_cli.config_edit, "write_atomic", refuse)
    stdin(monkeypatch, "new\n")
    code, _, err = setup(capsys, provider.issuer)
    assert code == 1 and "No space left on device); nothing changed" in err
    assert secret.read_text() == "old\n" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert path.read_text() == before


# --- applctl adduser under single sign-on (issue 29 item 4) ----------------------------

def test_adduser_under_sso_says_what_it_allows(capsys, accounts):  # noqa: F811
    accounts["path"].write_text(accounts["path"].read_text() + (
        '[auth]\ntype = "oidc"\n[oidc]\nissuer = "https://login.example.org/realms/lab"\nclient_id = "hub"\n'
        'allowed_groups = ["lab"]\n'))
    code, out, err = run(capsys, "adduser", "bob")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "bob can now log in to JupyterHub",
        "single sign-on is on: bob logs in at https://login.example.org/realms/lab, whose preferred_username claim "
        "must be bob, and be in one of oidc.allowed_groups (lab) there; jupyterhub-users membership is what allows "
        "the local account bob"]
    assert accounts["ran"] == [["gpasswd", "-a", "bob", "jupyterhub-users"]]


# --- the hub's side: a code the provider refuses ----------------------------------------

def test_a_code_the_provider_refuses_is_a_400_saying_so_not_a_500(provider):  # noqa: F811
    """A real token endpoint on loopback answers invalid_grant, as oidc-provider does
    for a code issued to another client (tests/system/test_9_sso_setup.py)."""
    import asyncio

    from oauthenticator.oauth2 import _serialize_state
    from tornado import web

    from appliance.hub import sso

    refused = {"error": "invalid_grant", "error_description": "grant request is invalid"}

    class Handler:  # the callback's request, as the authenticator reads it
        def get_argument(self, name, default=None):
            return {"code": "a-code-of-another-client"}.get(name, default)

        def get_state_cookie(self):
            return _serialize_state({"state_id": "s", "code_verifier": "v" * 43})

    with stub_http(lambda method, path: (400, refused)) as server:
        a = sso.ApplianceOIDCAuthenticator(client_id="hub", client_secret="x", issuer=provider.issuer,
                                           enable_pkce=True, token_url=f"{server.url}/token",
                                           oauth_callback_url="http://127.0.0.1/hub/oauth_callback")
        with pytest.raises(web.HTTPError) as e:
            asyncio.run(a.authenticate(Handler()))
    assert e.value.status_code == 400
    assert e.value.log_message == "The identity provider did not accept this login. Please sign in again."
