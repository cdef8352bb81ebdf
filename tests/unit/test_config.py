import re
from pathlib import Path

import pytest

from appliance import config

TOP = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file(tmp_path):
    cfg = config.load(tmp_path / "missing.toml")
    assert cfg["hub"]["port"] == 8000
    assert cfg["spawner"]["mem_limit"] is None
    assert cfg["daemon"]["min_uid"] == 1000


@pytest.mark.parametrize("text, key, accepted", [
    ("[hub]\nport = 70000", "hub.port", "an integer from 1 to 65535"),
    ("[hub]\nport = \"8000\"", "hub.port", "an integer from 1 to 65535"),
    ("[hub]\nport = true", "hub.port", "an integer from 1 to 65535"),
    ("[hub]\nprot = 1", "hub.prot", "known keys in [hub] are port,"),
    ("[hubb]\nport = 1", "hubb", "known sections are hub, spawner, daemon, gpu, limits, ephemeral, dashboard, metrics, culler, "
     "auth, oidc, tokens, cluster, profiles"),
    ("hub = 3", "hub", "a table: [hub]"),
    ("[spawner]\nmem_limit = \"4Q\"", "spawner.mem_limit", 'a size such as "512M"'),
    ("[spawner]\nmem_limit = \"1M\"", "spawner.mem_limit", "(at least 64M)"),
    ("[spawner]\ndefault_url = \"lab\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[spawner]\ndefault_url = \"/notebooks\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[spawner]\ndefault_url = \"/\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[spawner]\ndefault_url = \"/labs\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[spawner]\ndefault_url = \"/tree/../hub\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[spawner]\ndefault_url = \"/lab//x\"", "spawner.default_url", '"/lab" (JupyterLab) or "/tree"'),
    ("[hub]\nbind_address = \"localhost\"", "hub.bind_address", "an IP address"),
    ("[hub]\nlog_level = \"LOUD\"", "hub.log_level", "one of DEBUG, INFO"),
    ("[culler]\ntimeout = 5", "culler.timeout", "an integer from 30 to"),
    ("[culler]\nevery = 5", "culler.every", "an integer from 10 to 86400"),
    ("[culler]\nmax_age = 59", "culler.max_age", "0 (off) or an integer from 60 to"),
    ("[culler]\nmax_age = false", "culler.max_age", "0 (off) or an integer"),
    ("[culler]\ncull_admin_users = 1", "culler.cull_admin_users", "true or false"),
    ("[culler]\nconcurrency = 0", "culler.concurrency", "an integer from 1 to 100"),
    ("[spawner]\njupyterlab_news = \"yes\"", "spawner.jupyterlab_news", "true or false"),
    ("[hub\nport = 1", "(syntax)", "valid TOML"),
    ("[daemon]\nmin_uid = 0", "daemon.min_uid", "an integer from 1 to 60000"),
    ("[daemon]\nmin_uid = 60001", "daemon.min_uid", "an integer from 1 to 60000"),  # systemd-homed's
    ("[daemon]\nmin_uid = 61184", "daemon.min_uid", "systemd's dynamic users (61184-65519)"),
    ("[daemon]\nmin_uid = 65519", "daemon.min_uid", "an integer from 1 to 60000"),
    ("[daemon]\nmin_uid = 65534", "daemon.min_uid", "nobody (65534)"),
    ("[daemon]\nmin_uid = 65535", "daemon.min_uid", "an integer from 1 to 60000"),
    ("[daemon]\nmin_uid = 524288", "daemon.min_uid", "containers, not people"),
    ("[daemon]\nmin_uid = 2147483647", "daemon.min_uid", "an integer from 1 to 60000"),
    ("[daemon]\nmin_uid = \"1000\"", "daemon.min_uid", "an integer from 1 to 60000"),
])
def test_bad_values_name_file_key_value_and_what_is_accepted(tmp_path, text, key, accepted):
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert e.value.key == key
    assert str(e.value).startswith(f"{path}: {key} = ")
    assert accepted in str(e.value)


@pytest.mark.parametrize("url", ["/lab", "/tree", "/lab/", "/lab/tree/course", "/tree/course/week-1",
                                 "/lab/workspaces/auto-b"])
def test_default_url_accepts_what_the_user_environment_serves(url):
    assert config.loads(f'[spawner]\ndefault_url = "{url}"')["spawner"]["default_url"] == url


@pytest.mark.parametrize("uid", [1, 1000, 59999, 60000])
def test_min_uid_may_be_any_uid_useradd_gives_a_person(uid):
    assert config.validate({"daemon": {"min_uid": uid}})["daemon"]["min_uid"] == uid


def test_sizes_and_numbers_are_normalised():
    cfg = config.loads('[spawner]\nmem_limit = "4G"\ncpu_limit = 2\n[hub]\nlog_level = "debug"')
    assert cfg["spawner"]["mem_limit"] == 4 * 1024**3
    assert cfg["spawner"]["cpu_limit"] == 2.0
    assert cfg["hub"]["log_level"] == "DEBUG"


def test_default_file_documents_every_key_with_its_default():
    """Uncommenting every `# key = value` line of the shipped file gives the defaults."""
    text = (TOP / "etc/jupyterhub/appliance.toml").read_text()
    uncommented = re.sub(r"^# (\w+ = .*)$", r"\1", text, flags=re.M)
    documented = config.loads(uncommented)
    assert documented.as_dict() == config.loads("").as_dict()
    keys = set(re.findall(r"^# (\w+) = ", text, flags=re.M))
    assert keys == {k for fields in config.SCHEMA.values() for k in fields}


def test_a_service_exits_with_EX_CONFIG_on_an_invalid_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nmin_uid = 0\n")
    with pytest.raises(SystemExit) as e:
        config.exit_if_invalid("jupyterhub", bad)
    assert e.value.code == config.EX_CONFIG
    assert "jupyterhub: invalid configuration: " in (err := capsys.readouterr().err)
    assert "daemon.min_uid = 0 is not accepted" in err
    good = tmp_path / "good.toml"
    good.write_text("[daemon]\nmin_uid = 500\n")
    assert config.exit_if_invalid("jupyterhub", good)["daemon"]["min_uid"] == 500


def test_gpu_quotas_and_profiles():
    cfg = config.loads('[gpu]\nquota = 2\nquota_groups = { ml = 3 }\nquota_users = { alice = 4 }\n'
                       '[profiles.big]\ndisplay_name = "2 GPUs, 64 GB"\ngpus = 2\nmem_limit = "64G"\n'
                       '[profiles.slice]\ndisplay_name = "A 1g.10gb MIG slice"\ngpus = 1\nmig = "1g.10gb"\n')
    assert {k: cfg["gpu"][k] for k in ("quota", "quota_groups", "quota_users")} == {
        "quota": 2, "quota_groups": {"ml": 3}, "quota_users": {"alice": 4}}
    assert (cfg["gpu"]["queue"], cfg["gpu"]["queue_timeout"], cfg["gpu"]["reclaim"]) == (True, 1800, "when-needed")
    assert cfg["profiles"]["big"] == {"display_name": "2 GPUs, 64 GB", "gpus": 2,
                                      "mem_limit": 64 * 1024**3, "cpu_limit": 0.0, "mig": "",
                                      "gpu_share": 0, "partition": "", "qos": "", "time_limit": ""}
    assert cfg["profiles"]["slice"]["mig"] == "1g.10gb"
    shared = config.loads('[gpu]\nshared = { "0" = 4, "GPU-8f3c0000-1111" = 2 }\n'
                          '[profiles.q]\ndisplay_name = "A quarter"\ngpus = 1\ngpu_share = "1/4"\n')
    assert shared["gpu"]["shared"] == {"0": 4, "GPU-8f3c0000-1111": 2} and shared["profiles"]["q"]["gpu_share"] == 4
    assert config.loads('[gpu]\nshare_memory = { "0" = "16G" }\n')["gpu"]["share_memory"] == {"0": 16 * 2**30}


@pytest.mark.parametrize("text, key", [
    ("[gpu]\nquota_users = { alice = -1 }", "gpu.quota_users.alice"),
    ("[gpu]\nquota_users = { 'Bad Name' = 1 }", "gpu.quota_users.Bad Name"),
    ("[gpu]\nquota_groups = 3", "gpu.quota_groups"),
    ("[profiles.x]\ngpus = 1", "profiles.x.display_name"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpu = 1", "profiles.x.gpu"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 65", "profiles.x.gpus"),
    ("[profiles.X]\ndisplay_name = 'x'", "profiles.X"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 1\nmig = '10gb'", "profiles.x.mig"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 1\nmig = 1", "profiles.x.mig"),
    ("[profiles.x]\ndisplay_name = 'x'\nmig = '1g.10gb'", "profiles.x.mig"),  # no gpus
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 1\ngpu_share = '1/1'", "profiles.x.gpu_share"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 1\ngpu_share = '2/4'", "profiles.x.gpu_share"),
    ("[profiles.x]\ndisplay_name = 'x'\ngpus = 2\ngpu_share = '1/4'", "profiles.x.gpu_share"),
    ("[gpu]\nshared = { '0' = 1 }", "gpu.shared"),
    ("[gpu]\nshared = { 'first' = 4 }", "gpu.shared"),
    ("[gpu]\nshared = { '0' = 65 }", "gpu.shared"),
    ("[gpu]\nshared = 4", "gpu.shared"),
    ("[gpu]\nshare_grace = 5", "gpu.share_grace"),
    ("[gpu]\nshare_memory = { '0' = '1M' }", "gpu.share_memory"),
    ("[gpu]\nshare_memory = { 'x' = '16G' }", "gpu.share_memory"),
    ("[gpu]\nqueue = 'yes'", "gpu.queue"),
    ("[gpu]\nqueue_timeout = 5", "gpu.queue_timeout"),
    ("[gpu]\nsample_interval = 0", "gpu.sample_interval"),
    ("[gpu]\nidle_threshold = 101", "gpu.idle_threshold"),
    ("[gpu]\nidle_timeout = 'long'", "gpu.idle_timeout"),
    ("[gpu]\nreclaim = 'sometimes'", "gpu.reclaim"),
])
def test_bad_gpu_settings_name_the_entry(text, key):
    with pytest.raises(config.ConfigError) as e:
        config.loads(text)
    assert e.value.key == key
