"""The hub's account and group lookups (NSS: through sssd or LDAP they can take
seconds) run in a thread, never on the event loop that serves every other person."""

import asyncio
import threading
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from appliance import users
from appliance.hub.authenticator import ApplianceAuthenticator
from appliance.hub.spawner import ApplianceSpawner

GROUPS = ["jupyterhub-users", "ml"]


@pytest.fixture
def lookups(monkeypatch):
    """The thread of every lookup, with alice in GROUPS."""
    threads = []

    def seen(result):
        def lookup(*args):
            threads.append(threading.get_ident())
            return result
        return lookup

    monkeypatch.setattr(users, "groups_of", seen(GROUPS))
    monkeypatch.setattr(ApplianceAuthenticator, "_getpwnam", staticmethod(seen(SimpleNamespace(pw_gid=1000))))
    monkeypatch.setattr(ApplianceAuthenticator, "_getgrouplist", staticmethod(seen([1000, 1001])))
    monkeypatch.setattr(ApplianceAuthenticator, "_getgrnam", staticmethod(
        lambda name: (threads.append(threading.get_ident()), SimpleNamespace(gr_gid=1001))[1]))
    return threads


def test_the_spawn_forms_group_lookups_are_off_the_event_loop(lookups):
    user = SimpleNamespace(name="alice", id=7, url="/user/alice/", server=None, admin=False)
    c = Config()
    c.ApplianceSpawner.gpu_config = {"quota": 1, "quota_groups": {"ml": 2}}
    s = ApplianceSpawner(user=user, config=c, hub=SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api"))

    async def scenario():
        assert s.quota(await s.groups()) == 2
        await s.options_from_form({"gpus": ["0"]})
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(lookups) == 2 and loop_thread not in lookups


def test_the_logins_group_checks_are_off_the_event_loop(lookups):
    auth = ApplianceAuthenticator(allowed_groups={"jupyterhub-users"}, admin_groups={"jupyterhub-admins"})

    async def scenario():
        assert await auth.check_allowed("alice", {"name": "alice"}) is True
        assert await auth.is_admin(None, {"name": "alice"}) is True  # _getgrnam says gid 1001, alice has it (PAMAuthenticator's executor)
        assert await auth.system_user_exists(SimpleNamespace(name="alice")) is True
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert lookups and loop_thread not in lookups
