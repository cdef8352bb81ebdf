"""Content links (nbgitpuller): `applctl link` and its checks, [ephemeral]
content_hosts, and what a visitor's server may reach because of them: the
addresses the daemon's resolver unit found, never cloud metadata, pinned in the
server's /etc/hosts."""

import asyncio
import ipaddress
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from appliance import config, content
from appliance.cli import link as link_cmd
from appliance.daemon import units, validate
from appliance.daemon.visitors import Visitors
from appliance.revproxy import setup_record

from .cli_run import run

VISITOR = "visitor-abcdefghij"
UNIT = f"jupyter-{VISITOR}.service"


def cfg(**eph):
    return config.validate({"hub": {"mode": "ephemeral"}, "ephemeral": eph})


def visitor_props(found=None, hosts_file=None, **eph) -> dict:
    spec = validate.check_spawn({"op": "spawn", "user": VISITOR}, cfg(**eph))
    spec.content = found or {}
    spec.hosts_file = hosts_file
    return {k: v.value for k, v in units.properties(UNIT, spec, "/x.env")}


def prefixes(value) -> set[str]:
    return {f"{ipaddress.ip_address(bytes(addr))}/{length}" for _family, addr, length in value}


def test_content_hosts_are_names_or_addresses_normalised():
    got = cfg(content_hosts=["GitHub.com", "gitlab.example.org.", "192.0.2.10", "2001:DB8::1", "github.com"])
    assert got["ephemeral"]["content_hosts"] == ["github.com", "gitlab.example.org", "192.0.2.10", "2001:db8::1"]
    assert config.validate({})["ephemeral"]["content_hosts"] == []


@pytest.mark.parametrize("value", ["github.com", ["*.github.com"], ["https://github.com"], ["git hub.com"],
                                   ["-bad.org"], ["a" * 64 + ".org"], [""], [1], ["github.com/org"],
                                   ["10.0.0.0/8"], ["999.1.1.1"], ["h"] * 33])
def test_a_bad_content_host_is_refused_in_one_line_naming_the_key(value):
    with pytest.raises(config.ConfigError) as e:
        cfg(content_hosts=value)
    assert e.value.key == "ephemeral.content_hosts" and "host names or IP addresses" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_visitor_reaches_the_content_hosts_addresses_and_no_more():
    found = {"git.example.org": ["192.0.2.7", "2001:db8::7"], "192.0.2.9": ["192.0.2.9"]}
    props = visitor_props(found, network="none", content_hosts=["git.example.org", "192.0.2.9"])
    assert prefixes(props["IPAddressAllow"]) == {"127.0.0.1/32", "192.0.2.7/32", "2001:db8::7/128", "192.0.2.9/32"}
    assert prefixes(props["IPAddressDeny"]) == {"0.0.0.0/0", "::/0"}
    assert prefixes(visitor_props(network="loopback")["IPAddressAllow"]) == {"127.0.0.0/8", "::1/128"}


def test_a_resolver_cannot_open_cloud_metadata_or_everything():
    found = {"evil.example": ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::",
                              "224.0.0.1", "fe80::1", "198.51.100.1"]}
    assert units.content_addresses(found) == ["198.51.100.1/32"]


def test_the_daemon_resolves_nothing_with_the_internet_and_always_in_the_other_modes():
    def spec(network):
        return validate.check_spawn({"op": "spawn", "user": VISITOR},
                                    cfg(network=network, content_hosts=["github.com"]))
    assert spec("internet").content_hosts == []
    assert spec("loopback").content_hosts == spec("none").content_hosts == ["github.com"]


def test_the_servers_hosts_file_pins_the_names_it_may_reach(tmp_path):
    etc = tmp_path / "hosts"
    etc.write_text("127.0.0.1 localhost\n")
    found = {"git.example.org": ["192.0.2.7", "169.254.169.254"], "192.0.2.9": ["192.0.2.9"]}
    path = units.write_hosts_file(UNIT, found, etc, tmp_path / "run")
    assert path.read_text() == ("127.0.0.1 localhost\n# [ephemeral] content_hosts, as the appliance's daemon "
                                "resolved them\n192.0.2.7 git.example.org\n")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert units.write_hosts_file(UNIT, {"192.0.2.9": ["192.0.2.9"]}, etc, tmp_path / "run") is None
    props = visitor_props(found, hosts_file=str(path), content_hosts=["git.example.org"])
    assert (str(path), "/etc/hosts", False, 0) in props["BindReadOnlyPaths"]


def test_the_resolver_runs_as_a_transient_uid_and_its_answer_is_read_strictly():
    props = {k: v.value for k, v in units.resolver_properties(["github.com"], units.RESOLVED_DIR / "x.json")}
    (_, argv, _), = props["ExecStart"]
    assert argv[-4:] == ["-m", "appliance.content", "resolve", "github.com"]
    assert props["DynamicUser"] is True and props["CapabilityBoundingSet"] == 0
    assert props["StandardOutputFileToTruncate"] == f"{units.RESOLVED_DIR}/x.json"
    text = json.dumps({"a.org": ["192.0.2.1", "not an address", 7], "other.org": ["192.0.2.2"]})
    assert content.parse_resolved(text, ["a.org", "b.org"]) == {"a.org": ["192.0.2.1"], "b.org": []}
    assert content.parse_resolved("garbage", ["a.org"]) == {"a.org": []}


def test_the_resolver_prints_each_names_addresses(capsys):
    assert content.main(["resolve", "localhost"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert "127.0.0.1" in got["localhost"] or "::1" in got["localhost"]
    assert content.main(["resolve", "not a host"]) == 2


class FakeSystemd:
    def __init__(self, answer: str):
        self.answer, self.started = answer, []

    async def reset_failed(self, unit):
        pass

    async def start_transient(self, unit, props):
        self.started.append(unit)
        out = dict((k, v.value) for k, v in props)["StandardOutputFileToTruncate"]
        with open(out, "w") as f:
            f.write(self.answer)
        return "/job/1"

    async def wait_for(self, unit, done, timeout, job=None):
        return "inactive"


def test_the_daemon_resolves_names_in_a_unit_once_a_minute_and_takes_addresses_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setattr(units, "RESOLVED_DIR", tmp_path)
    sd = FakeSystemd(json.dumps({"git.example.org": ["192.0.2.7"]}))
    v = Visitors(sd)
    got = asyncio.run(v.content_addresses(VISITOR, ["git.example.org", "192.0.2.9"]))
    assert got == {"192.0.2.9": ["192.0.2.9"], "git.example.org": ["192.0.2.7"]}
    assert sd.started == [f"appliance-resolve-jupyter-{VISITOR}.service"] and list(tmp_path.iterdir()) == []
    asyncio.run(v.content_addresses(VISITOR, ["git.example.org", "192.0.2.9"]))
    assert len(sd.started) == 1  # the same names within a minute: the same lookup
    assert asyncio.run(Visitors(FakeSystemd("")).content_addresses(VISITOR, ["git.example.org"])) == \
        {"git.example.org": []}


# --- applctl link ------------------------------------------------------------------

@pytest.fixture
def no_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(setup_record, "STATE", tmp_path / "reverse-proxy.json")
    monkeypatch.setattr(link_cmd, "load_config", lambda: config.validate({}))
    return tmp_path


def test_a_link_opens_the_notebook_in_the_repositorys_folder(capsys, no_setup):
    code, out, err = run(capsys, "link", "--repo", "https://github.com/org/course.git", "--branch", "main",
                         "--open", "notebooks/intro one.ipynb")
    assert code == 0, err
    u = urlsplit(out.strip())
    assert (u.scheme, u.netloc, u.path) == ("http", "HOST:8000", "/hub/user-redirect/git-pull")
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    assert q == {"repo": "https://github.com/org/course.git", "branch": "main", "targetpath": "course",
                 "urlpath": "lab/tree/course/notebooks/intro%20one.ipynb"}
    assert "HOST: replace it" in err


def test_a_link_names_the_host_applctl_proxy_set_up(capsys, no_setup):
    setup_record.STATE.write_text(json.dumps({"site": {
        "kind": "nginx", "server_name": "hub.example.org", "cert": "/etc/ssl/certs/hub.pem",
        "key": "/etc/ssl/private/hub.key", "https_port": 443}}))
    code, out, err = run(capsys, "link", "--repo", "git://git.example.org/course")
    assert code == 0 and out.startswith("https://hub.example.org/hub/user-redirect/git-pull?"), (out, err)
    assert "urlpath=lab/tree/course" in out and "HOST" not in err


@pytest.mark.parametrize("args, says", [
    (["--repo", "ftp://h/r"], "--repo: an https://, http:// or git:// URL"),
    (["--repo", "file:///etc/r"], "--repo: an https://"),
    (["--repo", "https://h/r x"], "no whitespace"),
    (["--repo", "https://h/r\x00"], "no whitespace"),
    (["--repo", "https://user:pw@h/r"], "no user or password"),
    (["--repo", "https:///r"], "with a host"),
    (["--repo", "https://h/.git"], "--repo: the repository URL's last part"),
    (["--repo", "https://h/r", "--branch", "--upload-pack=x"], "--branch: a branch or tag name"),
    (["--repo", "https://h/r", "--branch", "a..b"], "--branch"),
    (["--repo", "https://h/r", "--open", "../etc/passwd"], "--open: a path relative"),
    (["--repo", "https://h/r", "--open", "/etc/passwd"], "--open: a path relative"),
    (["--repo", "https://h/r", "--open", "a/./b"], "--open"),
    (["--repo", "https://h/r", "--open", "a\nb"], "--open"),
])
def test_every_argument_is_checked_in_one_line_without_a_traceback(capsys, no_setup, args, says):
    code, out, err = run(capsys, "link", *args)
    assert code != 0 and out == "" and says in err, (code, out, err)
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_link_says_what_visitors_cannot_reach_and_when_git_is_missing(capsys, no_setup, monkeypatch):
    monkeypatch.setattr(link_cmd, "load_config", lambda: cfg(content_hosts=["github.com"]))
    monkeypatch.setattr(link_cmd, "git_missing", lambda: True)
    code, out, err = run(capsys, "link", "--repo", "https://gitlab.com/org/course")
    assert code == 0 and "visitors' servers cannot reach gitlab.com" in err and "install git" in err
    code, out, err = run(capsys, "link", "--repo", "https://github.com/org/course", "--json")
    got = json.loads(out)
    assert got["visitors_reach_repo"] is True and got["git_installed"] is False


# --- what the server itself accepts from a link (appliance/singleuser.py) -------------

@pytest.mark.parametrize("repo, targetpath, says", [
    ("https://h/org/course.git", None, None),
    ("git://h/course", "course", None),
    ("https://h/course", "work/course", None),
    ("https://h/course", ".ipython/profile_default/startup", "targetpath must be a folder in your home"),
    ("https://h/course", ".local/lib/python3.13/site-packages", "no hidden"),
    ("https://h/course", "/var/lib/x", "no leading /"),
    ("https://h/course", "../x", "no .."),
    ("https://h/course", "a/../../x", "no .."),
    ("file:///home/ann/repo", None, "repo must be an https://"),
    ("ext::sh -c touch% /tmp/x", None, "repo must be"),
    ("", None, "repo must be"),
])
def test_the_server_refuses_links_that_would_clone_outside_a_visible_folder_of_the_home(repo, targetpath, says):
    from appliance.singleuser import content_link_refusal

    why = content_link_refusal(repo, targetpath)
    assert (why is None) if says is None else (says in why), why


def test_the_server_says_to_install_git_when_it_is_missing():
    from appliance.singleuser import content_link_refusal

    assert "install git" in content_link_refusal("https://h/course", None, git_found=False)


def test_doctor_says_to_install_git_when_visitors_links_are_set_up_and_git_is_missing(monkeypatch):
    from appliance.cli import doctor

    assert doctor.check_content_links(config.validate({})) is None  # no content hosts: nothing to say
    monkeypatch.setattr(link_cmd, "git_missing", lambda: True)
    c = doctor.check_content_links(cfg(content_hosts=["github.com"]))
    assert not c.ok and "git is not installed" in c.detail and "apt install git" in c.fix
    monkeypatch.setattr(link_cmd, "git_missing", lambda: False)
    assert doctor.check_content_links(cfg(content_hosts=["github.com"])).ok
