"""[oidc] accounts = "create": the daemon's checks of a name the hub sends, its
refusals, and the useradd it runs (appliance/daemon/accounts.py). The booted tier
(tests/system/test_9_sso_accounts.py) runs the real useradd."""

from __future__ import annotations

import asyncio
import grp
import pwd

import pytest

from appliance import config, protocol
from appliance.daemon import accounts
from appliance.protocol import RequestError

from .daemon_fakes import DaemonThread

CREATE = {"auth": {"type": "oidc"}, "oidc": {"issuer": "https://login.example.org", "client_id": "hub",
                                             "accounts": "create"}}


def refusal(name) -> RequestError:
    with pytest.raises(RequestError) as e:
        accounts.normalise(name)
    return e.value


@pytest.mark.parametrize("name, says", [
    ("root", "keeps for itself"), ("jupyterhub", "keeps for itself"), ("jupyterhub-admins", "keeps for itself"),
    ("systemd-network", "keeps for itself"), ("visitor-abcdefghij", "keeps for itself"), ("sudo", "keeps for itself"),
    ("../x", "cannot be an account name"), ("a b", "cannot be an account name"), ("", "cannot be an account name"),
    ("-rf", "cannot be an account name"), ("_apt", "cannot be an account name"), ("9lives", "cannot be an account name"),
    ("a" * 33, "cannot be an account name"), ("alice@example.org", "cannot be an account name"),
    ("first.last", "cannot be an account name"), ("a\nb", "cannot be an account name"),
    ("\u212aate", "cannot be an account name"),  # the Kelvin sign, which Python lowercases to "k"
    ("\u0430lice", "cannot be an account name"),  # a Cyrillic a
    ("ａlice", "cannot be an account name"),  # fullwidth
    (None, "cannot be an account name"), (["alice"], "cannot be an account name"), (7, "cannot be an account name"),
])
def test_a_hostile_or_reserved_name_is_refused_in_one_line(name, says):
    e = refusal(name)
    assert e.code == "account" and e.field == "user" and says in str(e) and "\n" not in str(e), e
    assert e.code in protocol.ERROR_CODES


def test_a_name_is_lowercased_and_kept_to_32_characters():
    assert accounts.normalise("Rosa") == "rosa"
    assert accounts.normalise("r" * 32) == "r" * 32
    assert accounts.normalise("rosa_m-2") == "rosa_m-2"


def ensure(req: dict, cfg: dict | config.Config | None = None, systemd=None) -> dict:
    cfg = cfg if isinstance(cfg, config.Config) else config.validate(CREATE if cfg is None else cfg)
    acc = accounts.Accounts(cfg, systemd or RefusingSystemd())
    return asyncio.run(acc.ensure(req))


class RefusingSystemd:
    """A daemon that got this far without deciding to make an account has a bug."""

    async def reset_failed(self, unit):
        raise AssertionError("useradd was to run")

    start_transient = wait_for = reset_failed


@pytest.mark.parametrize("cfg", [
    {},  # PAM
    {**CREATE, "oidc": {**CREATE["oidc"], "accounts": "existing"}},
    {"auth": {"type": "pam"}, "oidc": {"accounts": "create"}},
    {**CREATE, "hub": {"mode": "ephemeral"}},
])
def test_the_daemon_makes_no_account_unless_its_own_config_says_create(cfg):
    with pytest.raises(RequestError) as e:
        ensure({"op": "account", "user": "rosa"}, cfg)
    assert e.value.code == "config" and 'accounts = "create"' in str(e.value)


def test_an_existing_account_it_did_not_make_is_never_taken_over():
    name = next(p.pw_name for p in pwd.getpwall() if p.pw_name not in accounts.RESERVED
                and accounts.NAME_RE.fullmatch(p.pw_name) and not p.pw_name.startswith(accounts.RESERVED_PREFIXES))
    with pytest.raises(RequestError) as e:
        ensure({"op": "account", "user": name})
    assert e.value.code == "account" and "single sign-on did not make" in str(e.value)


def test_a_name_a_group_has_is_refused(monkeypatch):
    monkeypatch.setattr(grp, "getgrnam", lambda n: grp.struct_group((n, "x", 5000, [])))
    with pytest.raises(RequestError) as e:
        ensure({"op": "account", "user": "nosuchpersonhere"})
    assert "already a group on this machine" in str(e.value)


def test_a_full_range_is_refused_in_words(monkeypatch):
    cfg = config.validate({**CREATE, "oidc": {**CREATE["oidc"], "uid_min": 70000, "uid_max": 70001}})
    cfg["oidc"]["group"] = grp.getgrgid(0).gr_name  # an existing group stands in for jupyterhub-sso
    taken = [pwd.struct_passwd((f"sso{u}", "x", u, 4, "", "/home/x", "/usr/sbin/nologin")) for u in (70000, 70001)]
    monkeypatch.setattr(pwd, "getpwall", lambda: taken)
    with pytest.raises(RequestError) as e:
        ensure({"op": "account", "user": "nosuchpersonhere"}, cfg)
    assert e.value.code == "account" and "the 2 uids of single sign-on accounts" in str(e.value)
    assert "all taken" in str(e.value)


class UseraddSystemd:
    """Runs nothing: records the unit, and makes the account appear as useradd would."""

    def __init__(self, monkeypatch, gid: int):
        self.units, self.monkeypatch, self.gid = [], monkeypatch, gid

    async def reset_failed(self, unit):
        pass

    async def start_transient(self, unit, props):
        self.units.append((unit, dict(props)))
        argv = dict(props)["ExecStart"].value[0][1]
        made = pwd.struct_passwd((argv[-1], "x", 70000, self.gid, "", f"/home/{argv[-1]}", "/usr/sbin/nologin"))
        real = pwd.getpwnam
        self.monkeypatch.setattr(pwd, "getpwnam", lambda n: made if n == argv[-1] else real(n))
        return "/job/1"

    async def wait_for(self, unit, done, timeout, job):
        return "inactive"


def test_a_new_name_gets_useradd_in_the_range_with_the_group_and_no_login(monkeypatch):
    group = grp.getgrgid(0).gr_name
    cfg = config.validate(CREATE)
    cfg["oidc"]["group"] = group  # any existing group stands in for jupyterhub-sso
    systemd = UseraddSystemd(monkeypatch, 0)
    assert ensure({"op": "account", "user": "Nosuchpersonhere"}, cfg, systemd) == \
        {"ok": True, "user": "nosuchpersonhere", "created": True}
    (unit, props), = systemd.units
    argv = props["ExecStart"].value[0][1]
    assert unit == accounts.UNIT and argv[0] == accounts.USERADD and argv[-2:] == ["--", "nosuchpersonhere"]
    for flag in ("--shell /usr/sbin/nologin", f"--gid {group}", "--groups jupyterhub-users", "-K UID_MIN=70000",
                 "-K UID_MAX=70999", "-K HOME_MODE=0700", "-K SUB_UID_COUNT=0", "--create-home"):
        assert flag in " ".join(argv), flag
    assert not any(a.startswith(("-p", "--password")) for a in argv)  # useradd leaves it locked
    # the second login finds it, and runs nothing
    assert ensure({"op": "account", "user": "nosuchpersonhere"}, cfg) == \
        {"ok": True, "user": "nosuchpersonhere", "created": False}


def test_over_the_socket_only_user_is_accepted_and_pam_refuses(tmp_path):
    with DaemonThread(tmp_path) as d:
        r = d.request({"op": "account", "user": "rosa", "uid": 0})
        assert r["error"]["code"] == "invalid" and "accepted: op, user" in r["error"]["message"]
        r = d.request({"op": "account", "user": "rosa"})
        assert r["error"]["code"] == "config", r


# --- the provider's groups and the GPU quota ----------------------------------------------

def test_provider_groups_count_for_the_quota_under_single_sign_on_only(monkeypatch, tmp_path):
    from appliance.daemon import validate

    from .daemon_fakes import USER, patch_users
    patch_users(monkeypatch, tmp_path)
    gpu = {"quota": 0, "quota_groups": {"gpu": 2}}
    sso = config.validate({**CREATE, "daemon": {"min_uid": 1}, "gpu": gpu})
    req = {"op": "spawn", "user": USER, "gpus": 2, "provider_groups": ["gpu", "/staff/other"]}
    assert validate.check_spawn(req, sso).gpus == 2
    for other in ({"provider_groups": ["lab"]}, {}):
        with pytest.raises(RequestError) as e:
            validate.check_spawn({**req, **other} if other else {k: v for k, v in req.items()
                                                                  if k != "provider_groups"}, sso)
        assert e.value.code == "quota"
    with pytest.raises(RequestError) as e:  # a PAM hub cannot claim a group
        validate.check_spawn(req, config.validate({"daemon": {"min_uid": 1}, "gpu": gpu}))
    assert e.value.code == "config" and e.value.field == "provider_groups"
    for bad in ("gpu", ["x" * 257], ["a\nb"], [""], [3], ["g"] * 257):
        with pytest.raises(RequestError) as e:
            validate.check_spawn({**req, "provider_groups": bad}, sso)
        assert e.value.code == "invalid" and e.value.field == "provider_groups", bad
