"""An OpenID provider's discovery document, fetched and checked: the one place for
it, used by the hub when it starts (hub/sso.py) and by `applctl sso setup` before
it writes anything. Standard library only, so applctl need not load oauthenticator."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlsplit

DISCOVERY = "/.well-known/openid-configuration"
DISCOVERY_TIMEOUT = 10  # s
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")
# What an ID token may be signed with ([oidc] claims_from = "id_token", hub/id_tokens.py):
# asymmetric algorithms only, a provider signs and the hub verifies with the public key.
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class SSOError(RuntimeError):
    """Single sign-on cannot work; worded for the administrator (the hub's journal, applctl)."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + DISCOVERY


def check_discovery(doc: object, issuer: str) -> dict:
    """The provider's discovery document, checked: it must name the configured issuer
    exactly (OpenID Connect Discovery 4.3: otherwise a document could send logins to
    another provider) and give the endpoints the code flow needs."""
    where = discovery_url(issuer)
    if not isinstance(doc, dict):
        raise SSOError(f"{where} is not an OpenID provider's discovery document (not a JSON object)")
    if doc.get("issuer") != issuer:
        raise SSOError(f"{where} names the issuer {str(doc.get('issuer'))[:200]!r}, not {issuer!r}: set [oidc] "
                       "issuer to exactly what the provider calls itself")
    missing = [k for k in REQUIRED_ENDPOINTS if not isinstance(doc.get(k), str) or not doc[k].startswith("http")]
    if missing:
        raise SSOError(f"{where} gives no {', '.join(missing)}: single sign-on needs the authorization code flow "
                       "with userinfo")
    return doc


def discover(issuer: str, timeout: float = DISCOVERY_TIMEOUT) -> dict:
    """Fetch and check ISSUER/.well-known/openid-configuration (SSOError says why not)."""
    where = discovery_url(issuer)
    request = urllib.request.Request(where, headers={"Accept": "application/json", "User-Agent": "JupyterHub"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (https, or http on loopback)
            doc = json.loads(r.read(1024 * 1024))
    except (OSError, ValueError) as e:
        raise SSOError(f"cannot read the provider's discovery document {where}: {e}; check [oidc] issuer and that "
                       "this machine reaches the provider") from None
    return check_discovery(doc, issuer)


def id_token_keys(doc: dict, issuer: str) -> tuple[str, list[str]]:
    """claims_from = "id_token": where the provider's keys are (jwks_uri) and the
    algorithms its ID tokens may be signed with, from its discovery document: those of
    id_token_signing_alg_values_supported that are asymmetric (RS256, OpenID's
    default, when it names none). SSOError if it gives no way to check them."""
    where = f'[oidc] claims_from = "id_token": the provider\'s discovery document ({discovery_url(issuer)})'
    jwks = str(doc.get("jwks_uri", ""))
    # The keys decide who logs in: fetched over https, or plain http only from this
    # machine (as the issuer itself, config.py), never from where a network could answer.
    if not (jwks.startswith("https://") or (jwks.startswith("http://")
                                            and urlsplit(jwks).hostname in ("127.0.0.1", "localhost", "::1"))):
        raise SSOError(f"{where} names no https jwks_uri to check ID tokens with")
    named = doc.get("id_token_signing_alg_values_supported", ["RS256"])
    algorithms = [a for a in ID_TOKEN_ALGORITHMS if isinstance(named, list) and a in named]
    if not algorithms:
        raise SSOError(f"{where} names no asymmetric algorithm in id_token_signing_alg_values_supported (e.g. "
                       "RS256) that the hub could check ID tokens with")
    return jwks, algorithms
