"""[cluster] and the profiles' Slurm keys: what an administrator may write, and the
one-line refusal of anything else (the values become sbatch arguments later, passed
on by root as the person's uid)."""

import pytest

from appliance import config

TOML = "/etc/jupyterhub/appliance.toml"


def refusal(text: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as e:
        config.loads(text, TOML)
    assert len(str(e.value).splitlines()) == 1
    assert str(e.value).startswith(f"{TOML}: {e.value.key} = ")
    return e.value


def test_the_default_is_this_host_and_nothing_else_changes():
    cfg = config.loads("")
    assert cfg["cluster"] == {"engine": "local", "partition": "", "account": "", "qos": "", "time_limit": "",
                              "extra_sbatch_options": {}}
    assert cfg.warnings == []


def test_a_whole_cluster_section_and_profiles_of_their_own():
    cfg = config.loads('[cluster]\nengine = "slurm"\npartition = "gpu"\naccount = "lab-ml"\nqos = "normal"\n'
                       'time_limit = "1-00:00:00"\n'
                       'extra_sbatch_options = { constraint = "a100&nvlink", reservation = "course_2026", '
                       'nice = 100, exclusive = true, gres-flags = "enforce-binding" }\n'
                       '[profiles.long]\ndisplay_name = "A week"\ngpus = 1\npartition = "long"\nqos = "long.q"\n'
                       'time_limit = "7-00"\n', TOML)
    assert cfg["cluster"]["extra_sbatch_options"] == {"constraint": "a100&nvlink", "reservation": "course_2026",
                                                      "nice": 100, "exclusive": True,
                                                      "gres-flags": "enforce-binding"}
    assert {k: cfg["profiles"]["long"][k] for k in ("partition", "qos", "time_limit")} == {
        "partition": "long", "qos": "long.q", "time_limit": "7-00"}
    # Accepted, and the administrator is told it does not act yet.
    assert cfg.warnings == [f'{TOML}: cluster.engine = "slurm" is accepted, but servers still start on this host: '
                            "submitting them to Slurm is not implemented yet (applctl cluster check tests the "
                            "cluster)"]


def test_slurm_settings_without_the_slurm_engine_are_accepted_with_a_note():
    cfg = config.loads('[cluster]\npartition = "gpu"\n[profiles.x]\ndisplay_name = "x"\nqos = "high"\n', TOML)
    assert cfg.warnings == [f'{TOML}: cluster.partition, profiles.x.qos take effect only with '
                            'cluster.engine = "slurm"']


@pytest.mark.parametrize("limit, seconds", [
    ("30", 1800), ("90:30", 5430), ("12:00:00", 43200), ("1-12", 129600), ("2-03:04", 183840),
    ("7-00:00:00", 604800), ("1:00", 60), ("365-00", 365 * 86400), ("525600", 365 * 86400)])
def test_time_limits_in_every_form_sbatch_takes(limit, seconds):
    assert config.time_limit_seconds(limit) == seconds
    assert config.loads(f'[cluster]\ntime_limit = "{limit}"')["cluster"]["time_limit"] == limit


@pytest.mark.parametrize("limit", ["0", "00:00:00", "0-0", "1:60", "1:00:60", "1:60:00", "1-24", "1-00:60",
                                   "366-00", "525601", "1h", "-1", " 30", "30 ", "1-", "1--1", "01:02:03:04",
                                   "UNLIMITED", "infinite", "1.5", "", "1-00:00:00\n"])
def test_time_limits_sbatch_would_read_otherwise_are_refused(limit):
    with pytest.raises(ValueError):
        config.time_limit_seconds(limit)


@pytest.mark.parametrize("text, key, accepted", [
    ('[cluster]\nengine = "kubernetes"', "cluster.engine", 'one of "local", "slurm"'),
    ('[cluster]\nengine = true', "cluster.engine", 'one of "local", "slurm"'),
    ('[cluster]\npartition = "-p debug"', "cluster.partition", "a Slurm name: 1 to 64 letters, digits, '_', '.'"),
    ('[cluster]\npartition = "gpu,cpu"', "cluster.partition", "starting with a letter or digit"),
    ('[cluster]\npartition = "gpu cpu"', "cluster.partition", "a Slurm name"),
    ('[cluster]\npartition = "--uid=0"', "cluster.partition", "a Slurm name"),
    ('[cluster]\npartition = 3', "cluster.partition", "a Slurm name"),
    ('[cluster]\naccount = "lab;rm"', "cluster.account", "\"\" (each person's default account), or a Slurm name"),
    ('[cluster]\naccount = "lab\\n"', "cluster.account", "a Slurm name"),
    ('[cluster]\nqos = "' + "q" * 65 + '"', "cluster.qos", "1 to 64 letters"),
    ('[cluster]\nqos = "high=1"', "cluster.qos", "\"\" (the default QOS), or a Slurm name"),
    ('[cluster]\ntime_limit = "1:60:00"', "cluster.time_limit", '"MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or '
     '"D-HH:MM:SS"'),
    ('[cluster]\ntime_limit = 60', "cluster.time_limit", "\"\" (the partition's default), or a Slurm time limit"),
    ('[cluster]\ntime_limit = "0"', "cluster.time_limit", "at least a minute"),
    ('[cluster]\nextra_sbatch_options = "--constraint=a100"', "cluster.extra_sbatch_options",
     "a table of sbatch options, from: constraint, reservation, nice, exclusive, gres-flags"),
    ('[cluster]\nextra_sbatch_options = { output = "/etc/x" }', "cluster.extra_sbatch_options.output",
     "an option from constraint, reservation, nice, exclusive, gres-flags"),
    ('[cluster]\nextra_sbatch_options = { export = "ALL" }', "cluster.extra_sbatch_options.export",
     "other options are not offered"),
    ('[cluster]\nextra_sbatch_options = { gres = "gpu:8" }', "cluster.extra_sbatch_options.gres",
     "GPUs, memory and CPUs come from the quota and [limits]"),
    ('[cluster]\nextra_sbatch_options = { partition = "x" }', "cluster.extra_sbatch_options.partition",
     "partition, account, qos and time_limit are [cluster]'s own keys"),
    ('[cluster]\nextra_sbatch_options = { "--constraint" = "a100" }', "cluster.extra_sbatch_options.--constraint",
     "an option from"),
    ('[cluster]\nextra_sbatch_options = { constraint = "a100 --uid=0" }', "cluster.extra_sbatch_options.constraint",
     "node features joined by & (all) or | (any)"),
    ('[cluster]\nextra_sbatch_options = { constraint = "" }', "cluster.extra_sbatch_options.constraint",
     "node features"),
    ('[cluster]\nextra_sbatch_options = { reservation = "-x" }', "cluster.extra_sbatch_options.reservation",
     "the name of a Slurm reservation"),
    ('[cluster]\nextra_sbatch_options = { nice = -100 }', "cluster.extra_sbatch_options.nice",
     "an integer from 0 to 10000"),
    ('[cluster]\nextra_sbatch_options = { nice = "5" }', "cluster.extra_sbatch_options.nice", "an integer"),
    ('[cluster]\nextra_sbatch_options = { exclusive = "user" }', "cluster.extra_sbatch_options.exclusive",
     "true (every server's job has its nodes to itself) or false"),
    ('[cluster]\nextra_sbatch_options = { gres-flags = "x" }', "cluster.extra_sbatch_options.gres-flags",
     'one of "enforce-binding", "disable-binding"'),
    ('[cluster]\nnodes = ["gpu1"]', "cluster.nodes", "known keys in [cluster] are engine, partition, account, qos, "
     "time_limit, extra_sbatch_options"),
    ('[profiles.x]\ndisplay_name = "x"\npartition = "a b"', "profiles.x.partition",
     '"" ([cluster] partition), or a Slurm name'),
    ('[profiles.x]\ndisplay_name = "x"\nqos = "-q"', "profiles.x.qos", '"" ([cluster] qos), or a Slurm name'),
    ('[profiles.x]\ndisplay_name = "x"\ntime_limit = "1-24"', "profiles.x.time_limit",
     '"" ([cluster] time_limit), or a Slurm time limit'),
    ('[profiles.x]\ndisplay_name = "x"\naccount = "a"', "profiles.x.account", "known keys are display_name, gpus"),
])
def test_bad_values_name_the_key_and_what_is_accepted(text, key, accepted):
    e = refusal(text)
    assert e.key == key
    assert accepted in str(e), str(e)


def test_only_root_may_change_the_engine_and_the_account():
    assert {("cluster", "engine"), ("cluster", "account")} <= set(config.root_only_keys())
    assert not {("cluster", k) for k in ("partition", "qos", "time_limit", "extra_sbatch_options")} \
        & set(config.root_only_keys())
