"""Single sign-on's sessions (issue 29): logout at the provider, refresh tokens, and
what the hub does when the provider has disabled a person.

JupyterHub asks the authenticator to refresh a login (`refresh_user`) at the first
request of the person, or of their server, after auth_refresh_age ([oidc]
refresh_age), and before each spawn. oauthenticator's refresh_user asks the
provider's userinfo with the access token kept in auth_state and, when that is
refused (4xx), trades the refresh token for new tokens. auth_state lives in the
hub's database encrypted with root's key (state.CRYPT_KEY), which systemd hands
to the hub (LoadCredential=, held_ports.sso_dropin).

A disabled person, on the wire: userinfo refuses their access token (4xx) and the
token endpoint refuses their refresh token with 400 invalid_grant (RFC 6749 5.2).
Only that refusal ends the session and stops their servers, with a stop reason,
and ends their API tokens (which would otherwise still start a server: JupyterHub
does not refuse a token's request when a refresh fails). A provider that does not
answer, or answers with anything else (5xx, invalid_client), proves nothing about
the person: the session stands and the next refresh asks again.

The hub cannot tell a disabled account from a session the provider has ended (its
refresh token's lifetime, e.g. Keycloak's "SSO Session Max"): both refuse the
refresh token, so that lifetime bounds how long a server runs without a new login.
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import urlencode

from tornado import web
from tornado.httpclient import HTTPClientError

from ..state import CRYPT_CREDENTIAL
from . import stop_reasons

# What the token endpoint said to the refresh grant of the refresh_user running in
# this task: oauthenticator catches every error there and only returns False.
_refresh_refused: ContextVar[list | None] = ContextVar("appliance_sso_refresh_refused", default=None)


DISABLED = "Your account was disabled at the identity provider."


class SessionError(RuntimeError):
    """Sessions cannot work; worded for the administrator (sso.SSOError says it)."""


def crypt_key(creds: str | None) -> str:
    """The auth_state key as systemd hands it to the hub (LoadCredential=)."""
    if not creds:
        raise SessionError(f"no key for the people's tokens: the hub was not given the credential {CRYPT_CREDENTIAL}")
    try:
        key = (Path(creds) / CRYPT_CREDENTIAL).read_text().strip()
    except OSError as e:
        raise SessionError(f"no key for the people's tokens: cannot read the credential {CRYPT_CREDENTIAL} "
                           f"({e.strerror}); `sudo applctl doctor --fix` makes it") from None
    if len(key) != 64:
        raise SessionError(f"the credential {CRYPT_CREDENTIAL} is not a key of 64 hex digits; "
                           "`sudo applctl doctor --fix` makes a new one (everybody logs in again)")
    return key


def logout_url(doc: dict, client_id: str) -> str:
    """Where the hub's logout sends a person after ending the hub's session: the
    provider's end-session endpoint (OpenID Connect RP-Initiated Logout), which asks
    them whether to sign out there too. client_id names this hub, as the spec allows
    without an id_token_hint; no post_logout_redirect_uri, which would have to be
    registered. "" when the provider has none: the hub's own logout page."""
    end = doc.get("end_session_endpoint")
    if not isinstance(end, str) or not end.startswith("http"):
        return ""
    return end + ("&" if "?" in end else "?") + urlencode({"client_id": client_id})


def apply(c, cfg, doc: dict, creds: str | None) -> None:
    """Sessions' part of JupyterHub's `c` (sso.apply calls it)."""
    from jupyterhub.crypto import CryptKeeper

    # Set on the one instance JupyterHub uses (it builds it without the config),
    # not through JUPYTERHUB_CRYPT_KEY: the environment would show it to children.
    CryptKeeper.instance().keys = [crypt_key(creds)]
    c.Authenticator.enable_auth_state = True  # oauthenticator then also refreshes before each spawn
    c.Authenticator.auth_refresh_age = cfg["oidc"]["refresh_age"]
    c.ApplianceOIDCAuthenticator.logout_redirect_url = logout_url(doc, cfg["oidc"]["client_id"])


def refused(error: BaseException) -> bool:
    """Whether the token endpoint refused a refresh token (400 invalid_grant): the
    provider no longer honours this person's grant."""
    if not (isinstance(error, HTTPClientError) and error.code == 400 and error.response is not None):
        return False
    try:
        body = json.loads(error.response.body)
    except (ValueError, TypeError):
        return False
    return isinstance(body, dict) and body.get("error") == "invalid_grant"


class SessionChecks:
    """Mixed into the OIDC authenticator, before oauthenticator's class."""

    async def get_token_info(self, handler, params):
        try:
            return await super().get_token_info(handler, params)
        except Exception as e:
            said = _refresh_refused.get()
            if said is not None and params.get("grant_type") == "refresh_token":
                said.append(refused(e))
            raise

    async def refresh_user(self, user, handler=None, **kwargs):
        if handler is not None and not hasattr(handler, "_token_authenticated"):
            # JupyterHub 6.1.1 reads it after a failed refresh but sets it only for
            # tokens: a cookie's request would fail with AttributeError.
            handler._token_authenticated = False
        said: list[bool] = []
        token = _refresh_refused.set(said)
        try:
            refreshed = await super().refresh_user(user, handler, **kwargs)
        except Exception as e:  # userinfo unreachable or failing (oauthenticator passes on all but 4xx)
            self.log.warning("single sign-on: cannot check %s with the provider (%s); the session stands", user.name,
                             e)
            return True
        finally:
            _refresh_refused.reset(token)
        if refreshed is False and said == [False]:
            self.log.warning("single sign-on: the provider did not answer %s's refresh token, or failed without "
                             "refusing it (invalid_grant); the session stands", user.name)
            return True
        if refreshed is False and said == [True]:
            await self.end_disabled(user, handler)
            # JupyterHub lets a token's request go on after a failed refresh; this one must not.
            if handler is not None and handler._token_authenticated:
                raise web.HTTPError(403, DISABLED)
        return refreshed

    async def end_disabled(self, user, handler) -> None:
        """The provider refused the person's refresh token: their servers stop, with
        the reason for their home page, and their API tokens expire (now: deleting
        one would break the request it came with)."""
        self.log.warning("single sign-on: the provider refused %s's refresh token: disabled there; stopping their "
                         "servers and ending their API tokens", user.name)
        why = stop_reasons.disabled_at_provider(time.time())
        for name, spawner in list(user.spawners.items()):
            if not spawner.active or handler is None:
                continue
            try:
                spawner.record_stop(why)
                await handler.stop_single_user(user, name)
            except Exception:  # a server still starting: the next refresh stops it
                self.log.exception("single sign-on: could not stop %s's server %r", user.name, name)
        for t in user.orm_user.api_tokens:
            t.expires_at = t.now()
        user.db.commit()
