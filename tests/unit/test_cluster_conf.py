"""The Slurm configuration `applctl cluster init` writes (appliance/cluster/slurm_conf.py):
what goes into slurm.conf, gres.conf and cgroup.conf, and the one-line refusal of
node names, GPU counts and inventories it cannot use."""

import pytest

from appliance.cluster import slurm_conf as sc
from appliance.cluster.slurm_conf import ClusterConfError, Node


def inventory(name="gpu1", cpus=32, memory_mb=120000, minors=(0, 1)):
    return {"format": sc.INVENTORY_FORMAT, "node": name, "cpus": cpus, "memory_mb": memory_mb,
            "gpus": [{"minor": m, "uuid": f"GPU-{m}", "name": "NVIDIA A100"} for m in minors]}


def test_two_nodes_from_their_inventories():
    nodes = sc.nodes_from(["gpu1", "gpu2"], {}, [sc.node_from_inventory(inventory("gpu2", 16, 60000, (1, 3)), "b"),
                                                 sc.node_from_inventory(inventory(), "a")])
    assert nodes == [Node("gpu1", (0, 1), 32, 120000), Node("gpu2", (1, 3), 16, 60000)]
    conf = sc.files("head", nodes, "gpu")
    assert set(conf) == {"slurm.conf", "gres.conf", "cgroup.conf"}
    slurm = conf["slurm.conf"].splitlines()
    for line in ("SlurmctldHost=head", "AuthType=auth/munge", "GresTypes=gpu", "SelectType=select/cons_tres",
                 "SelectTypeParameters=CR_Core_Memory", "ProctrackType=proctrack/cgroup",
                 "TaskPlugin=task/cgroup,task/affinity", "JobAcctGatherType=jobacct_gather/cgroup",
                 "StateSaveLocation=/var/lib/slurm/slurmctld", "SlurmdSpoolDir=/var/lib/slurm/slurmd",
                 "MailProg=/bin/true",
                 "NodeName=gpu1 CPUs=32 RealMemory=120000 Gres=gpu:2 State=UNKNOWN",
                 "NodeName=gpu2 CPUs=16 RealMemory=60000 Gres=gpu:2 State=UNKNOWN",
                 "PartitionName=gpu Nodes=gpu1,gpu2 Default=YES MaxTime=INFINITE State=UP"):
        assert line in slurm, line
    # slurmctld 22.05 refuses to start with gres TRES accounting and no slurmdbd.
    assert not any(line.startswith("AccountingStorageTRES") for line in slurm)
    assert [ln for ln in conf["gres.conf"].splitlines() if not ln.startswith("#") and ln] == [
        "NodeName=gpu1 Name=gpu File=/dev/nvidia0", "NodeName=gpu1 Name=gpu File=/dev/nvidia1",
        "NodeName=gpu2 Name=gpu File=/dev/nvidia1", "NodeName=gpu2 Name=gpu File=/dev/nvidia3"]
    assert {"ConstrainDevices=yes", "ConstrainCores=yes", "ConstrainRAMSpace=yes"} <= set(
        conf["cgroup.conf"].splitlines())


def test_gpu_counts_alone_leave_cpus_and_memory_to_slurm_and_memory_is_no_consumable():
    nodes = sc.nodes_from(["gpu1", "gpu2"], sc.parse_gpu_counts("gpu1=2,gpu2=0"), [])
    assert nodes == [Node("gpu1", (0, 1)), Node("gpu2", ())]
    slurm = sc.slurm_conf("head", nodes, "lab").splitlines()
    assert "NodeName=gpu1 Gres=gpu:2 State=UNKNOWN" in slurm
    assert "NodeName=gpu2 State=UNKNOWN" in slurm  # no GPU: no Gres
    assert "SelectTypeParameters=CR_Core" in slurm  # RealMemory unset is 1 MB: no job asking memory would start
    assert "PartitionName=lab Nodes=gpu1,gpu2 Default=YES MaxTime=INFINITE State=UP" in slurm


def test_the_inventory_promises_95_percent_of_memtotal():
    inv = sc.inventory("gpu1", 8, 16 * 1024 * 1024, [{"minor": 0, "uuid": "GPU-0", "name": "x"}])
    assert inv["memory_mb"] == 16 * 1024 * 95 // 100
    assert sc.node_from_inventory(inv, "f") == Node("gpu1", (0,), 8, inv["memory_mb"])


@pytest.mark.parametrize("text, says", [
    ("gpu1,gpu1", "names a node twice"),
    ("gpu1,", "--nodes: the node '' is not accepted: a short host name"),
    ("gpu1.lab.org", "'gpu1.lab.org' is not accepted"),
    ("gpu[1-2]", "'gpu[1-2]' is not accepted"),
    ("-gpu1", "'-gpu1' is not accepted"),
    ("gpu 1", "'gpu 1' is not accepted"),
    ("gpu1=x", "'gpu1=x' is not accepted"),
    ("a" * 64, "is not accepted: a short host name: 1 to 63 letters"),
    (",".join(f"n{i}" for i in range(257)), "at most 256"),
])
def test_bad_node_lists(text, says):
    with pytest.raises(ClusterConfError) as e:
        sc.parse_nodes(text)
    assert says in str(e.value)


@pytest.mark.parametrize("text", ["gpu1", "gpu1=", "gpu1=-1", "gpu1=65", "gpu1=2,gpu1=2", "gpu1=two", "=2",
                                  "gpu1=2;rm"])
def test_bad_gpu_counts(text):
    with pytest.raises(ClusterConfError) as e:
        sc.parse_gpu_counts(text)
    assert "NODE=COUNT pairs joined by commas, e.g. gpu1=2,gpu2=4" in str(e.value) or "the node" in str(e.value)


@pytest.mark.parametrize("names, counts, inventories, says", [
    (["gpu1", "gpu2"], {"gpu1": 2}, [], "how many GPUs has gpu2? Give --gpus gpu2=N, or --inventory FILE"),
    (["gpu1"], {"gpu1": 2, "gpu3": 1}, [], "--gpus gpu3=1: gpu3 is not in --nodes"),
    (["gpu1"], {"gpu1": 2}, [Node("gpu1", (0,), 1, 1)], "gpu1 has both an --inventory and --gpus"),
    (["gpu1"], {}, [Node("gpu2", (0,), 1, 1)], "--inventory of gpu2: gpu2 is not in --nodes"),
    (["gpu1"], {}, [Node("gpu1", (0,), 1, 1)] * 2, "two inventories of gpu1"),
])
def test_every_node_once_from_one_source(names, counts, inventories, says):
    with pytest.raises(ClusterConfError) as e:
        sc.nodes_from(names, counts, inventories)
    assert says in str(e.value)


@pytest.mark.parametrize("data, says", [
    (None, "it is not an inventory"),
    ([], "it is not an inventory"),
    ({**inventory(), "format": "other"}, "it is not an inventory"),
    ({**inventory(), "node": "gpu1\nNodeName=evil"}, "its node is not a short host name"),
    ({**inventory(), "cpus": 0}, "its cpus is not an integer from 1 to 65536"),
    ({**inventory(), "cpus": True}, "its cpus is not an integer"),
    ({**inventory(), "memory_mb": "1000"}, "its memory_mb is not an integer"),
    ({**inventory(), "gpus": {}}, "its gpus are not a list"),
    (inventory(minors=(0, 0)), "a GPU's minor is not a /dev/nvidia number from 0 to 255, once each"),
    (inventory(minors=(256,)), "a GPU's minor is not"),
    ({**inventory(), "gpus": [{"minor": "0 File=/etc/shadow"}]}, "a GPU's minor is not"),
])
def test_bad_inventories_say_what_and_where_it_comes_from(data, says):
    with pytest.raises(ClusterConfError) as e:
        sc.node_from_inventory(data, "gpu1.json")
    assert str(e.value).startswith("--inventory gpu1.json: ") and says in str(e.value)
    assert "it must be the output of `applctl cluster inventory --json` on the node" in str(e.value)
