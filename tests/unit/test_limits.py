"""Limits per server (default, group, user, profile) and for all user servers."""

import pytest

from appliance import config, limits
from appliance.limits import GiB, Limits


def cfg(text=""):
    return config.loads(text)["limits"]


def test_user_value_wins_then_the_highest_group_then_the_default():
    lim = cfg('[limits]\nmem_limit = "8G"\ncpu_limit = 4\ntasks_max = 512\n'
              'mem_limit_groups = { ml = "64G", lab = "16G" }\nmem_limit_users = { bob = "2G" }\n'
              'cpu_limit_groups = { ml = 16 }\n')
    assert limits.for_user(lim, "alice", ["lab", "ml"]) == Limits(64 * GiB, 16.0, 512)
    assert limits.for_user(lim, "bob", ["ml"]) == Limits(2 * GiB, 16.0, 512)
    assert limits.for_user(lim, "carol", []) == Limits(8 * GiB, 4.0, 512)
    assert limits.for_user(lim, "carol", [], {"mem_limit": 32 * GiB, "cpu_limit": 0}) == Limits(32 * GiB, 4.0, 512)
    assert limits.for_user(cfg(), "carol", []) == Limits(None, None, None)
    assert Limits(8 * GiB, 4.0, None).describe() == "8 GB RAM, 4 CPUs"
    assert Limits(None, 1.0, None).describe() == "no memory limit, 1 CPU"


def test_totals_leave_the_system_room():
    assert limits.totals(cfg(), memory=16 * GiB, cpus=8) == (14 * GiB, 7.0)
    assert limits.totals(cfg(), memory=3 * GiB, cpus=1) == (int(1.5 * GiB), 0.5)  # never more than half back
    assert limits.totals(cfg('[limits]\ntotal_memory = "10G"\ntotal_cpu = 3\n'), 16 * GiB, 8) == (10 * GiB, 3.0)
    assert limits.totals(cfg('[limits]\ntotal_memory = ""\ntotal_cpu = 0\n'), 16 * GiB, 8) == (None, None)


def test_the_old_spawner_keys_still_work_with_a_message():
    c = config.loads('[spawner]\nmem_limit = "4G"\ncpu_limit = 2\n')
    assert (c["limits"]["mem_limit"], c["limits"]["cpu_limit"]) == (4 * GiB, 2.0)
    assert c.warnings == [f"{c.path}: spawner.mem_limit is deprecated: use limits.mem_limit",
                          f"{c.path}: spawner.cpu_limit is deprecated: use limits.cpu_limit"]
    assert config.loads('[spawner]\nmem_limit = "4G"\n[limits]\nmem_limit = "2G"\n')["limits"]["mem_limit"] == 2 * GiB


@pytest.mark.parametrize("text, key", [
    ('[limits]\nmem_limit_groups = { ml = "lots" }', "limits.mem_limit_groups.ml"),
    ('[limits]\nmem_limit_users = { alice = "" }', "limits.mem_limit_users.alice"),
    ("[limits]\ncpu_limit_users = { alice = -1 }", "limits.cpu_limit_users.alice"),
    ("[limits]\ncpu_limit_groups = 3", "limits.cpu_limit_groups"),
    ("[limits]\ntasks_max = 3", "limits.tasks_max"),
    ('[limits]\ntotal_memory = "most"', "limits.total_memory"),
    ('[limits]\ntotal_cpu = "all"', "limits.total_cpu"),
    ("[limits]\ntotal_cpu = -2", "limits.total_cpu"),
])
def test_bad_limits_name_the_key(text, key):
    with pytest.raises(config.ConfigError) as e:
        config.loads(text)
    assert e.value.key == key
