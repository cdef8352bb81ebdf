"""PAM login limited to the jupyterhub-users group, with a plain refusal message.

The password itself is checked by jupyterhub-pam (password_check.py), a root
service the hub asks over a unix socket: the hub has no access to /etc/shadow.
Everything else of JupyterHub's PAMAuthenticator stays: group-based access and
admin rights, username normalisation. Its account and group lookups (getpwnam,
getgrouplist, getgrnam) run in a thread, since through sssd or LDAP each can take
seconds, which on the event loop would hold up every other login and spawn
(PAMAuthenticator.is_admin runs in its executor already).
"""

import asyncio

from jupyterhub.auth import PAMAuthenticator
from tornado import web

from ..daemon_client import DaemonError, call
from ..password_check import SOCKET, UNIT


class ApplianceAuthenticator(PAMAuthenticator):
    async def authenticate(self, handler, data):
        username, password = data.get("username") or "", data.get("password") or ""
        if not username or not password:
            return None
        source = handler.request.remote_ip if handler is not None else "local"
        try:
            reply = await call({"user": username, "password": password, "source": source}, path=SOCKET,
                               timeout=60, busy_retry=0)
        except DaemonError as e:
            if e.code == "too_many":
                raise web.HTTPError(429, str(e)) from None
            if e.code == "invalid":  # a name or password PAM could never take
                self.log.warning("login refused for %r: %s", username[:32], e)
                return None
            self.log.error("password check unavailable: %s (systemctl status %s)", e, UNIT)
            raise web.HTTPError(503, "Logins are unavailable at the moment; the administrator has been told why "
                                     "in the hub's log.") from None
        return username if reply.get("right") is True else None

    async def check_allowed(self, username, authentication=None):  # JupyterHub awaits it (maybe_future)
        if await asyncio.to_thread(super().check_allowed, username, authentication):
            return True
        if authentication is not None:
            # The password was right (PAM passed), so saying why is no leak; the
            # login form shows this message instead of "invalid password".
            raise web.HTTPError(
                403,
                f"{username} has not been given access to this JupyterHub. "
                f"An administrator can grant it with: sudo applctl adduser {username}",
            )
        return False

    async def system_user_exists(self, user):
        return await asyncio.to_thread(super().system_user_exists, user)
