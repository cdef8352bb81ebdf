"""An admin's powers end with the role (issue 26, item 5): under sudo no service token,
no token past [tokens] max_days_under_sudo, which only root may change; every token
names its issuer, and `admin remove` (or a hub start) revokes what that admin issued.

The command line runs for real; the hub's REST API is an in-memory stand-in.
"""

from __future__ import annotations

import json
import os
import pwd

import pytest
from jupyterhub import orm, roles

from appliance import config, config_edit, token_notes, users
from appliance.cli import access
from appliance.cli import token as token_mod
from appliance.cli.hub_api import Hub, HubError
from appliance.hub import revoke

from .cli_run import run

OLIVE, PERCY = 1234, 1235
DAY = 86400


@pytest.fixture(autouse=True)
def root(monkeypatch, tmp_path):
    """Root, with an appliance.toml of all defaults; no sudo unless a test says so."""
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nport = 8000\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    known = {n: pwd.struct_passwd((n, "x", uid, uid, "", f"/home/{n}", "/bin/bash"))
             for n, uid in (("olive", OLIVE), ("percy", PERCY))}
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: next(p for p in known.values() if p.pw_uid == uid))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: known[name])
    return path


@pytest.fixture
def sudo(monkeypatch):
    """olive (uid 1234), a jupyterhub-admin, through sudo applctl."""
    monkeypatch.setenv("SUDO_UID", str(OLIVE))
    monkeypatch.setenv("SUDO_USER", "olive")


class FakeHub:
    """Users with tokens, through Hub.call's paths."""

    def __init__(self):
        self.tokens: dict[str, list[dict]] = {"olive": [], "percy": [], "quinn": []}
        self.next_id = 1
        self.bodies: list[dict] = []

    def add(self, user: str, note: str) -> int:
        self.tokens[user].append({"id": f"a{self.next_id}", "note": note})
        self.next_id += 1
        return self.next_id - 1

    def notes(self, user: str) -> list[str]:
        return [t["note"] for t in self.tokens[user]]

    def call(self, method, path, body=None, auth=True, timeout=15):
        parts = path.split("?")[0].strip("/").split("/")
        if method == "GET" and parts == ["users"]:
            return [{"name": n} for n in self.tokens] if "offset=0" in path else []
        if method == "GET" and len(parts) == 2:
            if parts[1] not in self.tokens:
                raise HubError(404, "no such user")
            return {"name": parts[1]}
        if method == "PATCH" and len(parts) == 2:
            return {}
        if parts[2:] == ["tokens"] and method == "GET":
            return {"api_tokens": list(self.tokens[parts[1]])}
        if parts[2:] == ["tokens"] and method == "POST":
            self.bodies.append(body)
            self.add(parts[1], body["note"])
            return {"token": "0" * 32, "id": f"a{self.next_id - 1}", "scopes": body["scopes"] or ["inherit"],
                    "expires_at": "2030-01-01T00:00:00Z", "note": body["note"]}
        if method == "DELETE" and len(parts) == 4 and parts[2] == "tokens":
            before = len(self.tokens[parts[1]])
            self.tokens[parts[1]] = [t for t in self.tokens[parts[1]] if t["id"] != parts[3]]
            if len(self.tokens[parts[1]]) == before:
                raise HubError(404, "no such token")
            return None
        raise AssertionError(f"unexpected {method} {path}")


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(Hub, "call", lambda self, *a, **k: fake.call(*a, **k))
    monkeypatch.setattr(token_mod, "has_access", lambda name: True)
    monkeypatch.setattr(token_mod, "refuse_privileged", lambda name, cfg, what: None)
    return fake


@pytest.fixture
def hub_unasked(monkeypatch):
    monkeypatch.setattr(Hub, "call", lambda *a, **k: pytest.fail("the hub must not be asked"))
    monkeypatch.setattr(Hub, "token", lambda *a, **k: pytest.fail("the service token must not be read"))


# --- who is root ------------------------------------------------------------------------

@pytest.mark.parametrize("env, euid, expected", [
    ({}, 0, None),                                   # a root login, a unit, cron
    ({"SUDO_UID": "0", "SUDO_USER": "root"}, 0, None),  # a root shell that ran sudo again
    ({"SUDO_UID": "1234", "SUDO_USER": "olive"}, 0, 1234),  # a jupyterhub-admin through sudo
    ({"SUDO_UID": "1234"}, 1234, None),              # not root at all: need_root refuses it anyway
    ({"SUDO_UID": "olive"}, 0, None),                # not a uid: sudo never sets that
])
def test_root_is_whoever_did_not_come_through_sudo_from_another_uid(monkeypatch, env, euid, expected):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert token_mod.caller() == expected


# --- the service token --------------------------------------------------------------------

def test_an_admin_under_sudo_cannot_read_the_service_token(capsys, sudo, hub_unasked):
    code, out, err = run(capsys, "token", "--service")
    assert code == 1 and out == ""
    assert err.startswith("applctl: --service: ") and "for root only" in err and "sudo applctl token NAME" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_root_reads_the_service_token(capsys, monkeypatch):
    monkeypatch.setattr(Hub, "token", lambda self: "f" * 32)
    assert run(capsys, "token", "--service")[:2] == (0, "f" * 32 + "\n")
    monkeypatch.setenv("SUDO_UID", "0")  # root's own sudo is still root
    assert run(capsys, "token", "--service")[:2] == (0, "f" * 32 + "\n")


# --- the cap ---------------------------------------------------------------------------------

def test_durations_under_the_cap():
    cap = 90 * DAY
    assert token_mod.parse_duration(None, cap=cap) == 30 * DAY  # the usual default fits
    assert token_mod.parse_duration(None, cap=7 * DAY) == 7 * DAY  # a smaller cap shortens the default
    assert token_mod.parse_duration("90d", cap=cap) == cap
    assert token_mod.parse_duration("12h", cap=cap) == 12 * 3600
    with pytest.raises(token_mod.Failure, match="longer than the 90 days a token issued through sudo applctl"):
        token_mod.parse_duration("91d", cap=cap)
    assert token_mod.parse_duration("365d") == 365 * DAY  # root: no cap


@pytest.mark.parametrize("args, says", [
    (["--expires-in", "91d"], "--expires-in: '91d' is longer than the 90 days a token issued through sudo applctl "
                              "may live ([tokens] max_days_under_sudo, which only root may change); ask for 90d or less"),
    (["--expires-in", "52w"], "longer than the 90 days"),
    (["--expires-in", "never"], "a token without expiry is for root only"),
    (["--no-expiry"], "a token without expiry is for root only"),
    (["--note", "two\nlines"], "--note: 'two\\nlines' is not accepted: one line of at most 200 printable characters"),
])
def test_an_admin_asking_past_the_cap_is_refused_before_the_hub_is_asked(capsys, sudo, hub_unasked, args, says):
    code, out, err = run(capsys, "token", *args, "percy")
    assert code == 1 and out == "" and err.startswith("applctl: ") and says in err, err
    assert len(err.strip().splitlines()) == 1


def test_the_cap_comes_from_the_configuration(capsys, sudo, hub_unasked, root):
    root.write_text("[tokens]\nmax_days_under_sudo = 7\n")
    code, out, err = run(capsys, "token", "--expires-in", "8d", "percy")
    assert code == 1 and "longer than the 7 days" in err and "ask for 7d or less" in err


def test_tokens_record_their_issuer_and_live_within_the_cap(capsys, sudo, hub):
    code, out, err = run(capsys, "token", "percy")
    assert code == 0 and out == "0" * 32 + "\n"
    assert hub.bodies[-1]["note"] == "issued by olive (uid 1234) through sudo applctl"
    assert hub.bodies[-1]["expires_in"] == 30 * DAY
    assert "issued by olive (uid 1234) through sudo applctl" in err  # shown to the issuer too
    assert run(capsys, "token", "--expires-in", "90d", "--note", "nightly backup", "percy")[0] == 0
    assert hub.bodies[-1] == {"note": "nightly backup; issued by olive (uid 1234) through sudo applctl",
                              "expires_in": 90 * DAY, "scopes": None}


def test_root_records_itself_and_may_go_past_the_cap(capsys, hub):
    assert run(capsys, "token", "--expires-in", "365d", "percy")[0] == 0
    assert hub.bodies[-1]["note"] == "issued by root through applctl" and hub.bodies[-1]["expires_in"] == 365 * DAY
    assert run(capsys, "token", "--no-expiry", "--note", "monitoring", "percy")[0] == 0
    assert hub.bodies[-1]["note"] == "monitoring; issued by root through applctl"
    assert hub.bodies[-1]["expires_in"] is None


@pytest.mark.parametrize("note, issuer", [
    ("issued by olive (uid 1234) through sudo applctl", ("olive", 1234)),
    ("backup; issued by olive (uid 1234) through sudo applctl", ("olive", 1234)),
    # A forged name in the free text does not hide the real issuer, recorded last.
    ("issued by bob (uid 1) through sudo applctl; issued by olive (uid 1234) through sudo applctl", ("olive", 1234)),
    ("issued by olive (uid 1234) through sudo applctl, honest", None),  # not at the end: not applctl's
    ("issued by root through applctl", None),
    ("", None),
    (None, None),
])
def test_the_issuer_is_read_from_the_end_of_the_note(note, issuer):
    assert token_notes.issuer_of(note) == issuer


# --- root-only configuration ------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("config", "set", "tokens.max_days_under_sudo", "3650"),
    ("config", "set", "tokens.max_days_under_sudo", "30"),  # lower too: root's setting is root's
    ("config", "unset", "tokens.max_days_under_sudo"),
])
def test_an_admin_cannot_change_the_cap(capsys, sudo, root, args):
    root.write_text("[tokens]\nmax_days_under_sudo = 14\n")
    before = root.read_text()
    code, out, err = run(capsys, *args)
    assert code == 1 and out == "" and "Traceback" not in err
    assert ("applctl: tokens.max_days_under_sudo bounds what a jupyterhub-admin may do, so only root may change it "
            "(a root login, not sudo applctl); it stays 14; the file is unchanged") in err
    assert root.read_text() == before


def test_an_admin_cannot_change_the_cap_by_editing_the_file(sudo, root):
    before = root.read_text()
    with pytest.raises(config_edit.EditError, match="only root may change it"):
        config_edit.replace(root, before + "[tokens]\nmax_days_under_sudo = 3650\n", before)
    assert root.read_text() == before


def test_an_admin_may_change_other_keys_and_root_may_change_the_cap(capsys, sudo, root, monkeypatch):
    root.write_text("[tokens]\nmax_days_under_sudo = 14\n")
    assert run(capsys, "config", "set", "hub.port", "8080")[0] == 0  # the cap as it was does not block it
    monkeypatch.delenv("SUDO_UID")
    assert run(capsys, "config", "set", "tokens.max_days_under_sudo", "365")[0] == 0
    assert config.load(root)["tokens"]["max_days_under_sudo"] == 365
    code, _, err = run(capsys, "config", "set", "tokens.max_days_under_sudo", "0")
    assert code == 1 and "tokens.max_days_under_sudo = 0 is not accepted: an integer from 1 to 3650" in err


# --- demotion ---------------------------------------------------------------------------------

@pytest.fixture
def groups(monkeypatch):
    members = {"jupyterhub-users": {"olive", "percy"}, "jupyterhub-admins": {"olive"}}
    monkeypatch.setattr(access, "members", lambda g: set(members[g]))
    monkeypatch.setattr(access, "secondary_members", lambda g: set(members[g]))
    monkeypatch.setattr(access, "run", lambda argv, what=None, input=None: members[argv[3]].discard(argv[2]))
    return members


def test_admin_remove_revokes_every_token_the_admin_issued(capsys, hub, groups):
    own = hub.add("olive", "issued by olive (uid 1234) through sudo applctl")
    hub.add("percy", "issued by olive (uid 1234) through sudo applctl")
    hub.add("quinn", "nightly; issued by olive (uid 1234) through sudo applctl")
    hub.add("percy", "issued by root through applctl")
    hub.add("percy", "issued by quinn (uid 1300) through sudo applctl")
    hub.add("percy", "issued by olive (uid 1234) through sudo applctl, said percy")  # percy's own words
    code, out, err = run(capsys, "admin", "remove", "olive")
    assert code == 0, err
    assert out == ("olive is no longer a hub admin; revoked 1 API token(s) of theirs and 2 they issued through "
                   "sudo applctl\n")
    assert hub.tokens["olive"] == [] and hub.tokens["quinn"] == [] and own
    assert hub.notes("percy") == ["issued by root through applctl", "issued by quinn (uid 1300) through sudo applctl",
                                  "issued by olive (uid 1234) through sudo applctl, said percy"]
    assert "olive" not in groups["jupyterhub-admins"]


def test_admin_remove_finds_a_renamed_issuer_by_uid_and_says_so_again_later(capsys, hub, groups):
    hub.add("percy", "issued by oldname (uid 1234) through sudo applctl")
    assert json.loads(run(capsys, "admin", "remove", "--json", "olive")[1]) == {
        "user": "olive", "admin": False, "changed": True, "hub_updated": True, "tokens_revoked": 0,
        "issued_tokens_revoked": 1}
    hub.add("percy", "issued by olive (uid 1234) through sudo applctl")  # one that got past, e.g. a race
    assert run(capsys, "admin", "remove", "olive")[1] == (
        "olive is not a hub admin; revoked 0 API token(s) of theirs and 1 they issued through sudo applctl\n")
    assert run(capsys, "admin", "remove", "olive")[1] == "olive is not a hub admin; nothing changed\n"


def test_admin_remove_with_the_hub_down_says_when_tokens_go(capsys, hub, groups, monkeypatch):
    from appliance.cli.hub_api import HubDown

    def down(self, *a, **k):
        raise HubDown("the hub does not answer on 127.0.0.1:8081")
    monkeypatch.setattr(Hub, "call", down)
    code, out, err = run(capsys, "admin", "remove", "olive")
    assert code == 0 and out == "olive is no longer a hub admin; revoked 0 API token(s) of theirs and 0 they " \
                                "issued through sudo applctl\n"
    assert "olive's tokens, and those they issued, are revoked when the hub next starts" in err


# --- at hub start -----------------------------------------------------------------------------

def test_at_hub_start_tokens_of_issuers_who_lost_sudo_applctl_are_revoked(tmp_path, monkeypatch):
    """Someone removed with gpasswd, deluser of another tool, or while the hub was down."""
    db = orm.new_session_factory(f"sqlite:///{tmp_path}/hub.sqlite")()
    for r in roles.get_default_roles():
        roles.create_role(db, r)
    db.add(orm.OAuthClient(identifier="jupyterhub"))
    percy = orm.User(name="percy")
    db.add(percy)
    db.commit()
    gone = percy.new_api_token(note="issued by olive (uid 1234) through sudo applctl")
    by_admin = percy.new_api_token(note="issued by nadia (uid 1236) through sudo applctl")
    by_sudoer = percy.new_api_token(note="issued by sam (uid 1000) through sudo applctl")
    by_root = percy.new_api_token(note="issued by root through applctl")
    free_text = percy.new_api_token(note="issued by olive (uid 1234) through sudo applctl, said percy")
    member = {("nadia", "jupyterhub-admins"), ("sam", "sudo")}
    monkeypatch.setattr(users, "is_member", lambda name, group: (name, group) in member)

    said = revoke.revoke(db, {"applctl": None})

    assert said == ["olive may no longer run sudo applctl: 1 token(s) they issued revoked"]
    assert orm.APIToken.find(db, gone) is None
    assert all(orm.APIToken.find(db, t) is not None for t in (by_admin, by_sudoer, by_root, free_text))
    assert revoke.revoke(db, {"applctl": None}) == []
