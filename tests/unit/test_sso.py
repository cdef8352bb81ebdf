"""Single sign-on (issue 29): [auth] and [oidc] in appliance.toml, the client secret
file as root reads it, and the hub's side (appliance/hub/sso.py): discovery and the
mapping of a login to a local account. The login itself, through a real OpenID
provider, is tests/system/test_9_sso.py."""

from __future__ import annotations

import os

import pytest

from appliance import config

OIDC = '[auth]\ntype = "oidc"\n[oidc]\nissuer = "https://login.example.org/realms/lab"\nclient_id = "hub"\n'


def error(text: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as e:
        config.loads(text, "/x.toml")
    assert len(str(e.value).splitlines()) == 1
    return e.value


def test_pam_is_the_default_and_oidc_takes_the_documented_defaults():
    assert config.loads("")["auth"]["type"] == "pam"
    oidc = config.loads(OIDC)["oidc"]
    assert oidc == {"issuer": "https://login.example.org/realms/lab", "client_id": "hub",
                    "client_secret_file": "/etc/jupyterhub/oidc-client-secret",
                    "scopes": ["openid", "profile", "email"], "username_claim": "preferred_username",
                    "groups_claim": "groups", "allowed_groups": [], "admin_groups": [], "accounts": "existing",
                    "claims_from": "userinfo", "refresh_age": 300, "username_domain": "",
                    "uid_min": 70000, "uid_max": 70999, "group": "jupyterhub-sso"}


@pytest.mark.parametrize("issuer", ["https://login.example.org", "https://login.example.org:8443/realms/lab/",
                                    "http://127.0.0.1:5556", "http://localhost:9000/dex", "http://[::1]:80"])
def test_an_issuer_is_https_or_a_provider_on_this_machine(issuer):
    assert config.loads(OIDC.replace("https://login.example.org/realms/lab", issuer))["oidc"]["issuer"] == issuer


@pytest.mark.parametrize("text, key, accepted", [
    ('[auth]\ntype = "ldap"', "auth.type", 'one of "pam", "oidc"'),
    ('[auth]\ntype = "oidc"', "oidc.issuer", 'required with [auth] type = "oidc"'),
    ('[auth]\ntype = "oidc"\n[oidc]\nissuer = "https://a.b"', "oidc.client_id", "required with [auth] type"),
    ('[oidc]\nissuer = "http://login.example.org"', "oidc.issuer", "http:// only for a provider on 127.0.0.1"),
    ('[oidc]\nissuer = "http://10.0.0.1:8080"', "oidc.issuer", "http:// only for a provider on 127.0.0.1"),
    ('[oidc]\nissuer = "login.example.org"', "oidc.issuer", "https:// with no query or fragment"),
    ('[oidc]\nissuer = "https://a.b/?x=1"', "oidc.issuer", "no query or fragment"),
    ('[oidc]\nissuer = "https://a.b/#f"', "oidc.issuer", "no query or fragment"),
    ('[oidc]\nclaims_from = "access_token"', "oidc.claims_from", 'one of "userinfo", "id_token"'),
    ('[oidc]\nissuer = "https://me@a.b"', "oidc.issuer", "https://"),
    ('[oidc]\nissuer = "https://a.b:99999"', "oidc.issuer", "https://"),
    ('[oidc]\nissuer = "ftp://a.b"', "oidc.issuer", "https://"),
    ('[oidc]\nissuer = 3', "oidc.issuer", "https://"),
    ('[oidc]\nclient_id = "my hub"', "oidc.client_id", "no spaces"),
    ('[oidc]\nclient_secret_file = "oidc-secret"', "oidc.client_secret_file", "the absolute path of a file owned by root"),
    ('[oidc]\nclient_secret_file = "/etc/../tmp/s"', "oidc.client_secret_file", "mode 0600"),
    ('[oidc]\nscopes = ["profile"]', "oidc.scopes", 'with "openid" among them'),
    ('[oidc]\nscopes = "openid"', "oidc.scopes", 'with "openid" among them'),
    ('[oidc]\nscopes = ["openid", "a b"]', "oidc.scopes", 'with "openid" among them'),
    ('[oidc]\nusername_claim = ""', "oidc.username_claim", "the name of a claim"),
    ('[oidc]\ngroups_claim = "grou ps"', "oidc.groups_claim", "the name of a claim"),
    ('[oidc]\nallowed_groups = "lab"', "oidc.allowed_groups", "a list of group names"),
    ('[oidc]\nadmin_groups = [""]', "oidc.admin_groups", "a list of group names"),
    ('[oidc]\nadmin_groups = ["a\\nb"]', "oidc.admin_groups", "a list of group names"),
    ('[oidc]\naccounts = "create"\nuid_min = 1000', "oidc.uid_min", "an integer from 65536 to 99999"),
    ('[oidc]\naccounts = "create"\nuid_max = 100000', "oidc.uid_max", "below the subordinate uids"),
    ('[oidc]\naccounts = "create"\nuid_min = 70010\nuid_max = 70000', "oidc.uid_max", "at least oidc.uid_min"),
    ('[oidc]\naccounts = "create"\ngroup = "jupyterhub-users"', "oidc.group", "a group of its own"),
    ('[oidc]\naccounts = "create"\ngroup = "sudo"', "oidc.group", "not one of daemon.privileged_groups"),
    ('[oidc]\ngroup = "Lab Users"', "oidc.group", "a group name"),
    ('[oidc]\naccounts = "auto"', "oidc.accounts", '"existing" (the provider\'s name must be an account this '
                                                    'machine knows) or "create"'),
    ('[oidc]\nissuer_url = "https://a.b"', "oidc.issuer_url", "known keys in [oidc] are issuer, client_id"),
])
def test_bad_sso_values_get_one_line_naming_the_key(text, key, accepted):
    e = error(text)
    assert e.key == key
    assert str(e).startswith(f"/x.toml: {key} = ")
    assert accepted in str(e), str(e)


# --- the client secret file, as root reads it -------------------------------------------

@pytest.fixture
def secret_file(tmp_path):
    d = tmp_path / "etc"
    d.mkdir()
    for p in (tmp_path, d):
        p.chmod(0o755)
    f = d / "oidc-client-secret"
    f.write_text("s3cret-value\n")
    f.chmod(0o600)
    return f


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
def test_the_client_secret_is_one_line_of_a_root_only_file(secret_file):
    assert config.read_client_secret(str(secret_file)) == "s3cret-value"


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
@pytest.mark.parametrize("change, says", [
    (lambda f: f.chmod(0o644), "mode 0644; it must be a file owned by root that nobody else may read"),
    (lambda f: f.chmod(0o640), "mode 0640"),
    (lambda f: os.chown(f, 65534, 0), "owner uid 65534"),
    (lambda f: os.chown(f.parent, 65534, 0), "above it is owned by uid 65534"),
    (lambda f: f.write_text(""), "the client secret on one line"),
    (lambda f: f.write_text("s3cret-value\nmore\n"), "the client secret on one line"),
    (lambda f: f.unlink(), "No such file or directory"),
])
def test_a_secret_file_others_could_read_or_change_is_refused_without_showing_it(secret_file, change, says):
    change(secret_file)
    with pytest.raises(config.RootFileError) as e:
        config.read_client_secret(str(secret_file))
    assert says in str(e.value) and "s3cret" not in str(e.value)
    assert str(e.value).startswith(f"[oidc] client_secret_file = '{secret_file}': ")


# --- the hub's side: discovery, the callback's iss, groups, local accounts ---------------

ISSUER = "http://127.0.0.1:{port}"


@pytest.fixture
def provider():
    """A discovery document served on loopback; .doc may be changed by the test."""
    from .stub_http import stub_http

    def answer(method, path):
        return (200, server.doc) if path == "/.well-known/openid-configuration" else (404, None)

    with stub_http(answer) as server:
        server.issuer = server.url
        server.doc = {"issuer": server.issuer, "authorization_endpoint": server.issuer + "/auth",
                      "token_endpoint": server.issuer + "/token", "userinfo_endpoint": server.issuer + "/me",
                      "authorization_response_iss_parameter_supported": True}
        yield server


def test_discovery_gives_the_endpoints_of_the_configured_issuer(provider):
    from appliance.hub import sso
    assert sso.discover(provider.issuer)["token_endpoint"] == provider.issuer + "/token"
    # the issuer exactly as the provider names itself: one slash more is another issuer
    with pytest.raises(sso.SSOError, match="set \\[oidc\\] issuer to exactly what the provider calls itself"):
        sso.discover(provider.issuer + "/")


@pytest.mark.parametrize("change, says", [
    (lambda d: d.update(issuer="https://evil.example.org"), "names the issuer 'https://evil.example.org', not"),
    (lambda d: d.pop("userinfo_endpoint"), "gives no userinfo_endpoint"),
    (lambda d: d.update(token_endpoint=3), "gives no token_endpoint"),
])
def test_a_document_of_another_issuer_or_without_the_code_flow_is_refused(provider, change, says):
    from appliance.hub import sso
    change(provider.doc)
    with pytest.raises(sso.SSOError, match=says):
        sso.discover(provider.issuer)


def test_an_unreachable_provider_is_said_in_one_line():
    from appliance.hub import sso
    with pytest.raises(sso.SSOError) as e:
        sso.discover("http://127.0.0.1:9", timeout=2)
    assert "cannot read the provider's discovery document http://127.0.0.1:9/.well-known/openid-configuration" \
        in str(e.value) and "\n" not in str(e.value)


def apply_oidc(tmp_path, monkeypatch, issuer: str, extra: str = ""):
    from traitlets.config import Config

    from appliance.hub import configurer
    from appliance.state import APPLCTL_TOKEN, PROXY_TOKEN
    (tmp_path / PROXY_TOKEN).write_text("p\n")
    (tmp_path / APPLCTL_TOKEN).write_text("a\n")
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    (creds / config.OIDC_CREDENTIAL).write_text("s3cret\n")
    (creds / "crypt-key").write_text("ab" * 32 + "\n")
    (creds / "proxy-token").write_text("p\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    c = Config()
    configurer.apply(c, config.loads(OIDC.replace("https://login.example.org/realms/lab", issuer) + extra),
                     str(tmp_path))
    return c


def test_the_hub_uses_generic_oauth_with_pkce_and_the_discovered_endpoints(provider, tmp_path, monkeypatch):
    c = apply_oidc(tmp_path, monkeypatch, provider.issuer,
                   'allowed_groups = ["lab"]\nadmin_groups = ["lab-admins"]\nscopes = ["openid", "groups"]\n')
    assert c.JupyterHub.authenticator_class == "appliance.hub.sso.ApplianceOIDCAuthenticator"
    a = c.ApplianceOIDCAuthenticator
    assert (a.authorize_url, a.token_url, a.userdata_url) == tuple(
        provider.issuer + p for p in ("/auth", "/token", "/me"))
    assert (a.client_id, a.client_secret, a.enable_pkce, a.manage_groups) == ("hub", "s3cret", True, True)
    assert (a.allowed_groups, a.admin_groups, a.scope) == ({"lab"}, {"lab-admins"}, ["openid", "groups"])
    assert a.iss_in_response is True and a.issuer == provider.issuer


def test_claims_from_the_id_token_need_the_providers_keys(provider, tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as e:  # a discovery document without jwks_uri
        apply_oidc(tmp_path, monkeypatch, provider.issuer, 'claims_from = "id_token"\n')
    assert "names no https jwks_uri to check ID tokens with" in str(e.value.code)
    provider.doc["jwks_uri"] = "http://keys.example.org/jwks"  # keys a network could answer for
    with pytest.raises(SystemExit) as e:
        apply_oidc(tmp_path, monkeypatch, provider.issuer, 'claims_from = "id_token"\n')
    assert "names no https jwks_uri" in str(e.value.code)
    provider.doc["jwks_uri"] = provider.issuer + "/jwks"  # http on this machine, as the issuer
    provider.doc["id_token_signing_alg_values_supported"] = ["HS256", "none"]  # nothing a public key checks
    with pytest.raises(SystemExit) as e:
        apply_oidc(tmp_path, monkeypatch, provider.issuer, 'claims_from = "id_token"\n')
    assert "names no asymmetric algorithm in id_token_signing_alg_values_supported" in str(e.value.code)
    provider.doc["id_token_signing_alg_values_supported"] = ["HS256", "RS256", "ES256"]
    a = apply_oidc(tmp_path, monkeypatch, provider.issuer, 'claims_from = "id_token"\nusername_domain = "Example.org"\n'
                   ).ApplianceOIDCAuthenticator
    assert (a.claims_from, a.jwks_uri) == ("id_token", provider.issuer + "/jwks")
    assert (a.id_token_algorithms, a.username_domain) == (["RS256", "ES256"], "example.org")


def test_a_failed_discovery_stops_the_hub_saying_why(tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as e:
        apply_oidc(tmp_path, monkeypatch, "http://127.0.0.1:9")
    assert str(e.value.code).startswith('jupyterhub: single sign-on ([auth] type = "oidc") cannot work: cannot read')


def test_without_the_credential_the_hub_says_where_to_look(provider, tmp_path, monkeypatch):
    from appliance.hub import sso
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(sso.SSOError, match=r"applctl reload` says why \(\[oidc\] client_secret_file\)"):
        sso.client_secret()


def test_pam_and_ephemeral_mode_never_load_single_sign_on(provider, tmp_path, monkeypatch):
    from traitlets.config import Config

    from appliance.hub import configurer
    from appliance.state import APPLCTL_TOKEN, PROXY_TOKEN
    (tmp_path / PROXY_TOKEN).write_text("p\n")
    (tmp_path / APPLCTL_TOKEN).write_text("a\n")
    c = Config()
    configurer.apply(c, config.loads(""), str(tmp_path))
    assert c.JupyterHub.authenticator_class == "appliance.hub.authenticator.ApplianceAuthenticator"
    c = Config()
    configurer.apply(c, config.loads(OIDC.replace('[auth]', '[hub]\nmode = "ephemeral"\n[auth]')), str(tmp_path))
    assert c.JupyterHub.authenticator_class == "appliance.hub.visitors.VisitorAuthenticator"


@pytest.fixture(autouse=True)
def groups_file(tmp_path, monkeypatch):
    from appliance.hub import provider_groups
    monkeypatch.setattr(provider_groups, "FILE", tmp_path / "sso-groups.json")
    return provider_groups.FILE


def authenticator(**kw):
    from appliance.hub import sso
    return sso.ApplianceOIDCAuthenticator(client_id="hub", manage_groups=True, issuer="https://id.example.org",
                                          **kw)


def test_a_callback_from_another_issuer_is_refused():
    from tornado import web
    a = authenticator(iss_in_response=True)
    a.check_iss("https://id.example.org")
    for iss in (None, "https://evil.example.org", ""):
        with pytest.raises(web.HTTPError) as e:
            a.check_iss(iss)
        assert e.value.status_code == 400
    lax = authenticator(iss_in_response=False)  # a provider without RFC 9207: iss may be absent, never wrong
    lax.check_iss(None)
    with pytest.raises(web.HTTPError):
        lax.check_iss("https://evil.example.org")


@pytest.mark.parametrize("claim, groups", [
    (["lab", "gpu", 3], {"lab", "gpu"}), ("lab", {"lab"}), (None, set()), ({"lab": 1}, set()),
])
def test_groups_come_from_the_configured_claim(claim, groups):
    a = authenticator(groups_claim="roles")
    assert a.get_user_groups({"oauth_user": {"roles": claim, "groups": ["other"]}}) == groups


def test_a_name_this_machine_does_not_know_or_a_system_account_is_refused_in_words():
    from appliance.hub import sso
    said = sso.local_account_refusal("nobody-here-xyz", 1000)
    assert said.startswith("You signed in as nobody-here-xyz, but this machine does not let that name use "
                           "JupyterHub: there is no user nobody-here-xyz on this machine.")
    assert "root can never have a server" in sso.local_account_refusal("root", 1000)
    assert "is not a valid user name" in sso.local_account_refusal("Alice Smith", 1000)


def test_an_account_outside_jupyterhub_users_is_told_how_to_get_access(monkeypatch):
    from appliance.hub import sso
    monkeypatch.setattr(sso.users, "lookup", lambda name, min_uid: None)  # a known account, uid >= min_uid
    monkeypatch.setattr(sso.users, "is_member", lambda name, group: False)
    assert sso.local_account_refusal("alice", 1000) == (
        "alice has not been given access to this JupyterHub. An administrator can grant it with: "
        "sudo applctl adduser alice")
    monkeypatch.setattr(sso.users, "is_member", lambda name, group: group == "jupyterhub-users")
    assert sso.local_account_refusal("alice", 1000) is None


@pytest.mark.parametrize("groups, admin, allowed", [
    (["lab"], None, True), (["other"], None, False), ([], None, False), (["other"], True, True),
])
def test_allowed_groups_gate_logins_of_known_accounts(monkeypatch, groups, admin, allowed):
    import asyncio

    from tornado import web

    from appliance.hub import sso
    monkeypatch.setattr(sso, "local_account_refusal", lambda name, min_uid: None)
    a = authenticator(allowed_groups={"lab"})
    model = {"name": "alice", "admin": admin, "groups": groups, "auth_state": {}}
    if allowed:
        assert asyncio.run(a.check_allowed("alice", model)) is True
    else:
        with pytest.raises(web.HTTPError) as e:
            asyncio.run(a.check_allowed("alice", model))
        assert e.value.status_code == 403 and "none of your groups" in e.value.log_message
    # no allowed_groups: every known account of jupyterhub-users
    assert asyncio.run(authenticator().check_allowed("alice", dict(model, groups=[]))) is True


def test_an_unknown_name_is_refused_even_in_an_allowed_group(monkeypatch):
    import asyncio

    from tornado import web
    a = authenticator(allowed_groups={"lab"})
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(a.check_allowed("nobody-here-xyz", {"name": "nobody-here-xyz", "admin": True,
                                                         "groups": ["lab"], "auth_state": {}}))
    assert e.value.status_code == 403 and "there is no user nobody-here-xyz" in e.value.log_message


@pytest.mark.parametrize("groups, asks", [(["lab"], True), (["other"], False)])
def test_create_mode_asks_the_daemon_only_for_people_the_groups_let_in(monkeypatch, groups, asks):
    import asyncio

    from tornado import web

    from appliance.hub import sso
    asked = []

    async def call(req, timeout):
        asked.append(req)
        return {"ok": True, "user": req["user"], "created": True}
    monkeypatch.setattr(sso.daemon_client, "call", call)
    monkeypatch.setattr(sso, "local_account_refusal", lambda name, min_uid: None)
    a = authenticator(allowed_groups={"lab"}, accounts="create")
    model = {"name": "rosa", "admin": None, "groups": groups, "auth_state": {}}
    if asks:
        assert asyncio.run(a.check_allowed("rosa", model)) is True
        assert asked == [{"op": "account", "user": "rosa"}]
    else:
        with pytest.raises(web.HTTPError):
            asyncio.run(a.check_allowed("rosa", model))
        assert asked == []


def test_create_mode_shows_the_daemons_refusal_in_words(monkeypatch):
    import asyncio

    from tornado import web

    from appliance.hub import sso

    async def call(req, timeout):
        raise sso.daemon_client.DaemonError("account", "root is a name this machine keeps for itself", "user")
    monkeypatch.setattr(sso.daemon_client, "call", call)
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(authenticator(accounts="create").check_allowed("root", {"name": "root", "groups": []}))
    assert e.value.status_code == 403 and e.value.log_message == (
        "You signed in as root, but this machine makes no account for that name: root is a name this machine "
        "keeps for itself. Ask the administrator of this JupyterHub.")


@pytest.mark.parametrize("name", ["\u212aate", "\u0430lice", "ａlice"])
def test_a_name_with_a_lookalike_letter_is_refused_before_jupyterhub_lowercases_it(name):
    from tornado import web
    a = authenticator(username_claim="preferred_username")
    with pytest.raises(web.HTTPError) as e:
        a.user_info_to_username({"preferred_username": name})
    assert e.value.status_code == 403 and "only letters a-z" in e.value.log_message
    assert a.user_info_to_username({"preferred_username": "Rosa"}) == "Rosa"


def test_the_provider_groups_of_the_last_login_are_kept_for_the_quota(monkeypatch, groups_file):
    import asyncio

    from appliance.hub import provider_groups, sso
    monkeypatch.setattr(sso, "local_account_refusal", lambda name, min_uid: None)
    a = authenticator()
    asyncio.run(a.check_allowed("rosa", {"name": "rosa", "groups": ["gpu", "lab"], "auth_state": {}}))
    assert provider_groups.of("rosa") == ["gpu", "lab"] and provider_groups.of("alice") == []
    assert oct(groups_file.stat().st_mode & 0o777) == "0o600"
    # the provider took rosa out of gpu: it counts from her next login
    asyncio.run(a.check_allowed("rosa", {"name": "rosa", "groups": ["lab"], "auth_state": {}}))
    assert provider_groups.of("rosa") == ["lab"]


# --- the hub's unit: the secret as a credential (the generator's drop-in) ----------------

@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
def test_the_generator_hands_the_secret_to_the_hub_as_a_credential(tmp_path, secret_file):
    from appliance import held_ports
    conf = tmp_path / "appliance.toml"
    conf.write_text(OIDC + f'client_secret_file = "{secret_file}"\n')
    out = tmp_path / "gen"
    out.mkdir()
    assert held_ports.generate(out, str(conf)) is None
    dropin = (out / held_ports.SSO_DROPIN).read_text()
    assert f"\nLoadCredential=oidc-client-secret:{secret_file}\n" in dropin
    assert "IPAddressAllow=any" in dropin  # the provider is off this machine
    assert "s3cret" not in dropin and "Environment" not in dropin
    # a provider on loopback: the hub's network stays loopback only
    conf.write_text(OIDC.replace("https://login.example.org/realms/lab", "http://127.0.0.1:5556")
                    + f'client_secret_file = "{secret_file}"\n')
    held_ports.generate(out, str(conf))
    assert "IPAddressAllow" not in (out / held_ports.SSO_DROPIN).read_text()


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
def test_a_secret_file_others_could_read_is_never_handed_to_the_hub(tmp_path, secret_file):
    from appliance import held_ports
    secret_file.chmod(0o644)
    conf = tmp_path / "appliance.toml"
    conf.write_text(OIDC + f'client_secret_file = "{secret_file}"\n')
    out = tmp_path / "gen"
    out.mkdir()
    why = held_ports.generate(out, str(conf))
    assert why.startswith("single sign-on has no client secret: [oidc] client_secret_file = ") and "0644" in why
    assert "LoadCredential" not in (out / held_ports.SSO_DROPIN).read_text()


def test_pam_writes_no_drop_in(tmp_path):
    from appliance import held_ports
    conf = tmp_path / "appliance.toml"
    conf.write_text("")
    out = tmp_path / "gen"
    out.mkdir()
    assert held_ports.generate(out, str(conf)) is None
    assert not (out / held_ports.SSO_DROPIN).exists()
