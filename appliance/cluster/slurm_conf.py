"""A lab's first Slurm configuration: slurm.conf, gres.conf and cgroup.conf for a head
(slurmctld) and GPU nodes (slurmd), from what each node has. Pure: `applctl cluster
init` reads the inputs and writes the files.

What a node has comes from its inventory (`applctl cluster inventory --json`, run on
that node: its CPUs, memory and GPUs' /dev minors from NVML) or, for GPUs only, from a
count given on the head (`--gpus gpu1=2`), which assumes /dev/nvidia0..N-1 and leaves
the node's CPUs and memory to Slurm's defaults until it is filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A host's short name, as Slurm's NodeName and SlurmctldHost take it: no dots, and none
# of the characters of Slurm's host lists ("[", ",") or of slurm.conf (" ", "=", "#").
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HOST_RULE = "a short host name: 1 to 63 letters, digits and '-', not starting or ending with '-'"
MAX_NODES = 256
MAX_GPUS_PER_NODE = 64
INVENTORY_FORMAT = "jupyterhub-appliance cluster inventory 1"


class ClusterConfError(ValueError):
    """An input that cannot make a configuration, worded for the administrator."""


@dataclass(frozen=True)
class Node:
    name: str
    gpu_minors: tuple[int, ...]  # /dev/nvidia<minor> of each GPU
    cpus: int | None = None  # None: not known on the head
    memory_mb: int | None = None  # what slurm.conf's RealMemory may promise


def check_host(name: str, what: str) -> str:
    if not _HOST_RE.fullmatch(name):
        raise ClusterConfError(f"{what} {name[:80]!r} is not accepted: {HOST_RULE}")
    return name


def parse_nodes(text: str) -> list[str]:
    """--nodes gpu1,gpu2 -> the names, each once, in order."""
    names = [n.strip() for n in text.split(",")]
    for n in names:
        check_host(n, "--nodes: the node")
    if len(set(names)) != len(names):
        raise ClusterConfError(f"--nodes {text[:200]!r} names a node twice: give each node once")
    if len(names) > MAX_NODES:
        raise ClusterConfError(f"--nodes gives {len(names)} nodes: at most {MAX_NODES}")
    return names


def parse_gpu_counts(text: str) -> dict[str, int]:
    """--gpus gpu1=2,gpu2=4 -> {node: count}."""
    counts: dict[str, int] = {}
    accepted = f"NODE=COUNT pairs joined by commas, e.g. gpu1=2,gpu2=4 (COUNT from 0 to {MAX_GPUS_PER_NODE})"
    for pair in text.split(","):
        name, eq, count = pair.strip().partition("=")
        if not eq or not count.isdigit() or not 0 <= int(count) <= MAX_GPUS_PER_NODE or name in counts:
            raise ClusterConfError(f"--gpus {text[:200]!r} is not accepted: {accepted}, each node once")
        counts[check_host(name, "--gpus: the node")] = int(count)
    return counts


def node_from_inventory(data: Any, source: str) -> Node:
    """A node's inventory (the JSON of `applctl cluster inventory --json`), checked."""
    def bad(why: str) -> ClusterConfError:
        return ClusterConfError(f"--inventory {source}: {why}; it must be the output of `applctl cluster inventory "
                                "--json` on the node")
    if not isinstance(data, dict) or data.get("format") != INVENTORY_FORMAT:
        raise bad(f"it is not an inventory (no \"format\": \"{INVENTORY_FORMAT}\")")
    name = data.get("node")
    if not isinstance(name, str) or not _HOST_RE.fullmatch(name):
        raise bad(f"its node is not {HOST_RULE}")
    cpus, memory, gpus = data.get("cpus"), data.get("memory_mb"), data.get("gpus")
    for key, value, top in (("cpus", cpus, 65536), ("memory_mb", memory, 2**40)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise bad(f"its {key} is not an integer from 1 to {top}")
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS_PER_NODE:
        raise bad(f"its gpus are not a list of at most {MAX_GPUS_PER_NODE}")
    minors = []
    for gpu in gpus:
        minor = gpu.get("minor") if isinstance(gpu, dict) else None
        if isinstance(minor, bool) or not isinstance(minor, int) or not 0 <= minor <= 255 or minor in minors:
            raise bad("a GPU's minor is not a /dev/nvidia number from 0 to 255, once each")
        minors.append(minor)
    return Node(name, tuple(sorted(minors)), cpus, memory)


def inventory(name: str, cpus: int, memory_total_kb: int, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """This host's inventory, as `applctl cluster inventory --json` prints it. RealMemory
    promises 95% of MemTotal: slurmd drains a node that reports less than promised,
    and the kernel's own reservations move MemTotal a little between boots."""
    return {"format": INVENTORY_FORMAT, "node": name, "cpus": cpus,
            "memory_mb": max(1, memory_total_kb * 95 // 100 // 1024), "gpus": gpus}


def nodes_from(names: list[str], counts: dict[str, int], inventories: list[Node]) -> list[Node]:
    """Each named node from its inventory or its --gpus count; each exactly once."""
    by_name = {}
    for node in inventories:
        if node.name not in names:
            raise ClusterConfError(f"--inventory of {node.name}: {node.name} is not in --nodes")
        if node.name in by_name:
            raise ClusterConfError(f"--inventory: two inventories of {node.name}; give one")
        by_name[node.name] = node
    for name, count in counts.items():
        if name not in names:
            raise ClusterConfError(f"--gpus {name}={count}: {name} is not in --nodes")
        if name in by_name:
            raise ClusterConfError(f"{name} has both an --inventory and --gpus: give one of them")
        by_name[name] = Node(name, tuple(range(count)))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ClusterConfError(f"how many GPUs has {', '.join(missing)}? Give --gpus {missing[0]}=N, or "
                               f"--inventory FILE from `applctl cluster inventory --json` run on {missing[0]}")
    return [by_name[n] for n in names]


def _header(what: str) -> str:
    return (f"# {what}, written by `applctl cluster init` (jupyterhub-appliance).\n"
            "# The same file goes to the head and to every node.\n")


def slurm_conf(controller: str, nodes: list[Node], partition: str) -> str:
    known_memory = all(n.memory_mb for n in nodes)
    lines = [
        _header("slurm.conf"),
        "ClusterName=appliance",
        f"SlurmctldHost={controller}",
        "AuthType=auth/munge",
        "SlurmUser=slurm",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
        "SlurmdSpoolDir=/var/lib/slurm/slurmd",
        "MpiDefault=none",
        "MailProg=/bin/true",  # servers send no mail; without it slurmctld logs an error where mail is missing
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        # Memory is a consumable only where every node's is known: RealMemory left
        # out is 1 MB, and no job asking for memory would ever start.
        "SelectTypeParameters=" + ("CR_Core_Memory" if known_memory else "CR_Core"),
        "GresTypes=gpu",
        # Each job in its own cgroup, confined to its cores, memory and GPU devices.
        "ProctrackType=proctrack/cgroup",
        "TaskPlugin=task/cgroup,task/affinity",
        # Each job's usage, for sstat (with GPU memory and utilization where Slurm has
        # NVML, 23.02 and later). Keeping it after the job (AccountingStorageTRES=
        # gres/gpu,gres/gpumem,gres/gpuutil) needs slurmdbd: slurmctld 22.05 refuses
        # to start with those TRES and no slurmdbd, so they are not set here.
        "JobAcctGatherType=jobacct_gather/cgroup",
        "",
    ]
    for n in nodes:
        parts = [f"NodeName={n.name}"]
        if n.cpus:
            parts.append(f"CPUs={n.cpus}")
        if n.memory_mb:
            parts.append(f"RealMemory={n.memory_mb}")
        if n.gpu_minors:
            parts.append(f"Gres=gpu:{len(n.gpu_minors)}")
        lines.append(" ".join(parts + ["State=UNKNOWN"]))
    lines.append(f"PartitionName={partition} Nodes={','.join(n.name for n in nodes)} Default=YES "
                 "MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_lines(node: Node) -> list[str]:
    """One line per GPU, by its /dev minor: Slurm's cgroup gives a job those files only."""
    return [f"NodeName={node.name} Name=gpu File=/dev/nvidia{minor}" for minor in node.gpu_minors]


def gres_conf(nodes: list[Node]) -> str:
    return "\n".join([_header("gres.conf"), *(line for n in nodes for line in gres_lines(n))]) + "\n"


def cgroup_conf() -> str:
    return "\n".join([_header("cgroup.conf"), "ConstrainCores=yes", "ConstrainDevices=yes",
                      "ConstrainRAMSpace=yes", ""])


def files(controller: str, nodes: list[Node], partition: str) -> dict[str, str]:
    """The three files, by name."""
    return {"slurm.conf": slurm_conf(controller, nodes, partition), "gres.conf": gres_conf(nodes),
            "cgroup.conf": cgroup_conf()}
