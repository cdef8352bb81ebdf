"""Claims from the provider's ID token ([oidc] claims_from = "id_token"), the token's
signature checked against the provider's published keys (JWKS), with PyJWT.

Why: some providers put what the hub needs only in the ID token. Entra ID's
userinfo endpoint answers sub, name and email, never groups nor the UPN; its ID
token carries both. oauthenticator can read an ID token (userdata_from_id_token)
but checks no signature, trusting TLS to the token endpoint (OIDC Core 3.1.3.7).
Here the claims decide who gets which local account and who is an admin, so the
token must prove itself: signed by a key of the provider's jwks_uri with an
asymmetric algorithm the provider says it signs ID tokens with (never "none", nor
HS256 keyed by a client secret another client of the provider might share, or by
the provider's public key), issued by the configured issuer, for this client (aud,
and azp when several audiences), and within its lifetime (exp, iat, nbf).

The keys are cached for KEYS_LIFESPAN; a token naming a key the hub does not know
(the provider rotated its keys) makes it fetch them once more, at most once per
KEYS_COOLDOWN after the last fetch (PyJWT's rule), so unknown kids cannot make it
hammer the provider. A key the provider withdrew is not trusted beyond KEYS_LIFESPAN.
"""

from __future__ import annotations

from typing import Any

import jwt

from ..oidc_discovery import ID_TOKEN_ALGORITHMS as ALGORITHMS  # asymmetric ones only

LEEWAY = 60  # seconds of clock difference between the provider and this machine
JWKS_TIMEOUT = 10
KEYS_LIFESPAN = 300  # s
KEYS_COOLDOWN = 10  # s


class IdTokenError(ValueError):
    """An ID token that does not prove who the person is; the message says why."""


def keys(jwks_uri: str) -> jwt.PyJWKClient:
    """The provider's keys, fetched at first use, again after KEYS_LIFESPAN, and when
    a token names a key it does not know (the provider rotated its keys)."""
    return jwt.PyJWKClient(jwks_uri, cache_keys=False, cache_jwk_set=True, lifespan=KEYS_LIFESPAN,
                           cooldown_duration=KEYS_COOLDOWN, timeout=JWKS_TIMEOUT)


def verified_claims(id_token: Any, jwks: jwt.PyJWKClient, issuer: str, client_id: str,
                    allowed: list[str] | tuple[str, ...] = ALGORITHMS) -> dict:
    """The ID token's claims, once its signature, issuer, audience and lifetime
    check out; IdTokenError otherwise. Blocking (it may fetch the keys)."""
    if not isinstance(id_token, str) or not id_token:
        raise IdTokenError("the provider's token response has no ID token (is the scope openid asked for?)")
    allowed = [a for a in allowed if a in ALGORITHMS]  # never none, never HS*, whatever the caller says
    try:
        alg = jwt.get_unverified_header(id_token).get("alg")
        if alg not in allowed:  # before any key is fetched for it
            raise IdTokenError(f"the ID token is signed with {str(alg)[:20]!r}, not one of {', '.join(allowed)} "
                               "(the provider's id_token_signing_alg_values_supported that are asymmetric)")
        key = jwks.get_signing_key_from_jwt(id_token)
        claims = jwt.decode(id_token, key.key, algorithms=allowed, audience=client_id, issuer=issuer,
                            leeway=LEEWAY, options={"require": ["iss", "aud", "exp", "iat", "sub"]})
    except jwt.PyJWKClientConnectionError as e:
        raise IdTokenError(f"cannot read the provider's keys: {e}") from None
    except jwt.PyJWTError as e:
        raise IdTokenError(f"the ID token does not check out: {e}") from None
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise IdTokenError(f"the ID token is for several clients and azp {str(claims.get('azp'))[:100]!r} is not "
                           "this hub")
    if "azp" in claims and claims["azp"] != client_id:
        raise IdTokenError(f"the ID token's authorized party (azp) {str(claims['azp'])[:100]!r} is not this hub")
    return claims
