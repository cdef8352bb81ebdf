"""JupyterHub's REST handler for stopping a server, told who asks; its handler for
making tokens, only for oneself when a user asks; and its metrics handler, when
[metrics] says so.

JupyterHub's own handler stops the server without saying who asked; the spawner
needs to know to record why (stop_reasons.py). And `[culler] cull_admin_users =
false` is enforced here, since jupyterhub-idle-culler applies it only to deleting
users, never to stopping their servers.
"""

from __future__ import annotations

from jupyterhub.apihandlers.users import UserServerAPIHandler, UserTokenListAPIHandler
from jupyterhub.handlers.metrics import MetricsHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from .metrics import MetricsOff
from .stop_reasons import CULLER


class ServerAPIHandler(UserServerAPIHandler):
    @needs_scope("delete:servers")
    async def delete(self, user_name, server_name=""):
        user = self.find_user(user_name)
        me = self.current_user
        if user is not None and not server_name and me is not None:
            spawner = user.spawner
            kind = getattr(me, "kind", "user")
            if (kind == "service" and me.name == CULLER and user.admin
                    and not getattr(spawner, "culler", {}).get("cull_admin_users", True)):
                raise web.HTTPError(403, f"{user.name} is a hub admin, whose servers are not culled "
                                         "(culler.cull_admin_users = false)")
            spawner.stop_requester = (kind, me.name, bool(getattr(me, "admin", False)))
        return await super().delete(user_name, server_name)


class TokenListAPIHandler(UserTokenListAPIHandler):
    """A hub admin's `tokens` scope would let them make a token for any user here,
    one that applctl's cap, its record of who issued it and the revocation at
    `applctl admin remove` never see. So a user (admin or not) makes tokens only
    for themselves, whose rights shrink with theirs; a token for someone else comes
    from applctl (its service) or a service."""

    async def post(self, user_name):
        me = self.current_user
        if me is not None and getattr(me, "kind", "user") == "user" and me.name != user_name:
            raise web.HTTPError(403, f"{me.name} may make API tokens only for themselves here; a token for "
                                     f"{user_name} comes from an administrator: sudo applctl token {user_name}")
        return await super().post(user_name)


def substitute(handlers: list, metrics_access: str) -> list:
    """JupyterHub's handler list with ServerAPIHandler and TokenListAPIHandler in
    place of its own, and its /hub/metrics only when [metrics] access = "token" (it
    then wants read:metrics)."""
    mine = {UserServerAPIHandler: ServerAPIHandler, UserTokenListAPIHandler: TokenListAPIHandler}
    if metrics_access != "token":
        mine[MetricsHandler] = MetricsOff
    return [(h[0], mine[h[1]], *h[2:]) if len(h) > 1 and h[1] in mine else h for h in handlers]
