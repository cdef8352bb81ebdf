"""Claims from the ID token ([oidc] claims_from = "id_token", appliance/hub/id_tokens.py):
only a token signed by a key the provider publishes, from the configured issuer,
for this client and not expired gives claims. The provider's keys are served over
HTTP from a thread, as a provider's jwks_uri would; the tokens are signed with
PyJWT and keys made by cryptography, so forging one is what an attacker would do."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from appliance.hub import id_tokens

from .stub_http import stub_http

ISSUER, CLIENT = "https://id.example.org", "hub"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_uri():
    public = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
    keys = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    with stub_http(lambda method, path: (200, keys)) as server:
        yield f"{server.url}/jwks"


def token(key=KEY, alg="RS256", kid="k1", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT, "sub": "s-1", "iat": now, "exp": now + 300,
            "preferred_username": "alice", "groups": ["lab"]}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def check(jwks_uri, id_token):
    return id_tokens.verified_claims(id_token, id_tokens.keys(jwks_uri), ISSUER, CLIENT)


def test_a_token_the_provider_signed_gives_its_claims(jwks_uri):
    claims = check(jwks_uri, token())
    assert claims["preferred_username"] == "alice" and claims["groups"] == ["lab"]
    # several audiences: this hub must be the authorized party
    assert check(jwks_uri, token(aud=[CLIENT, "other"], azp=CLIENT))["sub"] == "s-1"


@pytest.mark.parametrize("forged, says", [
    (lambda: token(key=OTHER_KEY), "Signature verification failed"),  # signed by someone else, the provider's kid
    (lambda: token(iss="https://evil.example.org"), "issuer"),
    (lambda: token(aud="another-app"), "Audience"),
    (lambda: token(exp=int(time.time()) - 3600), "expired"),
    (lambda: token(exp=None), "exp"),
    (lambda: token(aud=[CLIENT, "other"], azp="other"), "azp"),
    (lambda: token(kid="k9"), "Unable to find a signing key"),
    # no signature at all, or one made with a shared secret: never accepted
    (lambda: jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "s", "iat": 1, "exp": 2**31}, None, algorithm="none",
                        headers={"kid": "k1"}), "not allowed"),
    (lambda: token(key="a-client-secret-that-anyone-may-know", alg="HS256"), "not allowed"),
    (lambda: None, "no ID token"),
    (lambda: "not.a.token", "does not check out"),
])
def test_a_forged_or_stale_token_is_refused_saying_why(jwks_uri, forged, says):
    with pytest.raises(id_tokens.IdTokenError) as e:
        check(jwks_uri, forged())
    assert says in str(e.value), e.value


def test_keys_that_cannot_be_read_refuse_the_login_saying_so():
    with pytest.raises(id_tokens.IdTokenError) as e:
        check("http://127.0.0.1:9/jwks", token())
    assert "cannot read the provider's keys" in str(e.value)


def test_the_authenticator_takes_claims_from_the_verified_token_and_never_from_userinfo(jwks_uri):
    from tornado import web

    from appliance.hub import sso
    a = sso.ApplianceOIDCAuthenticator(client_id=CLIENT, issuer=ISSUER, claims_from="id_token", jwks_uri=jwks_uri,
                                       userdata_url="http://127.0.0.1:9/userinfo")  # would fail if asked
    assert asyncio.run(a.token_to_user({"id_token": token(), "access_token": "a"}))["groups"] == ["lab"]
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(a.token_to_user({"id_token": token(key=OTHER_KEY), "access_token": "a"}))
    assert e.value.status_code == 403
