"""An OpenID provider's discovery document, fetched and checked: the one place for
it, used by the hub when it starts (hub/sso.py) and by `applctl sso setup` before
it writes anything. Standard library only, so applctl need not load oauthenticator."""

from __future__ import annotations

import json
import urllib.request

DISCOVERY = "/.well-known/openid-configuration"
DISCOVERY_TIMEOUT = 10  # s
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")


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
