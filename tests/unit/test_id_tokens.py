"""Claims from the ID token ([oidc] claims_from = "id_token", appliance/hub/id_tokens.py):
only a token signed by a key the provider publishes, with an asymmetric algorithm it
advertises, from the configured issuer, for this client and within its lifetime
gives claims. The provider's keys are served over HTTP from a thread, as a
provider's jwks_uri would; the tokens are signed with PyJWT and keys made by
cryptography, so forging one is what an attacker would do. Also [oidc]
username_domain (a UPN's domain), and a refresh in id_token mode."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from tornado import web

from appliance import config
from appliance.hub import id_tokens, sso

from .stub_http import stub_http
from .test_sso_sessions import Handler, User

ISSUER, CLIENT = "https://id.example.org", "hub"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # after a rotation
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key, kid):
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}


class Keys:
    """The provider's jwks_uri: .published is what it serves, .fetched counts fetches."""

    def __init__(self, server):
        self.url, self.published, self.fetched = f"{server.url}/jwks", [jwk(KEY, "k1")], 0


@pytest.fixture
def keys():
    def answer(method, path):
        k.fetched += 1
        return 200, {"keys": k.published}
    with stub_http(answer) as server:
        k = Keys(server)
        yield k


def token(key=KEY, alg="RS256", kid="k1", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT, "sub": "s-1", "iat": now, "exp": now + 300,
            "preferred_username": "alice", "groups": ["lab"]}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_keyed_by_the_public_key() -> str:
    """The algorithm-confusion forgery: HS256 with the provider's public key (which
    anyone may fetch) as the HMAC secret. PyJWT will not make one, so by hand."""
    now = int(time.time())
    signing = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode()) + "." + b64(json.dumps(
        {"iss": ISSUER, "aud": CLIENT, "sub": "s-1", "iat": now, "exp": now + 300, "preferred_username": "root"})
        .encode())
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return signing + "." + b64(hmac.new(pem, signing.encode(), hashlib.sha256).digest())


def check(keys, id_token, jwks=None, allowed=id_tokens.ALGORITHMS):
    return id_tokens.verified_claims(id_token, jwks or id_tokens.keys(keys.url), ISSUER, CLIENT, allowed)


def test_a_token_the_provider_signed_gives_its_claims(keys):
    claims = check(keys, token())
    assert claims["preferred_username"] == "alice" and claims["groups"] == ["lab"]
    # several audiences: this hub must be the authorized party
    assert check(keys, token(aud=[CLIENT, "other"], azp=CLIENT))["sub"] == "s-1"
    # a clock a little behind the provider's (LEEWAY)
    assert check(keys, token(iat=int(time.time()) + 30, nbf=int(time.time()) + 30))["sub"] == "s-1"


@pytest.mark.parametrize("forged, says", [
    (lambda: token(key=OTHER_KEY), "Signature verification failed"),  # signed by someone else, the provider's kid
    (lambda: token(iss="https://evil.example.org"), "issuer"),
    (lambda: token(aud="another-app"), "Audience"),
    (lambda: token(exp=int(time.time()) - 3600), "expired"),
    (lambda: token(exp=None), "exp"),
    (lambda: token(iat=None), "iat"),
    (lambda: token(nbf=int(time.time()) + 3600), "not yet valid"),
    (lambda: token(aud=[CLIENT, "other"], azp="other"), "azp"),
    (lambda: token(aud=[CLIENT, "other"]), "azp"),
    (lambda: token(azp="other"), "authorized party"),
    # no signature at all, or one made with a shared secret or the public key: never accepted
    (lambda: jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "s", "iat": 1, "exp": 2**31}, None, algorithm="none",
                        headers={"kid": "k1"}), "signed with 'none'"),
    (lambda: token(key="a-client-secret-that-anyone-may-know-0123456789", alg="HS256"), "signed with 'HS256'"),
    (hs256_keyed_by_the_public_key, "signed with 'HS256'"),
    (lambda: None, "no ID token"),
    (lambda: "not.a.token", "does not check out"),
])
def test_a_forged_or_stale_token_is_refused_saying_why(keys, forged, says):
    with pytest.raises(id_tokens.IdTokenError) as e:
        check(keys, forged())
    assert says in str(e.value), e.value


def test_only_algorithms_the_provider_advertises_and_asymmetric_ones_count(keys):
    from appliance.oidc_discovery import SSOError, id_token_keys

    def algorithms(named):
        return id_token_keys({"jwks_uri": "https://id.example.org/keys", **named}, ISSUER)[1]
    assert algorithms({"id_token_signing_alg_values_supported": ["RS256", "HS256", "none"]}) == ["RS256"]
    assert algorithms({}) == ["RS256"]  # OpenID's default
    with pytest.raises(SSOError, match="names no asymmetric algorithm"):
        algorithms({"id_token_signing_alg_values_supported": ["HS256", "none"]})
    keys.published = [jwk(KEY, "k1"), {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())),
                                       "kid": "e1", "use": "sig"}]
    assert check(keys, token(key=EC_KEY, alg="ES256", kid="e1"))["sub"] == "s-1"
    with pytest.raises(id_tokens.IdTokenError, match="signed with 'ES256', not one of RS256"):
        check(keys, token(key=EC_KEY, alg="ES256", kid="e1"), allowed=["RS256"])
    with pytest.raises(id_tokens.IdTokenError, match="signed with 'HS256', not one of RS256"):
        check(keys, token(key="a-client-secret-that-anyone-may-know-0123456789", alg="HS256"), allowed=["RS256", "HS256"])  # never HS*, whoever asks


COOLDOWN = 0.5  # s, for the test (id_tokens.KEYS_COOLDOWN)


def test_keys_are_fetched_once_and_a_rotated_key_after_one_more_fetch(keys, monkeypatch):
    monkeypatch.setattr(id_tokens, "KEYS_COOLDOWN", COOLDOWN)
    jwks = id_tokens.keys(keys.url)
    check(keys, token(), jwks)
    check(keys, token(), jwks)
    assert keys.fetched == 1  # cached
    keys.published = [jwk(KEY, "k1"), jwk(NEW_KEY, "k2")]  # the provider rotates its keys
    time.sleep(COOLDOWN)
    assert check(keys, token(key=NEW_KEY, kid="k2"), jwks)["sub"] == "s-1"
    assert check(keys, token(key=NEW_KEY, kid="k2"), jwks)["sub"] == "s-1"
    assert keys.fetched == 2


def test_an_unknown_key_is_refused_after_one_more_fetch_and_no_more(keys, monkeypatch):
    monkeypatch.setattr(id_tokens, "KEYS_COOLDOWN", COOLDOWN)
    jwks = id_tokens.keys(keys.url)
    check(keys, token(), jwks)
    time.sleep(COOLDOWN)
    for _ in range(3):
        with pytest.raises(id_tokens.IdTokenError, match="Unable to find a signing key that matches"):
            check(keys, token(key=OTHER_KEY, kid="k9"), jwks)
    assert keys.fetched == 2  # the first fetch and one refetch; unknown kids do not make it ask again at once


def test_keys_that_cannot_be_read_refuse_the_login_saying_so():
    with pytest.raises(id_tokens.IdTokenError) as e:
        id_tokens.verified_claims(token(), id_tokens.keys("http://127.0.0.1:9/jwks"), ISSUER, CLIENT)
    assert "cannot read the provider's keys" in str(e.value)


def authenticator(keys, **more):
    return sso.ApplianceOIDCAuthenticator(client_id=CLIENT, client_secret="s", issuer=ISSUER, claims_from="id_token",
                                          jwks_uri=keys.url, id_token_algorithms=["RS256"], username_claim="preferred_username",
                                          userdata_url="http://127.0.0.1:9/userinfo", **more)  # would fail if asked


def test_the_authenticator_takes_claims_from_the_verified_token_and_never_from_userinfo(keys):
    a = authenticator(keys)
    assert asyncio.run(a.token_to_user({"id_token": token(), "access_token": "a"}))["groups"] == ["lab"]
    for forged in (token(key=OTHER_KEY), hs256_keyed_by_the_public_key()):
        with pytest.raises(web.HTTPError) as e:
            asyncio.run(a.token_to_user({"id_token": forged, "access_token": "a"}))
        assert e.value.status_code == 403 and "could not be verified" in e.value.log_message


# --- [oidc] username_domain ---------------------------------------------------------------

OIDC = '[auth]\ntype = "oidc"\n[oidc]\nissuer = "https://login.example.org"\nclient_id = "hub"\n'


def test_username_domain_is_a_domain_or_nothing_in_one_line():
    assert config.loads(OIDC)["oidc"]["username_domain"] == ""
    assert config.loads(OIDC + 'username_domain = "Contoso.EDU"\n')["oidc"]["username_domain"] == "contoso.edu"
    for bad in ('"@contoso.edu"', '"contoso"', '"a b.edu"', '"-x.edu"', "1", '"contoso.edu."'):
        with pytest.raises(config.ConfigError) as e:
            config.loads(OIDC + f"username_domain = {bad}\n", "/x.toml")
        assert str(e.value).startswith("/x.toml: oidc.username_domain = ") and "\n" not in str(e.value)
        assert 'e.g. "contoso.edu"' in str(e.value)


@pytest.mark.parametrize("claim, name", [
    ("alice@contoso.edu", "alice"), ("Alice@CONTOSO.edu", "alice"), ("al.ice_1@contoso.edu", "al.ice_1"),
])
def test_a_name_of_the_domain_is_the_local_account(keys, claim, name):
    a = authenticator(keys, username_domain="contoso.edu")
    assert a.normalize_username(a.user_info_to_username({"preferred_username": claim})) == name


@pytest.mark.parametrize("claim, says", [
    ("alice@evil.example", "takes only accounts of contoso.edu, not of evil.example"),
    ("alice@contoso.edu.evil.example", "not of contoso.edu.evil.example"),
    ("alice@sub.contoso.edu", "not of sub.contoso.edu"),
    ("alice", "takes only names of the form NAME@contoso.edu"),
    ("@contoso.edu", "takes only accounts of contoso.edu"),
])
def test_a_name_of_another_domain_or_none_is_refused_saying_why(keys, claim, says):
    a = authenticator(keys, username_domain="contoso.edu")
    with pytest.raises(web.HTTPError) as e:
        a.user_info_to_username({"preferred_username": claim})
    assert e.value.status_code == 403 and says in e.value.log_message and claim[:64] in e.value.log_message


def test_without_a_domain_the_claim_is_the_name_as_before(keys):
    assert authenticator(keys).user_info_to_username({"preferred_username": "alice@contoso.edu"}) == \
        "alice@contoso.edu"  # which no local account has: refused later, as before


# --- a refresh in id_token mode -----------------------------------------------------------

class IdUser(User):
    def __init__(self, refresh_token="r1", id_token=None):
        super().__init__()
        id_token = id_token or token()
        self.state = {"access_token": "old", "refresh_token": refresh_token, "id_token": id_token,
                      "token_response": {"access_token": "old", "token_type": "Bearer"},
                      "oauth_user": jwt.decode(id_token, options={"verify_signature": False})}  # checked at login

    async def get_auth_state(self):
        return self.state


@pytest.fixture
def provider(keys):
    """keys plus a token endpoint: .answer is its (status, body), .asked its grant types."""
    def answer(method, path):
        if path == "/jwks":
            keys.fetched += 1
            return 200, {"keys": keys.published}
        provider.asked.append(path)
        return provider.answer
    with stub_http(answer) as server:
        keys.url = f"{server.url}/jwks"
        provider.url, provider.keys, provider.asked = server.url, keys, []
        provider.answer = (200, {"access_token": "new", "token_type": "Bearer", "refresh_token": "r2",
                                 "id_token": token(groups=["lab", "gpu"])})
        yield provider


def refresh_id(provider, user):
    a = authenticator(provider.keys, enable_auth_state=True, token_url=provider.url + "/token",
                      manage_groups=True)
    handler = Handler()
    return asyncio.run(a.refresh_user(user, handler)), handler


def test_a_refresh_asks_the_provider_and_takes_the_groups_of_the_new_checked_token(provider):
    refreshed, _ = refresh_id(provider, IdUser())
    assert provider.asked == ["/token"]  # the refresh token is traded each time: the provider's say
    assert refreshed["name"] == "alice" and refreshed["groups"] == ["gpu", "lab"]
    assert refreshed["auth_state"]["refresh_token"] == "r2"


@pytest.mark.parametrize("id_token", [token(key=OTHER_KEY), token(aud="another-app"), None])
def test_a_refreshed_token_that_does_not_check_out_asks_for_a_new_login(provider, id_token):
    provider.answer = (200, {"access_token": "new", "token_type": "Bearer", "id_token": id_token})
    refreshed, handler = refresh_id(provider, IdUser())
    assert refreshed is False and handler.stopped == []  # a new login; nothing stopped


def test_a_refused_refresh_token_in_id_token_mode_ends_the_session_as_in_the_other(provider):
    provider.answer = (400, {"error": "invalid_grant"})
    user = IdUser()
    refreshed, handler = refresh_id(provider, user)
    assert refreshed is False and handler.stopped == [""]
    assert user.spawners[""].recorded.reason == "sso-disabled"


def test_a_provider_that_fails_a_refresh_in_id_token_mode_leaves_the_session(provider):
    provider.answer = (500, {"error": "server_error"})
    refreshed, handler = refresh_id(provider, IdUser())
    assert refreshed is True and handler.stopped == []


def test_without_a_refresh_token_the_login_holds_while_its_id_token_does(provider):
    assert refresh_id(provider, IdUser(refresh_token=None))[0] is True
    expired = token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    assert refresh_id(provider, IdUser(refresh_token=None, id_token=expired))[0] is False
    assert provider.asked == [] and provider.keys.fetched == 0  # nothing asked of the provider
