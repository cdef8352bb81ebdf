"""[spawner] environment (issue 26, item 2): names that load code or configuration into
every server, or redirect what it fetches, are refused by the configuration check
and, again, by the root daemon for a spawn request, even one appliance.toml allows."""

from __future__ import annotations

import pytest

from appliance import config, protocol, users
from appliance.daemon import validate

from .cli_run import run
from .test_applctl_cli import as_root, cfgfile  # noqa: F401 (fixtures)

REFUSED = [
    "PYTHONPYCACHEPREFIX", "PYTHONWARNINGS", "PYTHONBREAKPOINT",
    "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_DATA_HOME", "XDG_DATA_DIRS", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME",
    "XDG_ANYTHING_ELSE",
    "SHELLOPTS", "PS4", "PROMPT_COMMAND", "GCONV_PATH",
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY",
    "ftp_proxy", "Https_Proxy", "socks_proxy",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CONFIG_FILE", "PIP_FIND_LINKS", "PIP_ANYTHING",
    # refused before, still refused
    "LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "JUPYTER_CONFIG_DIR",
]
ACCEPTED = ["HF_HOME", "OMP_NUM_THREADS", "PROXY", "PROXY_HOST", "MY_PROXY_HOST", "PIPENV_VENV_IN_PROJECT", "PS1",
            "XDG", "PYTHONUNBUFFERED", "TORCH_HOME"]


@pytest.mark.parametrize("name", REFUSED)
def test_the_configuration_refuses_the_name(name):
    with pytest.raises(config.ConfigError) as e:
        config.validate({"spawner": {"environment": {name: "x"}}}, "/etc/jupyterhub/appliance.toml")
    msg = str(e.value)
    assert e.value.key == f"spawner.environment.{name}"
    assert msg.startswith(f"/etc/jupyterhub/appliance.toml: spawner.environment.{name} = 'x' is not accepted: "
                          f"a name that loads no code or configuration and sets no proxy ({name}: "), msg
    assert "XDG_*, PIP_*, *_proxy" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ACCEPTED)
def test_harmless_names_are_still_accepted(name):
    assert config.validate({"spawner": {"environment": {name: "x"}}})["spawner"]["environment"] == {name: "x"}


@pytest.mark.parametrize("name, why", [
    ("PYTHONWARNINGS", "Python loads code it names"),
    ("PS4", "shells run code it names"),
    ("GCONV_PATH", "the C library loads shared objects it names"),
    ("XDG_CONFIG_HOME", "read their configuration where it says"),
    ("PIP_INDEX_URL", "pip takes it as configuration"),
    ("HTTPS_PROXY", "web traffic through a proxy"),
])
def test_the_refusal_says_what_the_name_would_do(name, why):
    with pytest.raises(config.ConfigError, match=why):
        config.validate({"spawner": {"environment": {name: "x"}}})


@pytest.mark.parametrize("name", ["http_proxy", "XDG_CONFIG_HOME", "PIP_INDEX_URL", "PS4"])
def test_applctl_config_set_refuses_in_one_line_and_writes_nothing(capsys, as_root, cfgfile, name):
    before = cfgfile.read_text()
    code, out, err = run(capsys, "config", "set", f"spawner.environment.{name}", "http://evil.example:3128")
    assert code == 1 and out == ""
    assert err.startswith("applctl: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"spawner.environment.{name} = " in err and "a name that loads no code or configuration" in err
    assert "the file is unchanged" in err
    assert cfgfile.read_text() == before


def _cfg_listing(name: str) -> config.Config:
    """A configuration whose [spawner] environment lists `name` as if the check had let
    it through (an older release's file): what the daemon must still refuse."""
    cfg = config.validate({"daemon": {"min_uid": 1}, "spawner": {"environment": {"HF_HOME": "/d"}}})
    cfg["spawner"]["environment"] = {"HF_HOME": "/d", name: "x"}
    return cfg


@pytest.mark.parametrize("name", REFUSED)
def test_the_daemon_refuses_the_name_even_if_appliance_toml_lists_it(monkeypatch, name):
    monkeypatch.setattr(users, "is_member", lambda n, g: True)
    req = {"op": "spawn", "user": "daemon", "env": {"JUPYTERHUB_USER": "daemon", name: "x"}}
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req, _cfg_listing(name))
    assert e.value.code == "invalid" and e.value.field == "env"
    assert str(e.value).startswith(f"env: {name!r} is not accepted, though [spawner] environment of "
                                   "appliance.toml lists it: a name that loads no code"), str(e.value)


@pytest.mark.parametrize("name", REFUSED)
def test_the_daemon_refuses_the_name_when_nothing_lists_it(monkeypatch, name):
    monkeypatch.setattr(users, "is_member", lambda n, g: True)
    req = {"op": "spawn", "user": "daemon", "env": {name: "x"}}
    with pytest.raises(protocol.RequestError) as e:
        validate.check_spawn(req, _cfg_listing("HF_HOME"))
    assert e.value.code == "invalid" and f"env: {name!r} is not accepted" in str(e.value)


def test_the_daemon_still_passes_jupyterhubs_names_and_a_listed_harmless_one(monkeypatch):
    monkeypatch.setattr(users, "is_member", lambda n, g: True)
    env = {"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_USER": "daemon", "LANG": "C.UTF-8", "HF_HOME": "/d",
           "PIP_INDEX_URL": "x"}
    req = {"op": "spawn", "user": "daemon", "env": {k: v for k, v in env.items() if k != "PIP_INDEX_URL"}}
    spec = validate.check_spawn(req, _cfg_listing("PIP_INDEX_URL"))
    assert spec.env == {k: v for k, v in env.items() if k != "PIP_INDEX_URL"}
