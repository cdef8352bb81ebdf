"""Reading what sinfo says (appliance/cluster/slurm_state.py), and naming what stops
servers from running. The outputs marked "captured" are sinfo's own, from Slurm
22.05.8 (Debian 12) or 24.11.5 (Debian 13) run with the configuration `applctl cluster
init` writes, with the formats of slurm_state.PARTITION_ARGS and NODE_ARGS (both
versions print them alike)."""

import pytest

from appliance.cluster import slurm_state as ss

# captured: one partition, a node with two GPUs, idle
PARTITIONS = "gpu*|up\n"
NODES = "vm|gpu*|idle|gpu:2|none\n"
# captured: `scontrol update nodename=vm state=drain reason="GPU 1 fell off the bus | ticket 42"`
DRAINED = "vm|gpu*|drained|gpu:2|GPU 1 fell off the bus | ticket 42\n"
# captured: a second partition, down, and one without nodes; a job on the node
PARTITIONS_2 = "gpu*|up\ndebug|down\nempty|up\n"
NODES_2 = "vm|gpu*|mixed|gpu:2|none\nvm|debug|mixed|gpu:2|none\n"


def test_partitions_with_the_default_marked():
    assert ss.parse_partitions(PARTITIONS_2) == [ss.Partition("gpu", "up", True), ss.Partition("debug", "down", False),
                                                 ss.Partition("empty", "up", False)]


def test_a_resumed_node_may_keep_its_reason_and_is_fine():
    # captured, 24.11.5: drained with a reason, then `scontrol update ... state=resume`
    [node] = ss.parse_nodes("vm|gpu*|idle|gpu:4|GPU 3 | gone\n")
    assert (node.state, node.gpus, node.reason, node.problem) == ("idle", 4, "GPU 3 | gone", None)


def test_a_node_in_two_partitions_is_one_node():
    [node] = ss.parse_nodes(NODES_2)
    assert (node.name, node.partitions, node.state, node.gpus, node.reason, node.problem) == (
        "vm", ["gpu", "debug"], "mixed", 2, None, None)


def test_a_drained_node_keeps_its_whole_reason():
    [node] = ss.parse_nodes(DRAINED)
    assert node.reason == "GPU 1 fell off the bus | ticket 42"
    assert node.problem == "node vm is drained: Slurm's reason: GPU 1 fell off the bus | ticket 42"
    used, problems = ss.used_partitions(ss.parse_partitions(PARTITIONS), [""])
    assert (used, problems) == (["gpu"], [])
    assert ss.node_problems(ss.parse_nodes(DRAINED), used) == [
        "node vm is drained: Slurm's reason: GPU 1 fell off the bus | ticket 42"]


@pytest.mark.parametrize("state, problem", [
    ("idle", None), ("mixed", None), ("allocated", None), ("completing", None), ("idle~", None),
    ("mixed-", None), ("idle#", None), ("planned", None), ("mixed+planned", None),
    ("idle*", "node n1 is idle, not responding"),
    ("down*", "node n1 is down, not responding: Slurm's reason: Not responding"),
    ("drained", "node n1 is drained"), ("draining", "node n1 is draining"),
    ("fail", "node n1 is fail"), ("inval", "node n1 is inval"), ("unknown*", "node n1 is unknown, not responding"),
    ("idle@", "node n1 is idle, pending reboot"), ("maint", "node n1 is maint"),
    ("mixed+drain", "node n1 is mixed+drain"),
])
def test_node_states(state, problem):
    reason = "Not responding" if state == "down*" else "none"
    [node] = ss.parse_nodes(f"n1|gpu*|{state}|gpu:1|{reason}\n")
    assert node.problem == problem


@pytest.mark.parametrize("gres, gpus", [
    ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2(S:0,1),gpu:v100:1(S:1)", 3), ("gpu:4,shard:8", 4),
    ("(null)", 0), ("", 0), ("shard:8", 0), ("gpu:tesla:2(S:0),mps:100", 2),
])
def test_gpus_from_slurms_gres(gres, gpus):
    assert ss.gpu_count(gres) == gpus


def test_a_node_without_a_gpu_gres_is_named():
    nodes = ss.parse_nodes("cpu1|gpu*|idle|(null)|none\ngpu1|gpu*|idle|gpu:2|none\nother|cpu|down|(null)|x\n")
    assert ss.node_problems(nodes, ["gpu"]) == [
        "node cpu1 has no gpu gres: servers with GPUs never start there (Gres=gpu:N on its NodeName line in "
        "slurm.conf, and its GPUs in gres.conf)"]  # other is in a partition servers do not use


def test_a_configured_partition_that_is_missing_or_down():
    parts = ss.parse_partitions(PARTITIONS_2)
    assert ss.used_partitions(parts, ["gpus", "debug", "gpu"]) == (["debug", "gpu"], [
        "partition 'gpus' of appliance.toml is not a partition of this cluster; it has: gpu, debug, empty",
        "partition debug is down, not up: no job starts there"])
    assert ss.used_partitions([ss.Partition("cpu", "up", False)], [""])[1] == [
        "[cluster] partition is \"\" (Slurm's default), and this cluster has no default partition: set "
        "Default=YES on one in slurm.conf, or name one in [cluster] partition"]
    assert ss.used_partitions([], ["gpu"])[1] == [
        "partition 'gpu' of appliance.toml is not a partition of this cluster; it has: none"]


def test_blank_and_short_lines_are_skipped():
    assert ss.parse_nodes("\n\nnot a node line\n" + NODES) == ss.parse_nodes(NODES)
    assert ss.parse_partitions("\n" + PARTITIONS) == ss.parse_partitions(PARTITIONS)
