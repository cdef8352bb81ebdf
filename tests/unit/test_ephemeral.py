"""Ephemeral mode's shared rules: visitor names, the daemon's reading of the mode,
a visitor's unit, the configuration keys and the site password's hash."""

import ipaddress
import os

import bcrypt
import pytest

from appliance import config, ephemeral, passwords, protocol, users
from appliance.daemon import units, validate


def cfg(mode="ephemeral", **eph):
    return config.validate({"hub": {"mode": mode}, "ephemeral": eph})


def test_visitor_names_are_random_valid_user_names_and_nothing_else_is_one():
    names = {ephemeral.new_name() for _ in range(200)}
    assert len(names) == 200
    assert all(ephemeral.is_visitor(n) and users.check_name(n) == n for n in names)
    for not_one in ("alice", "visitor-", "visitor-ABCDEFGHIJ", "visitor-abcdefghijk", "visitor-abc/def/gh", 7, None):
        assert not ephemeral.is_visitor(not_one)
    # The cleaner is never taken for a server, nor the reverse.
    name = ephemeral.new_name()
    assert users.user_of_unit(ephemeral.cleaner_unit(name)) is None
    assert users.user_of_unit(users.unit_name(name)) == name


def test_the_daemon_starts_visitors_only_in_ephemeral_mode_and_accounts_only_in_accounts_mode():
    spec = validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij",
                           "env": {"JUPYTERHUB_USER": "visitor-abcdefghij"}}, cfg())
    assert spec.visitor and spec.home == "/var/lib/jupyter-visitor-abcdefghij" and spec.uid == -1
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": "alice"}, cfg())
    assert e.value.code == "wrong_mode" and "only visitors get a server" in str(e.value)
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg("accounts"))
    assert e.value.code == "wrong_mode" and "accounts mode" in str(e.value)
    with pytest.raises(protocol.RequestError) as e:  # a visitor cannot speak for someone else
        validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij", "env": {"JUPYTERHUB_USER": "alice"}}, cfg())
    assert e.value.field == "env"
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij", "profile": "big"}, cfg())
    assert e.value.field == "profile"


def test_a_visitor_name_that_is_an_account_is_refused(monkeypatch):
    monkeypatch.setattr(validate.pwd, "getpwnam", lambda n: object())
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg())
    assert e.value.code == "invalid_user" and "is an account" in str(e.value)


def test_a_missing_shared_folder_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg(shared_dir=str(tmp_path / "nope")))
    assert "ephemeral.shared_dir" in str(e.value)
    spec = validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg(shared_dir=str(tmp_path)))
    assert spec.shared_dir == str(tmp_path)


def test_a_visitors_unit_is_a_transient_uid_with_a_private_home_and_the_shared_folder_read_only(tmp_path):
    spec = validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg(shared_dir=str(tmp_path)))
    props = dict((k, v.value) for k, v in units.properties("jupyter-visitor-abcdefghij.service", spec,
                                                            tmp_path / "env"))
    assert props["DynamicUser"] is True and props["User"] == "visitor-abcdefghij" and "Group" not in props
    assert props["StateDirectory"] == ["jupyter-visitor-abcdefghij"] and props["StateDirectoryMode"] == 0o700
    assert props["WorkingDirectory"] == spec.home
    assert props["ProtectHome"] == "tmpfs" and props["ProtectProc"] == "invisible" and props["ProtectSystem"] == "strict"
    assert props["BindReadOnlyPaths"] == [(str(tmp_path), spec.home + "/shared", False, units.MS_REC)]
    env = units.server_env(spec)
    assert env["HOME"] == spec.home and env["USER"] == env["LOGNAME"] == "visitor-abcdefghij"
    account = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice")
    props = dict((k, v.value) for k, v in units.properties("jupyter-alice.service", account, tmp_path / "env"))
    assert "DynamicUser" not in props and props["Group"] == "1000"


def visitor_props(**eph) -> dict:
    spec = validate.check_spawn({"op": "spawn", "user": "visitor-abcdefghij"}, cfg(**eph))
    return {k: v.value for k, v in units.properties("jupyter-visitor-abcdefghij.service", spec, "/x.env")}


def test_a_visitor_makes_no_namespace_gets_the_calls_of_a_service_sees_no_data_and_dumps_no_core():
    props = visitor_props()
    assert props["RestrictNamespaces"] == 0  # the set of namespace types it may make: none
    assert props["SystemCallFilter"] == (True, ["@system-service"]) and props["SystemCallErrorNumber"] == 1
    assert props["CapabilityBoundingSet"] == 0
    assert props["InaccessiblePaths"] == ["-/srv", "-/opt", "-/mnt", "-/media", "-/data"]
    assert "TemporaryFileSystem" not in props
    assert props["LimitCORE"] == props["LimitCORESoft"] == 0
    assert "AF_VSOCK" not in props["RestrictAddressFamilies"][1] and props["RestrictAddressFamilies"][0] is True


def test_visible_paths_are_shown_read_only_if_only_root_can_swap_what_is_above_them(tmp_path):
    assert config.validate({"ephemeral": {"visible_paths": ["/opt/cuda", "/srv/data"]}})["ephemeral"][
        "visible_paths"] == ["/opt/cuda", "/srv/data"]
    assert ("ephemeral", "visible_paths") in config.root_only_keys()
    spec = validate.SpawnSpec(user="visitor-abcdefghij", uid=-1, gid=-1, home="/var/lib/jupyter-visitor-abcdefghij",
                        visitor=True, shared_dir="/srv/workshop", visible_paths=["/opt/cuda"])
    props = {k: v.value for k, v in units.properties("jupyter-visitor-abcdefghij.service", spec, "/x.env")}
    assert props["BindReadOnlyPaths"] == [("/opt/cuda", "/opt/cuda", False, units.MS_REC),
                                          ("/srv/workshop", spec.home + "/shared", False, units.MS_REC)]
    # /opt is an empty tmpfs to pass through to /opt/cuda; the others stay inaccessible
    assert props["TemporaryFileSystem"] == [("/opt", "ro")]
    assert props["InaccessiblePaths"] == ["-/srv", "-/mnt", "-/media", "-/data"]
    (tmp_path / "root" / "data").mkdir(parents=True)
    validate.check_visible_path(str(tmp_path / "root" / "data"))  # root's all the way down (tests run as root)
    (tmp_path / "open" / "data").mkdir(parents=True)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(protocol.RequestError, match=r"open \(for .*\) is writable by others"):
        validate.check_visible_path(str(tmp_path / "open" / "data"))
    with pytest.raises(protocol.RequestError, match="No such file"):
        validate.check_visible_path(str(tmp_path / "none"))


def prefixes(value) -> set[str]:
    return {f"{ipaddress.ip_address(bytes(addr))}/{length}" for _family, addr, length in value}


@pytest.mark.parametrize("network, allow", [
    ("none", {"127.0.0.1/32"}),
    ("loopback", {"127.0.0.0/8", "::1/128"}),
])
def test_a_visitors_network_is_loopback_by_default_and_never_cloud_metadata(network, allow):
    props = visitor_props(network=network)
    assert prefixes(props["IPAddressAllow"]) == allow
    assert prefixes(props["IPAddressDeny"]) == {"0.0.0.0/0", "::/0"}  # so also the metadata addresses
    assert visitor_props()["IPAddressAllow"] == visitor_props(network="loopback")["IPAddressAllow"]


def test_a_visitor_with_the_internet_still_has_no_cloud_metadata():
    props = visitor_props(network="internet")
    assert "IPAddressAllow" not in props
    assert prefixes(props["IPAddressDeny"]) == {"169.254.0.0/16", "fd00:ec2::254/128", "100.100.100.200/32"}


def test_every_network_the_configuration_accepts_has_its_addresses():
    assert set(units.VISITOR_NETWORKS) == set(ephemeral.NETWORKS)


def test_the_cleaner_deletes_exactly_the_visitors_home_and_its_link():
    props = dict((k, v.value) for k, v in units.cleaner_properties("visitor-abcdefghij"))
    (path, argv, _), = props["ExecStart"]
    assert argv == ["/usr/bin/rm", "-rf", "--one-file-system", "--", "/var/lib/private/jupyter-visitor-abcdefghij",
                    "/var/lib/jupyter-visitor-abcdefghij"]
    with pytest.raises(ValueError):
        units.cleaner_properties("../../etc")


def test_leftover_homes_are_found_by_name(tmp_path):
    for d in ("jupyter-visitor-abcdefghij", "jupyter-alice", "jupyter-visitor-../x", "other"):
        (tmp_path / d.replace("/", "_")).mkdir()
    assert ephemeral.leftover_homes(tmp_path) == ["visitor-abcdefghij"]
    assert ephemeral.leftover_homes(tmp_path / "none") == []


@pytest.mark.parametrize("key, value, says", [
    ("hub.mode", "workshop", '"accounts", "ephemeral"'),
    ("ephemeral.password_file", "relative/file", "absolute path"),
    ("ephemeral.shared_dir", "/", "absolute path"),
    ("ephemeral.shared_dir", "/srv/../etc", "absolute path"),
    ("ephemeral.max_visitors", 0, "from 1 to 10000"),
    ("ephemeral.warm_pool", -1, "from 0 to 100"),
    ("ephemeral.mem_limit", "lots", "a size"),
    ("ephemeral.idle_timeout", 5, "from 30"),
    ("ephemeral.network", "all", '"none", "loopback", "internet"'),
    ("ephemeral.network", True, '"none", "loopback", "internet"'),
    ("ephemeral.visible_paths", "/opt/cuda", "a list of absolute paths of folders below /srv, /opt"),
    ("ephemeral.visible_paths", ["/srv"], "below /srv, /opt, /mnt, /media, /data"),
    ("ephemeral.visible_paths", ["/usr/share"], "below /srv"),
    ("ephemeral.visible_paths", ["opt/cuda"], "below /srv"),
    ("ephemeral.visible_paths", ["/opt/../etc"], "below /srv"),
])
def test_bad_values_name_the_key(key, value, says):
    section, name = key.split(".")
    with pytest.raises(config.ConfigError) as e:
        config.validate({section: {name: value}})
    assert e.value.key == key and says in str(e.value)


def test_defaults_are_short_for_a_workshop():
    eph = config.validate({})["ephemeral"]
    assert (eph["idle_timeout"], eph["max_age"], eph["gpus"], eph["warm_pool"]) == (900, 14400, 0, 2)


def test_the_site_password_hash_is_checked_as_the_hub_checks_it(tmp_path):
    from appliance.hub import visitors

    f = tmp_path / "pw"
    f.write_text(passwords.hash_password("a long passphrase") + "\n")
    hashed = visitors.read_hash(str(f))
    assert passwords.matches("a long passphrase", hashed)
    assert not passwords.matches("a long passphrasE", hashed)
    assert not passwords.matches("", hashed)
    assert bcrypt.checkpw(b"a long passphrase", b"$2b$" + hashed[4:].encode())
    f.write_text("not a hash\n")
    with pytest.raises(ValueError, match="applctl ephemeral password set"):
        visitors.read_hash(str(f))



def test_forget_homes_deletes_every_visitors_home_and_follows_no_link(tmp_path, monkeypatch):
    """What the package's removal runs once every server has stopped."""
    private, outside = tmp_path / "private", tmp_path / "outside"
    name = "visitor-" + "a" * 10
    (private / f"jupyter-{name}" / "work").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("kept")
    (private / f"jupyter-{name}" / "work" / "link").symlink_to(outside)
    (tmp_path / f"jupyter-{name}").symlink_to(private / f"jupyter-{name}")
    (private / "jupyter-alice").mkdir()  # not a visitor's
    found = ephemeral.leftover_homes
    monkeypatch.setattr(ephemeral, "STATE_ROOT", tmp_path)
    monkeypatch.setattr(ephemeral, "PRIVATE_ROOT", private)
    monkeypatch.setattr(ephemeral, "leftover_homes", lambda: found(private))
    assert ephemeral.main(["forget-homes"]) == 0
    assert sorted(os.listdir(private)) == ["jupyter-alice"]
    assert not os.path.lexists(tmp_path / f"jupyter-{name}")
    assert (outside / "keep").read_text() == "kept"
    assert ephemeral.main(["forget-homes"]) == 0  # nothing left: nothing to do
    assert ephemeral.main([]) == 2
