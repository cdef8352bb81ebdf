"""What Slurm reports about its partitions and nodes, read from sinfo's fixed formats,
and what of it stops servers from running: pure, so that `applctl cluster check`
only runs the commands. The formats are sinfo's `-o` fields, the same in Slurm 22.05
(Debian 12) and 24.11 (Debian 13); the node's reason is the last field, so a '|' in
it is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DELIMITER = "|"
VERSION_ARGS = ("--version",)
PARTITION_ARGS = ("--noheader", "--format=%P|%a")  # name (default marked '*') | availability
NODE_ARGS = ("--noheader", "--Node", "--format=%N|%P|%T|%G|%E")  # one line per node and partition
# States in which a node runs jobs; `+` joins states in some versions (mixed+planned).
READY = frozenset({"idle", "mixed", "allocated", "alloc", "completing", "planned", "reserved", "mix"})
# What sinfo's suffixes of a state mean (man sinfo, NODE STATE CODES), where it matters.
_SUFFIXES = {"*": "not responding", "~": "powered off", "#": "powering up", "%": "powering down",
             "!": "pending power down", "$": "in a maintenance reservation", "@": "pending reboot",
             "^": "rebooting", "-": "planned by the backfill scheduler"}
_READY_SUFFIXES = {"~", "#", "-", "$"}  # Slurm still starts jobs there (powers it up, ...)


@dataclass
class Partition:
    name: str
    available: str  # up, down, drain, inact
    default: bool


@dataclass
class NodeState:
    name: str
    state: str  # as sinfo says it, suffix included: idle, drained, down*, mixed~
    gres: str  # as sinfo says it: gpu:2, gpu:a100:4(S:0-1), (null)
    reason: str | None
    partitions: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return gpu_count(self.gres)

    @property
    def problem(self) -> str | None:
        """Why no job starts here, or None."""
        base, suffix = split_state(self.state)
        if base and all(part in READY for part in base.split("+")) and suffix in _READY_SUFFIXES | {""}:
            return None
        what = f"{base or '?'}" + (f", {_SUFFIXES.get(suffix, suffix)}" if suffix else "")
        return f"node {self.name} is {what}" + (f": Slurm's reason: {self.reason}" if self.reason else "")


def split_state(state: str) -> tuple[str, str]:
    """"down*" -> ("down", "*")."""
    m = re.fullmatch(r"([a-z_+]*)(.*)", state.strip().lower())
    return (m.group(1), m.group(2)) if m else ("", state)


def gpu_count(gres: str) -> int:
    """GPUs in sinfo's Gres: "gpu:2", "gpu:a100:2(S:0-1),gpu:v100:1", "gpu:4,shard:8",
    "(null)". The socket lists in brackets go first (they may hold commas)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_partitions(text: str) -> list[Partition]:
    out = []
    for line in text.splitlines():
        name, _, available = line.strip().partition(DELIMITER)
        if name:
            out.append(Partition(name.rstrip("*"), available.strip(), name.endswith("*")))
    return out


def parse_nodes(text: str) -> list[NodeState]:
    """One NodeState per node, with every partition it is in."""
    nodes: dict[str, NodeState] = {}
    for line in text.splitlines():
        fields = line.strip().split(DELIMITER, 4)
        if len(fields) != 5 or not fields[0]:
            continue
        name, partition, state, gres, reason = fields
        reason = reason.strip()
        node = nodes.setdefault(name, NodeState(name, state.strip(), gres.strip(),
                                                None if reason.lower() in ("", "none", "(null)") else reason))
        if partition.rstrip("*") not in node.partitions:
            node.partitions.append(partition.rstrip("*"))
    return list(nodes.values())


def used_partitions(partitions: list[Partition], configured: list[str]) -> tuple[list[str], list[str]]:
    """(the partitions servers will use, what is wrong with them). `configured`: the
    non-empty partition names of [cluster] and the profiles, "" meaning Slurm's default."""
    names = {p.name: p for p in partitions}
    problems, used = [], []
    for wanted in dict.fromkeys(configured or [""]):
        if wanted == "":
            default = next((p for p in partitions if p.default), None)
            if default is None:
                problems.append('[cluster] partition is "" (Slurm\'s default), and this cluster has no default '
                                "partition: set Default=YES on one in slurm.conf, or name one in [cluster] partition")
                continue
            wanted = default.name
        if wanted not in names:
            problems.append(f"partition {wanted!r} of appliance.toml is not a partition of this cluster; it has: "
                            + (", ".join(names) or "none"))
            continue
        used.append(wanted)
        if names[wanted].available != "up":
            problems.append(f"partition {wanted} is {names[wanted].available}, not up: no job starts there")
    return used, problems


def node_problems(nodes: list[NodeState], partitions: list[str]) -> list[str]:
    """What is wrong with the nodes of the given partitions."""
    problems = []
    for node in nodes:
        if not set(node.partitions) & set(partitions):
            continue
        if node.problem:
            problems.append(node.problem)
        if node.gpus == 0:
            problems.append(f"node {node.name} has no gpu gres: servers with GPUs never start there (Gres=gpu:N on "
                            "its NodeName line in slurm.conf, and its GPUs in gres.conf)")
    return problems
