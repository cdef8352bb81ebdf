"""[spawner] environment holds no secret (appliance.toml is world-readable, issue 26,
low): a name that says it holds one is refused, pointing to [spawner]
environment_file, root's own file, which only root reads (the daemon, applctl reload)."""

from __future__ import annotations

import os

import pytest

from appliance import config
from appliance.daemon import units
from appliance.daemon.validate import SpawnSpec

TOML = "/etc/jupyterhub/appliance.toml"


@pytest.mark.parametrize("name", ["HF_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "DB_PASSWD",
                                  "WANDB_APIKEY", "GOOGLE_APPLICATION_CREDENTIALS", "hf_token"])
def test_a_name_that_holds_a_secret_is_refused_and_its_value_never_shown(name):
    with pytest.raises(config.ConfigError) as e:
        config.validate({"spawner": {"environment": {name: "s3cret-value"}}}, TOML)
    msg = str(e.value)
    assert e.value.key == f"spawner.environment.{name}" and "s3cret-value" not in msg and "\n" not in msg
    assert "readable by every local account" in msg and "environment_file" in msg and "0600" in msg


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "KEYRING_BACKEND", "HF_HOME", "TORCH_HOME"])
def test_names_that_only_contain_such_a_word_stay_accepted(name):
    assert config.validate({"spawner": {"environment": {name: "x"}}}, TOML)["spawner"]["environment"] == {name: "x"}


@pytest.mark.parametrize("value", ["etc/spawner.env", "/etc/../etc/spawner.env", 5, "/etc/x\n"])
def test_environment_file_must_be_an_absolute_path(value):
    with pytest.raises(config.ConfigError, match="absolute path of a file owned by root"):
        config.validate({"spawner": {"environment_file": value}}, TOML)


def test_environment_file_is_for_root_only():
    assert ("spawner", "environment_file") in config.root_only_keys()


@pytest.fixture
def env_file(tmp_path):
    d = tmp_path / "etc"
    d.mkdir()
    for p in (tmp_path, d):
        p.chmod(0o755)
    f = d / "spawner.env"
    f.write_text('# shared by every server\nHF_TOKEN=hf_abc\n\nWANDB_API_KEY = "w x"\nQUOTED=\'q\'\n')
    f.chmod(0o600)
    return f


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
def test_roots_file_is_read_and_reaches_the_server(env_file):
    env = config.read_environment_file(str(env_file), {"HF_HOME": "/data"})
    assert env == {"HF_TOKEN": "hf_abc", "WANDB_API_KEY": "w x", "QUOTED": "q"}
    spec = SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice", env={"JUPYTERHUB_USER": "alice"})
    assert units.server_env(spec, secret_env=env)["HF_TOKEN"] == "hf_abc"


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
@pytest.mark.parametrize("change, says", [
    (lambda f: f.chmod(0o644), "mode 0644; it must be a file owned by root that nobody else may read"),
    (lambda f: os.chown(f, 65534, 0), "owner uid 65534"),
    (lambda f: os.chown(f.parent, 65534, 0), "above it is owned by uid 65534"),
    (lambda f: f.write_text("LD_PRELOAD=/tmp/x.so\n"), "line 1 is not accepted: a name that loads no code"),
    (lambda f: f.write_text("root:$y$hash:19000::::::\n"), "line 1 is not accepted: a NAME=value line"),
    (lambda f: f.write_text("HF_HOME=/elsewhere\n"), "HF_HOME is also in [spawner] environment"),
    (lambda f: f.unlink(), "No such file or directory"),
])
def test_a_file_others_could_read_or_change_or_a_bad_line_is_refused_without_showing_values(env_file, change, says):
    change(env_file)
    with pytest.raises(config.EnvFileError) as e:
        config.read_environment_file(str(env_file), {"HF_HOME": "/data"})
    assert says in str(e.value) and "hf_abc" not in str(e.value) and "$y$hash" not in str(e.value)


@pytest.mark.skipif(os.getuid() != 0, reason="the file must be root's")
def test_a_link_is_judged_by_where_it_leads(env_file, tmp_path):
    link = tmp_path / "link.env"
    link.symlink_to(env_file)
    assert config.read_environment_file(str(link), {})["HF_TOKEN"] == "hf_abc"
    os.chown(env_file.parent, 65534, 0)
    with pytest.raises(config.EnvFileError, match="above it is owned by uid 65534"):
        config.read_environment_file(str(link), {})
