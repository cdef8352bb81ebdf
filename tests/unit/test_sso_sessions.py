"""Single sign-on's sessions (issue 29 item 3, appliance/hub/sso_sessions.py): the
crypt key as a credential, logout at the provider's end-session endpoint, and what a
refresh does when the provider refuses a person or does not answer. oauthenticator's
own refresh_user runs against a provider's token and userinfo endpoints served here
on loopback; the booted test with a real provider is test_9_sso_sessions.py."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import pytest
from tornado import web

from appliance import config
from appliance.hub import sso, sso_sessions, stop_reasons

OIDC = '[auth]\ntype = "oidc"\n[oidc]\nissuer = "https://login.example.org"\nclient_id = "hub"\n'


def test_refresh_age_defaults_to_jupyterhubs_and_a_bad_one_is_one_line():
    assert config.loads(OIDC)["oidc"]["refresh_age"] == 300
    assert config.loads(OIDC + "refresh_age = 10\n")["oidc"]["refresh_age"] == 10
    for bad in ("0", "5", "86401", '"300"', "true"):
        with pytest.raises(config.ConfigError) as e:
            config.loads(OIDC + f"refresh_age = {bad}\n", "/x.toml")
        assert str(e.value).startswith("/x.toml: oidc.refresh_age = ") and "an integer from 10 to 86400" in \
            str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("end, url", [
    ("https://id.example.org/logout", "https://id.example.org/logout?client_id=my+hub"),
    ("https://id.example.org/logout?x=1", "https://id.example.org/logout?x=1&client_id=my+hub"),
    (None, ""), (3, ""), ("javascript:alert(1)", ""),
])
def test_logout_goes_to_the_providers_end_session_endpoint_when_it_has_one(end, url):
    assert sso_sessions.logout_url({"end_session_endpoint": end} if end else {}, "my hub") == url


@pytest.mark.parametrize("key, says", [
    (None, "was not given the credential crypt-key"),
    ("", "cannot read the credential crypt-key"),
    ("short", "not a key of 64 hex digits"),
])
def test_without_a_good_crypt_key_single_sign_on_says_why(tmp_path, key, says):
    if key:
        (tmp_path / "crypt-key").write_text(key)
    with pytest.raises(sso_sessions.SessionError, match=says):
        sso_sessions.crypt_key(str(tmp_path) if key is not None else None)


def test_the_key_goes_to_jupyterhubs_crypt_keeper_not_the_environment(tmp_path, monkeypatch):
    import os

    from jupyterhub.crypto import CryptKeeper
    from traitlets.config import Config
    (tmp_path / "crypt-key").write_text("ab" * 32 + "\n")
    c = Config()
    doc = {"end_session_endpoint": "https://login.example.org/end"}
    sso_sessions.apply(c, config.loads(OIDC + "refresh_age = 60\n"), doc, str(tmp_path))
    assert CryptKeeper.instance().keys == [bytes.fromhex("ab" * 32)]
    assert "JUPYTERHUB_CRYPT_KEY" not in os.environ
    assert (c.Authenticator.enable_auth_state, c.Authenticator.auth_refresh_age) == (True, 60)
    assert c.ApplianceOIDCAuthenticator.logout_redirect_url == "https://login.example.org/end?client_id=hub"


def test_the_stop_reason_tells_the_owner():
    why = stop_reasons.disabled_at_provider(0.0)
    assert why.reason == "sso-disabled" and why.reason in stop_reasons.REASONS
    assert why.message().endswith("because your account was disabled at the identity provider.")


# --- refresh_user against a provider's endpoints -------------------------------------------

@pytest.fixture
def endpoints():
    """Token and userinfo endpoints; .answers[path] = (status, body) set by the test,
    .asked lists the grant types the token endpoint saw."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            status, body = server.answers[self.path]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def do_GET(self):
            if server.answers["/me"] is None:  # a provider's userinfo: the token must be one it issued
                ok = self.headers.get("Authorization") == "Bearer new"
                server.answers["/me"] = (200, {"preferred_username": "alice"}) if ok else (401, {})
                try:
                    return self.answer()
                finally:
                    server.answers["/me"] = None
            self.answer()

        def do_POST(self):
            form = self.rfile.read(int(self.headers["Content-Length"])).decode()
            server.asked.append(dict(p.split("=", 1) for p in form.split("&")).get("grant_type"))
            self.answer()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.asked = []
    server.answers = {"/token": (200, {"access_token": "new", "token_type": "Bearer", "refresh_token": "r2"}),
                      "/me": None}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


class Spawner:
    """What end_disabled reads of JupyterHub's Spawner (the real one needs a hub)."""

    def __init__(self, active):
        self.active, self.recorded = active, None

    def record_stop(self, why):
        self.recorded = why


class Token:
    expires_at = None

    @staticmethod
    def now():
        return "now"


class User:
    """JupyterHub's User as refresh_user and end_disabled use it."""

    def __init__(self):
        self.name = "alice"
        self.spawners = {"": Spawner(True), "other": Spawner(False)}
        self.orm_user = type("OrmUser", (), {"api_tokens": [Token(), Token()]})()
        self.db = type("Db", (), {"commit": lambda self: None})()

    async def get_auth_state(self):
        return {"access_token": "old", "refresh_token": "r1", "token_response": {
            "access_token": "old", "token_type": "Bearer", "refresh_token": "r1"}}


class Handler:
    def __init__(self, token_authenticated=False):
        self._token_authenticated = token_authenticated
        self.stopped = []

    async def stop_single_user(self, user, name):
        self.stopped.append(name)


def refresh(endpoints, handler=None, token_url=None):
    a = sso.ApplianceOIDCAuthenticator(client_id="hub", client_secret="s", enable_auth_state=True,
                                       token_url=token_url or endpoints.url + "/token",
                                       userdata_url=endpoints.url + "/me", username_claim="preferred_username")
    user = User()
    handler = handler or Handler()
    return asyncio.run(a.refresh_user(user, handler)), user, handler


def test_a_refresh_token_renews_an_access_token_the_provider_no_longer_takes(endpoints):
    refreshed, user, handler = refresh(endpoints)  # userinfo takes "new", not "old"
    assert endpoints.asked == ["refresh_token"]
    assert refreshed["auth_state"]["access_token"] == "new" and refreshed["auth_state"]["refresh_token"] == "r2"
    assert handler.stopped == []


def test_a_refused_refresh_token_stops_the_servers_with_the_reason_and_ends_the_tokens(endpoints):
    endpoints.answers["/me"] = (401, {"error": "invalid_token"})
    endpoints.answers["/token"] = (400, {"error": "invalid_grant", "error_description": "account not found"})
    refreshed, user, handler = refresh(endpoints)
    assert refreshed is False  # the person must log in again, which the provider refuses
    assert handler.stopped == [""]  # the running server; not the one that is not
    assert user.spawners[""].recorded.reason == "sso-disabled" and user.spawners["other"].recorded is None
    assert [t.expires_at for t in user.orm_user.api_tokens] == ["now", "now"]


def test_a_refused_refresh_on_a_tokens_request_refuses_the_request(endpoints):
    endpoints.answers["/me"] = (401, {"error": "invalid_token"})
    endpoints.answers["/token"] = (400, {"error": "invalid_grant"})
    with pytest.raises(web.HTTPError) as e:
        refresh(endpoints, Handler(token_authenticated=True))
    assert e.value.status_code == 403 and "disabled at the identity provider" in e.value.log_message


@pytest.mark.parametrize("me, token, token_url", [
    ((401, {"error": "invalid_token"}), (500, {"error": "server_error"}), None),  # the provider fails
    ((401, {"error": "invalid_token"}), (401, {"error": "invalid_client"}), None),  # not about the person
    ((401, {"error": "invalid_token"}), None, "http://127.0.0.1:9/token"),  # token endpoint unreachable
    ((503, {}), None, None),  # userinfo fails
])
def test_a_provider_that_does_not_answer_or_fails_leaves_the_session_and_servers(endpoints, me, token, token_url):
    endpoints.answers["/me"] = me
    if token:
        endpoints.answers["/token"] = token
    refreshed, user, handler = refresh(endpoints, token_url=token_url)
    assert refreshed is True and handler.stopped == [] and user.spawners[""].recorded is None
    assert [t.expires_at for t in user.orm_user.api_tokens] == [None, None]


def test_an_unreachable_userinfo_leaves_the_session(endpoints):
    a = sso.ApplianceOIDCAuthenticator(client_id="hub", client_secret="s", enable_auth_state=True,
                                       token_url=endpoints.url + "/token", userdata_url="http://127.0.0.1:9/me")
    handler = Handler()
    assert asyncio.run(a.refresh_user(User(), handler)) is True and handler.stopped == []


def test_a_refused_refresh_on_a_cookies_request_sends_to_the_login(endpoints):
    endpoints.answers["/me"] = (401, {"error": "invalid_token"})
    endpoints.answers["/token"] = (400, {"error": "invalid_grant"})
    handler = Handler()
    del handler._token_authenticated  # as JupyterHub 6.1.1 leaves it on a cookie's request
    refreshed, _, handler = refresh(endpoints, handler)
    assert refreshed is False and handler._token_authenticated is False and handler.stopped == [""]
