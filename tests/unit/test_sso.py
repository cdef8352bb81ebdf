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
                    "groups_claim": "groups", "allowed_groups": [], "admin_groups": [], "accounts": "existing"}


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
    ('[oidc]\naccounts = "create"', "oidc.accounts", 'accounts = "create" is not supported yet'),
    ('[oidc]\naccounts = "auto"', "oidc.accounts", '"existing"'),
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
