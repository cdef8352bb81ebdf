"""Single sign-on: OpenID Connect login through oauthenticator's GenericOAuthenticator,
mapped to the local accounts this machine already knows ([auth] type = "oidc"), or,
with [oidc] accounts = "create", to one the root daemon makes at the first login.

The provider proves who a person is; this machine still decides who gets what. The
name in the username claim must be an account NSS knows (passwd, or LDAP/AD through
SSSD), at or above daemon.min_uid, and a member of jupyterhub-users, as under PAM
(the root daemon refuses a server to anyone else anyway). allowed_groups and
admin_groups are the provider's groups, read from the userinfo claims at each login,
or with [oidc] claims_from = "id_token" from the ID token, its signature checked
against the provider's keys (id_tokens.py).

The authorization code flow is oauthenticator's: state (a cookie bound to the
login's redirect) and PKCE (S256) on. Its endpoints come from the provider's
discovery document when the hub starts (`discover`), whose issuer must be the
configured one (appliance/oidc_discovery.py); a callback naming another issuer (RFC 9207 `iss`) is refused.
The client secret is root's file, handed to the hub by systemd (LoadCredential=,
written by the generator, held_ports.py): the hub cannot read the file itself.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Integer, List, Unicode

from .. import daemon_client, users
from ..config import OIDC_CREDENTIAL
from ..groups import USERS_GROUP
from ..oidc_discovery import DISCOVERY, SSOError, check_discovery, discover, discovery_url, id_token_keys  # noqa: F401
from . import id_tokens, provider_groups, sso_sessions

CREDENTIAL = OIDC_CREDENTIAL  # the generator's LoadCredential= (held_ports.py)


def client_secret() -> str:
    """The client secret as systemd hands it to the hub (LoadCredential=)."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        raise SSOError("no client secret: the hub was not given the credential "
                       f"{CREDENTIAL}; `sudo applctl reload` says why ([oidc] client_secret_file)")
    try:
        return (Path(creds) / CREDENTIAL).read_text().strip()
    except OSError as e:
        raise SSOError(f"no client secret: cannot read the credential {CREDENTIAL} ({e.strerror}); "
                       "`sudo applctl reload` says why ([oidc] client_secret_file)") from None


def apply(c, cfg) -> None:
    """Configure JupyterHub's `c` for single sign-on ([oidc]); SSOError if it cannot."""
    oidc = cfg["oidc"]
    doc = discover(oidc["issuer"])
    c.JupyterHub.authenticator_class = "appliance.hub.sso.ApplianceOIDCAuthenticator"
    a = c.ApplianceOIDCAuthenticator
    a.client_id = oidc["client_id"]
    a.client_secret = client_secret()
    a.authorize_url = doc["authorization_endpoint"]
    a.token_url = doc["token_endpoint"]
    a.userdata_url = doc["userinfo_endpoint"]
    a.issuer = oidc["issuer"]
    a.claims_from = oidc["claims_from"]
    if oidc["claims_from"] == "id_token":
        a.jwks_uri, a.id_token_algorithms = id_token_keys(doc, oidc["issuer"])
    a.iss_in_response = doc.get("authorization_response_iss_parameter_supported") is True
    a.scope = list(oidc["scopes"])
    a.username_claim = oidc["username_claim"]
    a.username_domain = oidc["username_domain"]
    a.groups_claim = oidc["groups_claim"]
    a.min_uid = cfg["daemon"]["min_uid"]
    a.accounts = oidc["accounts"]
    a.enable_pkce = True
    a.login_service = "single sign-on"
    # The provider's groups become the user's JupyterHub groups at each login, which
    # allowed_groups and admin_groups are checked against (oauthenticator 17).
    a.manage_groups = True
    a.allowed_groups = set(oidc["allowed_groups"])
    a.admin_groups = set(oidc["admin_groups"])
    a.allow_existing_users = False
    try:  # logout at the provider, refresh tokens, a disabled person (sso_sessions.py)
        sso_sessions.apply(c, cfg, doc, os.environ.get("CREDENTIALS_DIRECTORY"))
    except sso_sessions.SessionError as e:
        raise SSOError(str(e)) from None


class IdTokenRefresh:
    """claims_from = "id_token" at each refresh (sso_sessions.py): oauthenticator's
    refresh_user would read the stored ID token again, which proves nothing new (and,
    once expired, fails without a word to the provider). Instead the refresh token is
    traded at the token endpoint every time, as userinfo is asked in the other mode:
    the provider's answer is the check that the person is still enabled (its
    invalid_grant ends the session, SessionChecks), and the new ID token, checked
    like the first (token_to_user), brings the current groups. Without a refresh token
    (Entra ID gives one only with the scope offline_access) the login stands while
    its ID token is valid, and then asks for a new login."""

    async def refresh_user(self, user, handler=None, **kwargs):
        if self.claims_from != "id_token" or not self.enable_auth_state:
            return await super().refresh_user(user, handler, **kwargs)
        auth_state = await user.get_auth_state()
        if not auth_state:
            return False
        refresh_token = auth_state.get("refresh_token")
        if not refresh_token:  # the claims of the ID token checked at the login, until it expires
            exp = (auth_state.get(self.user_auth_state_key) or {}).get("exp")
            if isinstance(exp, (int, float)) and time.time() < exp:
                return True
            self.log.info("single sign-on: %s's ID token has expired and there is no refresh token (scope "
                          "offline_access?): a new login", user.name)
            return False
        self.log.info("single sign-on: refreshing %s's tokens for a new ID token", user.name)
        try:
            token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
        except Exception as e:  # SessionChecks.get_token_info has noted whether it was invalid_grant
            self.log.info("single sign-on: the provider did not take %s's refresh token: %s", user.name, e)
            return False
        if not token_info.get("refresh_token"):  # a provider that does not rotate them: the same one again
            token_info["refresh_token"] = refresh_token
        try:
            # oauthenticator 17's own step from tokens to the auth model (authenticate's too)
            return await self._token_to_auth_model(token_info)
        except Exception as e:  # the new ID token does not check out, or its name is refused (as oauthenticator)
            self.log.warning("single sign-on: %s's refreshed tokens refused (%s): a new login", user.name,
                             getattr(e, "log_message", None) or e)
            return False


class ApplianceOIDCAuthenticator(sso_sessions.SessionChecks, IdTokenRefresh, GenericOAuthenticator):
    issuer = Unicode(help="[oidc] issuer: the callback's iss, if any, must be it (RFC 9207)").tag(config=True)
    iss_in_response = Bool(False, help="the provider sends iss with every callback (its discovery document says "
                                       "so)").tag(config=True)
    groups_claim = Unicode("groups", help="[oidc] groups_claim").tag(config=True)
    min_uid = Integer(1000, help="[daemon] min_uid: lower uids are no person's").tag(config=True)
    accounts = Unicode("existing", help="[oidc] accounts: existing, or create (the daemon makes them)").tag(config=True)
    claims_from = Unicode("userinfo", help="[oidc] claims_from: userinfo, or id_token (signature checked)").tag(
        config=True)
    jwks_uri = Unicode(help="the provider's keys, from its discovery document").tag(config=True)
    id_token_algorithms = List(Unicode(), list(id_tokens.ALGORITHMS),
                               help="the asymmetric algorithms the provider signs ID tokens with").tag(config=True)
    username_domain = Unicode("", help="[oidc] username_domain: NAME@it is the local NAME").tag(config=True)
    _jwks = None

    async def authenticate(self, handler, data=None):
        self.check_iss(handler.get_argument("iss", None))
        try:
            return await super().authenticate(handler, data)
        except HTTPClientError as e:
            # The provider refused the code (another client's, used, expired) or the
            # token: a refused login, not a fault of the hub (tornado would answer 500).
            self.log.warning("single sign-on: the provider refused this login: HTTP %s", e.code)
            raise web.HTTPError(400, "The identity provider did not accept this login. Please sign in again.") \
                from None

    async def token_to_user(self, token_info):
        """The person's claims: the userinfo's (oauthenticator's way), or the ID
        token's once it checks out. Also at each refresh, where a refused token
        leaves the session as it is (sso_sessions.py)."""
        if self.claims_from != "id_token":
            return await super().token_to_user(token_info)
        try:
            return await self.id_token_claims(token_info.get("id_token"))
        except id_tokens.IdTokenError as e:
            self.log.warning("single sign-on: an ID token refused: %s", e)
            raise web.HTTPError(403, "The identity provider's answer could not be verified. Please sign in again; "
                                     "if this persists, tell the administrator.") from None

    async def id_token_claims(self, id_token) -> dict:
        """The ID token's claims once it checks out (IdTokenError); in a thread, since
        it may fetch the provider's keys."""
        if self._jwks is None:
            self._jwks = id_tokens.keys(self.jwks_uri)
        return await asyncio.to_thread(id_tokens.verified_claims, id_token, self._jwks, self.issuer, self.client_id,
                                       self.id_token_algorithms)

    def check_iss(self, iss: str | None) -> None:
        """RFC 9207: a provider that says it sends `iss` must send its own; a code
        brought from another provider (mix-up attack) is refused before it is used."""
        if iss is None and not self.iss_in_response:
            return
        if iss != self.issuer:
            self.log.warning("single sign-on: a callback with iss %r, not the configured issuer %r, refused",
                             (iss or "")[:200], self.issuer)
            raise web.HTTPError(400, "This login did not come from this hub's identity provider.")

    def get_user_groups(self, auth_state: dict) -> set[str]:
        """The groups claim of the userinfo: a list of names, or one name."""
        groups = (auth_state.get("oauth_user") or {}).get(self.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        return {g for g in groups if isinstance(g, str)} if isinstance(groups, list) else set()

    def user_info_to_username(self, user_info):
        """The claim as the provider wrote it must be ASCII: JupyterHub lowercases
        names with Python's lower(), which makes the Kelvin sign a 'k', so a lookalike
        would become another person's name (the daemon checks again, accounts.py)."""
        name = super().user_info_to_username(user_info)
        if not isinstance(name, str) or not name.isascii():
            raise web.HTTPError(403, f"Your name at the identity provider ({str(name)[:64]!r}) cannot be an account "
                                     "name here: only letters a-z, digits, '_' and '-'. Ask the administrator.")
        return local_name(name, self.username_domain)

    async def check_allowed(self, username, auth_model=None):
        if auth_model is None:  # JupyterHub asks about users it already has
            return await super().check_allowed(username, auth_model)
        in_groups = auth_model.get("admin") or not self.allowed_groups or \
            await super().check_allowed(username, auth_model)
        if self.accounts == "create" and in_groups:  # never an account for someone the groups keep out
            await self.make_account(username)
        refusal = await asyncio.to_thread(local_account_refusal, username, self.min_uid)
        if refusal:
            self.log.warning("single sign-on: %s refused: %s", username[:64], refusal)
            raise web.HTTPError(403, refusal)
        if in_groups:
            # The groups of this login count for the quota and [limits] (provider_groups.py).
            await asyncio.to_thread(provider_groups.record, username, auth_model.get("groups") or [])
            return True
        raise web.HTTPError(403, f"You signed in as {username}, but none of your groups at the identity provider "
                                 "may use this JupyterHub. Ask its administrator.")

    async def make_account(self, username: str) -> None:
        """accounts = "create": the root daemon makes the local account at the first
        login (and finds it at the next); it decides whether the name may be one."""
        try:
            reply = await daemon_client.call({"op": "account", "user": username}, timeout=90)
        except daemon_client.DaemonError as e:
            self.log.warning("single sign-on: no account for %s: %s (%s)", username[:64], e, e.code)
            if e.code not in ("account", "config"):
                raise web.HTTPError(503, "This JupyterHub could not make your account just now; try again in a "
                                         "minute, or ask its administrator.") from None
            raise web.HTTPError(403, f"You signed in as {username[:64]}, but this machine makes no account for that "
                                     f"name: {e}. Ask the administrator of this JupyterHub.") from None
        if reply.get("user") != username:  # the daemon's normal form: JupyterHub's name must be it
            raise web.HTTPError(403, f"You signed in as {username[:64]}, but this machine's account name for it "
                                     f"would be {str(reply.get('user'))[:64]}. Ask the administrator.")
        if reply.get("created"):
            self.log.info("single sign-on: made the account %s", username)


def local_name(name: str, domain: str) -> str:
    """[oidc] username_domain: the claim NAME@DOMAIN (a UPN such as Entra ID's
    preferred_username) is the local account NAME; a name of another domain, or of
    none, is refused (403), so alice@elsewhere.org never becomes the local alice.
    Without a domain the claim is the name as it is."""
    if not domain:
        return name
    local, at, theirs = name.rpartition("@")
    if at and local and theirs.lower() == domain.lower():
        return local
    shown = name[:64]
    if not at:
        raise web.HTTPError(403, f"You signed in as {shown}, but this JupyterHub takes only names of the form "
                                 f"NAME@{domain}. Ask the administrator.")
    raise web.HTTPError(403, f"You signed in as {shown}, but this JupyterHub takes only accounts of {domain}, "
                             f"not of {theirs[:64] or 'no domain'}. Sign in with your {domain} account, or ask the "
                             "administrator.")


def local_account_refusal(name: str, min_uid: int) -> str | None:
    """accounts = "existing": why the provider's name NAME cannot log in here, in
    words for the person (the daemon's own rule, users.lookup); None if it can.
    Runs in a thread: through SSSD or LDAP a lookup can take seconds."""
    try:
        users.lookup(name, min_uid)
    except users.UserError as e:
        return (f"You signed in as {name[:64]}, but this machine does not let that name use JupyterHub: {e}. "
                "Ask the administrator of this JupyterHub.")
    if not users.is_member(name, USERS_GROUP):
        return (f"{name} has not been given access to this JupyterHub. An administrator can grant it with: "
                f"sudo applctl adduser {name}")
    return None
