"""Who sudo and polkit make root in all but name (appliance/root_grants.py)."""

from __future__ import annotations

import json
import os

import pytest

from appliance import root_grants as rg
from appliance import root_verdicts as rv

RULES = """
// subject.user == "commented" is not a grant
/* polkit.addAdminRule(function(action, subject) { return ["unix-user:blockcomment"]; }); */
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.systemd1.manage-units" && subject.user == "alice") {
        return polkit.Result.YES;
    }
    if ('bob' === subject.user || subject.isInGroup("ops")) { return polkit.Result.YES; }
    if (subject.isInGroup( 'netdev' )) { return polkit.Result.AUTH_ADMIN; }
});
polkit.addAdminRule(function(action, subject) { return ["unix-group:wheel", "unix-user:carol"]; });
"""

PKLA = """[Let ops manage]
# Identity=unix-user:commented
Identity=unix-user:dave;unix-group:storage
Action=org.freedesktop.udisks2.*
ResultActive=yes
"""


def test_rules_files_name_users_and_groups_but_not_in_comments():
    named_users, named_groups = rg.parse_rules(RULES)
    assert named_users == {"alice", "bob", "carol"}
    assert named_groups == {"ops", "netdev", "wheel"}


def test_pkla_identities():
    assert rg.parse_pkla(PKLA) == ({"dave"}, {"storage"})
    assert rg.parse_pkla("Identity=unix-user:*\n") == ({"*"}, set())


def test_polkit_names_reads_both_kinds_and_names_what_it_cannot_read(tmp_path):
    rules, pkla = tmp_path / "rules.d", tmp_path / "localauthority"
    (pkla / "50-local.d").mkdir(parents=True)
    rules.mkdir()
    (rules / "10-site.rules").write_text(RULES)
    (rules / "README").write_text('subject.user == "ignored"')  # not a .rules file
    (pkla / "50-local.d" / "ops.pkla").write_text(PKLA)
    found = rg.polkit_names((rules, tmp_path / "missing"), (pkla,))
    assert found.users["alice"] == str(rules / "10-site.rules")
    assert found.users["dave"] == str(pkla / "50-local.d" / "ops.pkla")
    assert "ignored" not in found.users and found.unread == []
    assert rg.polkit_reasons("erin", ["users", "storage"], found) == \
        [f"polkit rule {pkla / '50-local.d' / 'ops.pkla'} names its group storage"]
    assert rg.polkit_reasons("alice", ["alice"], found) == [f"polkit rule {rules / '10-site.rules'} names it"]
    assert rg.polkit_reasons("frank", ["frank"], found) == []


NOT_ALLOWED = "User bob is not allowed to run sudo on vm.\n"
ALLOWED = """Matching Defaults entries for bob on vm:
    env_reset, secure_path=/usr/sbin\\:/usr/bin

User bob may run the following commands on vm:
    (root) /usr/bin/applctl
    (root) NOPASSWD: /usr/bin/true
"""


def test_sudo_listing():
    assert rg.parse_sudo_list("bob", 0, NOT_ALLOWED) == []
    assert rg.parse_sudo_list("bob", 0, ALLOWED) == ["(root) NOPASSWD: /usr/bin/true"]
    # The appliance's own rule (sudo applctl for jupyterhub-admins) is no grant.
    only_own = ALLOWED.replace("    (root) NOPASSWD: /usr/bin/true\n", "")
    assert rg.parse_sudo_list("bob", 0, only_own) == []
    # applctl as another user, or with arguments, is not the appliance's rule.
    assert rg.parse_sudo_list("bob", 0, only_own.replace("(root)", "(ALL : ALL)")) == ["(ALL : ALL) /usr/bin/applctl"]
    # What cannot be read is no "nothing".
    assert rg.parse_sudo_list("bob", 1, "sudo: unknown user bob\n") is None
    assert rg.parse_sudo_list("bob", 0, "Benutzer bob darf ...\n") is None
    assert rg.parse_sudo_list("bob", 0, ALLOWED.replace("User bob", "User eve")) is None


def test_verdicts_are_roots_file_and_nothing_else_is_believed(tmp_path):
    path = tmp_path / "run" / "v.json"
    verdict = {"checked": ["a"], "granted": {"a": ["sudo grants it (root) ALL"]}, "unread": []}
    rv.write_verdicts(verdict, path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert rv.read_verdicts(path) == verdict
    path.chmod(0o666)
    assert rv.read_verdicts(path) is None  # others could have written it
    path.unlink()
    link_to = tmp_path / "elsewhere.json"
    link_to.write_text(json.dumps(verdict))
    path.symlink_to(link_to)
    assert rv.read_verdicts(path) is None
    path.unlink()
    path.write_text("[]")
    assert rv.read_verdicts(path) is None


def test_the_daemon_goes_by_roots_verdict_and_runs_the_check_for_a_name_not_judged(tmp_path, monkeypatch):
    from .daemon_fakes import USER, DaemonThread, FakeManager, patch_users

    patch_users(monkeypatch, tmp_path)
    monkeypatch.setattr(rv, "read_verdicts", READ)  # the real reader, not patch_users' "everyone is cleared"
    path = tmp_path / "v" / "verdicts.json"
    runs = []

    def check_unit(unit):  # the oneshot, as root would run it: judges USER
        runs.append(unit)
        rv.write_verdicts({"checked": [USER], "granted": {USER: ["sudo grants it (root) ALL"]}}, path)

    with DaemonThread(tmp_path, FakeManager(on_start_unit=check_unit), verdicts=path) as d:
        reply = d.request({"op": "spawn", "user": USER})
        assert runs == [rv.UNIT]  # no verdict yet: the check ran, then was believed
        assert reply["error"]["code"] == "privileged_user" and "sudo grants it (root) ALL" in reply["error"]["message"]
        rv.write_verdicts({"checked": [USER], "granted": {}}, path)
        assert d.request({"op": "spawn", "user": USER})["ok"] is True
        assert runs == [rv.UNIT]  # judged already: not run again
        d.systemd.on_start_unit = lambda unit: None  # a check that fails to write anything
        path.unlink()
        reply = d.request({"op": "spawn", "user": USER})
        assert reply["error"]["code"] == "root_check", reply


READ = rv.read_verdicts


def test_a_change_while_judging_is_noticed(tmp_path):
    d = tmp_path / "sudoers.d"
    d.mkdir()
    (d / "site").write_text("")
    import time
    began = time.time() + 1  # as if the run began after these were written
    assert not rg.changed_since(began, (d,))
    (d / "site").write_text("x ALL=(ALL) ALL\n")
    os.utime(d / "site", (began + 1, began + 1))
    assert rg.changed_since(began, (d,))


def test_doctor_names_root_equivalent_accounts_and_a_list_that_lost_default_groups(monkeypatch):
    from appliance import config, privilege
    from appliance.cli import doctor

    written = []
    monkeypatch.setattr(rv, "write_verdicts", written.append)
    monkeypatch.setattr(privilege, "privileged_groups", lambda n, groups: ["docker"] if n == "dora" else [])
    monkeypatch.setattr(rg, "judge_all", lambda: {"checked": ["ann", "dora", "sam"], "unread": [],
                                                  "granted": {"sam": ["sudo grants it (root) /usr/bin/true"]}})
    c = doctor.check_root_equivalent(config.validate({}))
    assert not c.ok and written, c
    assert "dora is root in all but name (a member of docker)" in c.detail
    assert "sam is root in all but name (sudo grants it (root) /usr/bin/true)" in c.detail and "ann" not in c.detail
    monkeypatch.setattr(rg, "judge_all", lambda: {"checked": ["ann"], "unread": [], "granted": {}})
    assert doctor.check_root_equivalent(config.validate({})).ok
    # A list set before incus-admin joined the default: said, with the command that adds it.
    c = doctor.check_root_equivalent(config.validate({"daemon": {"privileged_groups": ["sudo", "docker"]}}))
    assert c.ok and c.warning and "incus-admin" in c.detail and "config set daemon.privileged_groups" in c.fix


def test_the_daemon_answers_while_its_start_check_runs_and_spawns_wait_for_that_check(tmp_path, monkeypatch):
    """The check started with the daemon may take minutes (sudo -l -U for every
    member): GPUs and servers are answered meanwhile, and a spawn is judged only by
    a verdict from after it, or told to try again."""
    import concurrent.futures

    from appliance.daemon import spawns

    from .daemon_fakes import USER, DaemonThread, FakeManager, patch_users

    patch_users(monkeypatch, tmp_path)
    monkeypatch.setattr(rv, "read_verdicts", READ)
    path = tmp_path / "v" / "verdicts.json"
    rv.write_verdicts({"checked": [USER], "granted": {}}, path)  # from before a grant made while it was down
    with DaemonThread(tmp_path, FakeManager(), verdicts=path) as d:
        def running_check():
            d.daemon.spawns._judged_at_start = d.loop.create_future()
        d.loop.call_soon_threadsafe(running_check)
        assert d.request({"op": "gpus"})["ok"] is True
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(d.request, {"op": "spawn", "user": USER})
            with pytest.raises(concurrent.futures.TimeoutError):
                pending.result(timeout=1)  # waits for the check
            rv.write_verdicts({"checked": [USER], "granted": {USER: ["sudo grants it (root) ALL"]}}, path)
            d.loop.call_soon_threadsafe(d.daemon.spawns._judged_at_start.set_result, None)
            assert pending.result(timeout=10)["error"]["code"] == "privileged_user"  # the fresh verdict
        monkeypatch.setattr(spawns, "START_TIMEOUT", 0.2)
        d.loop.call_soon_threadsafe(running_check)
        reply = d.request({"op": "spawn", "user": USER})
        assert reply["error"]["code"] == "root_check" and "try again" in reply["error"]["message"], reply
