"""Ephemeral mode in the hub: a visitor lands in a server of their own at once.

jupyterhub-tmpauthenticator's way (auto login, a new random user per visit at
/hub/tmplogin), with what a public workshop hub needs on top: the appliance's
visitor names, an optional site password, the cap on visitors, and a warm pool of
servers started ahead of anyone (VisitorKeeper) that are handed out whole: a
pooled server already runs as the user the visitor becomes, with that user's own
token and OAuth client, and nobody held that user's cookie before.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jupyterhub import orm
from jupyterhub.handlers import BaseHandler
from tmpauthenticator import TmpAuthenticator
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Integer, Unicode, default

from .. import ephemeral, files, passwords
from ..groups import STATE_DIR

MAX_PASSWORD = 1024  # a form value longer than this is refused before bcrypt
# A visitor user with no server is forgotten after this (a spawn just asked for is
# not yet "active"); the hub looks every SWEEP_EVERY seconds.
UNUSED_GRACE = timedelta(seconds=60)
SWEEP_EVERY = 5.0
# A visitor counts for the cap while their server is active, and for this long after
# admission (the redirect to /hub/spawn has not arrived yet).
ADMITTING = timedelta(seconds=10)


def _age(orm_user: orm.User) -> timedelta:
    return datetime.now(timezone.utc).replace(tzinfo=None) - orm_user.created


def read_hash(path: str) -> str:
    """The bcrypt hash in password_file; OSError or ValueError saying what is wrong."""
    text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    if not passwords.is_hash(text):
        raise ValueError(f"{path} does not hold a bcrypt hash; write one with: sudo applctl ephemeral password set")
    return text


class ServedCounter:
    """How many visitors the hub has admitted, kept across restarts in STATE_DIR."""

    def __init__(self, path: Path = Path(STATE_DIR) / ephemeral.SERVED_FILE):
        self.path = path
        try:
            self.count = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            self.count = 0

    def add(self) -> int:
        self.count += 1
        try:  # a count, written on the event loop: not worth an fsync
            files.write_atomic(self.path, f"{self.count}\n", 0o600, durable=False)
        except OSError:
            pass  # counting must never keep a visitor out
        return self.count


class VisitorLoginHandler(BaseHandler):
    """/hub/tmplogin: the site password (if any), the cap, then a pooled server or a
    new user whose spawn starts at once (no form)."""

    @property
    def visitor_auth(self) -> VisitorAuthenticator:
        return self.authenticator

    async def get(self):
        if self.visitor_auth.password_file:
            await self._form()
            return
        await self._admit()

    async def post(self):
        auth = self.visitor_auth
        if not auth.password_file:
            await self._admit()
            return
        given = self.get_body_argument("password", default="")
        try:
            hashed = read_hash(auth.password_file)
        except (OSError, ValueError) as e:
            self.log.error("ephemeral: cannot check the site password: %s", e)
            raise web.HTTPError(500, "The hub cannot check the password; tell the person who runs it.") from None
        if len(given) > MAX_PASSWORD or not await asyncio.to_thread(passwords.matches, given, hashed):
            self.set_status(403)
            await self._form("That is not the password. Ask the person who runs this workshop.")
            return
        await self._admit()

    async def _form(self, message: str = "") -> None:
        html = await self.render_template("visitor-login.html", message=message,
                                    action=self.request.uri, login_service="the workshop")
        self.finish(html)

    async def _admit(self) -> None:
        auth = self.visitor_auth
        pool = pool_group(self.db)
        visitors = [u for u in self.db.query(orm.User) if ephemeral.is_visitor(u.name) and u not in pool.users
                    and (self.users[u].spawner.active or _age(u) < ADMITTING)]
        if len(visitors) >= auth.max_visitors:
            self.log.warning("ephemeral: a visitor turned away: %d of %d visitors have a server",
                             len(visitors), auth.max_visitors)
            raise web.HTTPError(503, ephemeral.FULL_MESSAGE)
        user = self._from_pool(pool)
        pooled = user is not None
        if pooled:
            # A content link (/hub/user-redirect/git-pull?...) or any page of the hub
            # the visitor was sent to login from: there, now in the pooled server.
            next_url = self.get_next_url(user) if self.get_argument("next", "") else user.url
        else:
            user = await self.login_user(None)
            if user is None:
                raise web.HTTPError(403)
            next_url = self.get_next_url(user)
        # As tmpauthenticator does: always this new user, whoever the cookie named.
        self.set_hub_cookie(user)
        served = auth.served.add()
        self.log.info("ephemeral: visitor %s admitted%s; %d visitors served", user.name,
                      " to a server from the warm pool" if pooled else "", served)
        self.redirect(next_url)

    def _from_pool(self, pool: orm.Group):
        """A pooled user whose server is ready, taken out of the pool. No await between
        choosing and removing: two visitors can never get the same one."""
        for orm_user in list(pool.users):
            user = self.users[orm_user]
            if user.spawner.ready:
                pool.users.remove(orm_user)
                self.db.commit()
                return user
        return None


class VisitorAuthenticator(TmpAuthenticator):
    password_file = Unicode("", help="[ephemeral] password_file: a bcrypt hash").tag(config=True)
    max_visitors = Integer(20, help="[ephemeral] max_visitors").tag(config=True)

    @default("allow_all")
    def _allow_all_default(self):
        return True  # every visitor is a new user; names are checked in check_allowed

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.served = ServedCounter()

    async def authenticate(self, handler, data):
        return {"name": ephemeral.new_name()}

    def check_allowed(self, username, authentication=None):
        return ephemeral.is_visitor(username)

    def get_handlers(self, app):
        return [("/tmplogin", VisitorLoginHandler)]


def pool_group(db) -> orm.Group:
    group = orm.Group.find(db, ephemeral.POOL_GROUP)
    if group is None:
        group = orm.Group(name=ephemeral.POOL_GROUP)
        db.add(group)
        db.commit()
    return group


class VisitorKeeper:
    """Runs in the hub: forgets visitors whose server has stopped (in either mode,
    so that nothing of them stays after a switch), and in ephemeral mode keeps the
    warm pool full. Acts through the hub's REST API as the applctl service, as
    an administrator would."""

    def __init__(self, app, token: str | None, settings: dict):
        self.app = app
        self.token = token
        self.settings = settings  # [ephemeral], or {} in accounts mode
        self.http = AsyncHTTPClient()

    async def _api(self, method: str, path: str, body: dict | None = None) -> None:
        req = HTTPRequest(f"{self.app.hub.url}api/{path}", method=method,
                          body=json.dumps(body) if body is not None else (None if method in ("GET", "DELETE") else ""),
                          headers={"Authorization": f"token {self.token}"}, request_timeout=60)
        await self.http.fetch(req)

    async def run(self) -> None:
        if not self.token:
            self.app.log.warning("ephemeral: no applctl token: visitors are not forgotten and no pool is kept")
            return
        while True:
            try:
                await self.sweep()
                if self.settings:
                    await self.fill_pool()
            except Exception:  # the next round tries again
                self.app.log.exception("ephemeral: keeping visitors")
            await asyncio.sleep(SWEEP_EVERY)

    async def sweep(self) -> None:
        for orm_user in list(self.app.db.query(orm.User)):
            if not ephemeral.is_visitor(orm_user.name):
                continue
            user = self.app.users[orm_user]
            if user.spawner.active or user.spawner.pending or _age(orm_user) < UNUSED_GRACE:
                continue
            try:
                await self._api("DELETE", f"users/{user.name}")
                self.app.log.info("ephemeral: forgot visitor %s (no server)", user.name)
            except (HTTPClientError, OSError) as e:
                self.app.log.warning("ephemeral: could not forget %s: %s", user.name, e)

    async def fill_pool(self) -> None:
        pool = pool_group(self.app.db)
        want = self.settings["warm_pool"] - len(pool.users)
        for _ in range(max(0, want)):
            name = ephemeral.new_name()
            try:
                await self._api("POST", f"users/{name}")
                await self._api("POST", f"groups/{ephemeral.POOL_GROUP}/users", {"users": [name]})
                await self._api("POST", f"users/{name}/server", {})
                self.app.log.info("ephemeral: %s started for the warm pool", name)
            except (HTTPClientError, OSError) as e:
                self.app.log.warning("ephemeral: could not add %s to the warm pool: %s", name, e)
                return
