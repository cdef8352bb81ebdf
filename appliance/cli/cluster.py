"""`applctl cluster`: several GPU machines through Slurm ([cluster]; docs/configuration.md).

`inventory` prints what a node has (CPUs, memory, GPUs from NVML), for the head.
`init` writes a first slurm.conf, gres.conf and cgroup.conf (appliance/cluster/
slurm_conf.py makes them) and says what the administrator does next; root only, not
`sudo applctl`: Slurm's configuration decides what runs as root on every node.
`check` asks Slurm (sinfo) which partitions and nodes it has, and says what stops
servers from running there (appliance/cluster/slurm_state.py reads the answers).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import click

from .. import files, privilege, root_only
from ..cluster import slurm_conf, slurm_state
from ..cluster.slurm_conf import ClusterConfError
from ..gpu.inventory import read_inventory
from ..tools import SAFE_PATH, tool
from .common import load_config
from .output import Failure, emit, example, json_option, need_root, note, table

SLURM_DIR = Path("/etc/slurm")
DEFAULT_PARTITION = "gpu"
SINFO_TIMEOUT = 30  # sinfo retries an unreachable slurmctld for about 10 s before it gives up
NOT_CHECKED = ("not checked yet: whether the user environment is installed on every node (that needs the node "
               "package, which does not exist yet)")


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


@click.group(name="cluster")
def cluster_group() -> None:
    """Several GPU machines through Slurm ([cluster] in appliance.toml).

    \b
    Example:
      applctl cluster inventory --json > gpu1.json     # on each node
      sudo applctl cluster init --nodes gpu1,gpu2 --inventory gpu1.json --inventory gpu2.json
      applctl cluster check
    """


def memory_total_kb(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise Failure(f"{meminfo} has no MemTotal line")


@cluster_group.command()
@click.option("--node", metavar="NAME", help="this node's name in Slurm (default: its short host name)")
@json_option
@example("applctl cluster inventory\napplctl cluster inventory --json > $(hostname -s).json")
def inventory(node: str | None, as_json: bool) -> None:
    """What this machine gives Slurm as a node: its CPUs, memory and GPUs (NVML).

    Run it on each node; `--json` writes the file `applctl cluster init --inventory`
    reads on the head. Whole GPUs only: MIG devices are left out.
    """
    try:
        name = slurm_conf.check_host(node or short_hostname(), "--node" if node else "this host's name")
    except ClusterConfError as e:
        raise Failure(f"{e}; give --node NAME") from None
    inv = read_inventory()
    gpus = [{"minor": g.minor, "uuid": g.uuid, "name": g.name} for g in inv.gpus if g.parent is None]
    if not inv.available:
        note(f"no GPUs: {inv.reason}")
    data = slurm_conf.inventory(name, os.cpu_count() or 1, memory_total_kb(), gpus)
    node_conf = slurm_conf.Node(name, tuple(sorted(g["minor"] for g in gpus)))
    human = "\n".join([f"node {name}: {data['cpus']} CPUs, RealMemory {data['memory_mb']} MB, {len(gpus)} GPU(s)"]
                      + [f"  /dev/nvidia{g['minor']}  {g['uuid']}  {g['name']}" for g in gpus]
                      + ["its gres.conf lines:"] + (slurm_conf.gres_lines(node_conf) or ["  (none: no GPU)"]))
    emit(as_json, data, human)


def read_inventories(paths: tuple[str, ...]) -> list[slurm_conf.Node]:
    nodes = []
    for path in paths:
        try:
            # Root reads it: never through a link (in /tmp, say, another user's).
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as f:
                data = json.loads(f.read(1 << 20))
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Failure(f"--inventory {path}: it is a link; root does not read through links: give the "
                              f"file it leads to ({os.path.realpath(path)}); nothing written") from None
            raise Failure(f"--inventory {path}: cannot read it ({e.strerror})") from None
        except ValueError:
            data = None
        try:
            nodes.append(slurm_conf.node_from_inventory(data, path))
        except ClusterConfError as e:
            raise Failure(str(e)) from None
    return nodes


def check_output_dir(directory: Path) -> None:
    """Root writes there: the directory (or, if it is to be made, its parent) must not
    be a link, and nobody but root may change it or a directory above it (a rename
    there would send the files elsewhere)."""
    given = f"--output {directory}"
    target = directory if os.path.lexists(directory) else directory.parent
    try:
        st = target.lstat()
    except OSError as e:
        raise Failure(f"{given}: cannot use {target} ({e.strerror}); nothing written") from None
    if stat.S_ISLNK(st.st_mode):
        raise Failure(f"{given}: {target} is a link: root does not write through links; give the directory it "
                      f"leads to ({os.path.realpath(target)}) if that is meant; nothing written")
    if not stat.S_ISDIR(st.st_mode):
        raise Failure(f"{given}: {target} is not a directory; nothing written")
    if os.geteuid() != 0:
        return
    try:
        found = root_only.replaceable((str(target),), itself=True)
    except OSError as e:
        raise Failure(f"{given}: cannot check {e.filename} ({e.strerror}); nothing written") from None
    if found:
        raise Failure(f"{given}: {found[0]} is {found[1]}: only root may be able to change where Slurm's "
                      "configuration goes; nothing written")


def write_files(directory: Path, contents: dict[str, str], force: bool) -> list[Path]:
    """Every file or none: existing ones are refused before anything is written,
    unless --force; each is replaced whole (files.write_atomic: a link in its place
    is replaced, never followed)."""
    check_output_dir(directory)
    targets = [directory / name for name in contents]
    existing = [str(t) for t in targets if os.path.lexists(t)]
    if existing and not force:
        raise Failure(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: compare them with "
                      "what this would write, or give --force to replace them; nothing written")
    owner = (0, 0) if os.geteuid() == 0 else None
    try:
        if not os.path.lexists(directory):
            directory.mkdir(mode=0o755)
        for target, text in zip(targets, contents.values(), strict=True):
            files.write_atomic(target, text, 0o644, owner)
    except OSError as e:
        raise Failure(f"cannot write {e.filename or directory} ({e.strerror})") from None
    return targets


def next_steps(directory: Path, controller: str, nodes: list[slurm_conf.Node], guessed: list[str]) -> list[str]:
    names = [n.name for n in nodes]
    others = [n for n in names if n != controller] or ["NODE"]
    conf = " ".join(str(directory / f) for f in ("slurm.conf", "gres.conf", "cgroup.conf"))
    steps = [
        f"1. A requirement: every node mounts the head's /home (NFS), with the same accounts and uids as "
        f"{controller}: a person's server runs as them on a node and keeps its files in their home.",
        f"2. The same three files on every node, before Slurm is installed there (Debian's slurmd starts at once, "
        f"and waits 90 s for a configuration it does not have): ssh {others[0]} mkdir -p {SLURM_DIR} && scp {conf} "
        f"{others[0]}:{SLURM_DIR}/",
        f"3. On {controller} and on every node ({', '.join(names)}): apt-get install slurm-wlm munge "
        "(Debian 12: Slurm 22.05, Debian 13: 24.11; the same version everywhere).",
        f"4. The munge key, made once on {controller} (the munge package made /etc/munge/munge.key; or: mungekey "
        f"--create), copied to every node: scp /etc/munge/munge.key {others[0]}:/etc/munge/munge.key, then "
        "on each: chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key && "
        "systemctl restart munge",
        f"5. Start Slurm: on {controller}: systemctl enable slurmctld && systemctl restart slurmctld; on every "
        "node: systemctl enable slurmd && systemctl restart slurmd",
        "6. The user environment on the nodes: the node package (jupyterhub-appliance-node) does not exist yet, so "
        "servers cannot run on the nodes yet.",
        "7. Check: applctl cluster check",
    ]
    for name in guessed:
        steps.append(f"note: {name}'s GPUs are taken to be /dev/nvidia0..N-1 (--gpus), and its CPUs and memory "
                     f"are not known here: its NodeName line counts 1 CPU and memory is no consumable. Run "
                     f"`applctl cluster inventory --json` on {name} and init again with --inventory --force, or "
                     f"copy CPUs= and RealMemory= from `slurmd -C` on {name} into its line.")
    return steps


@cluster_group.command()
@click.option("--nodes", required=True, metavar="LIST", help="the compute nodes' short host names: gpu1,gpu2")
@click.option("--gpus", "gpu_counts", metavar="LIST", help="GPUs of nodes without an inventory: gpu1=2,gpu2=4")
@click.option("--inventory", "inventories", multiple=True, metavar="FILE",
              help="a node's `applctl cluster inventory --json` (repeat for each node)")
@click.option("--controller", metavar="NAME", help="the head's host name, where slurmctld runs (default: this host)")
@click.option("--output", "output", default=str(SLURM_DIR), show_default=True, metavar="DIR",
              help="where the three files go")
@click.option("--force", is_flag=True, help="replace files that exist")
@json_option
@example("sudo applctl cluster init --nodes gpu1,gpu2 --inventory gpu1.json --inventory gpu2.json\n"
         "sudo applctl cluster init --nodes gpu1,gpu2 --gpus gpu1=2,gpu2=4")
def init(nodes: str, gpu_counts: str | None, inventories: tuple[str, ...], controller: str | None, output: str,
         force: bool, as_json: bool) -> None:
    """Write a first slurm.conf, gres.conf and cgroup.conf for this host (the head,
    running slurmctld) and the compute nodes, and print what to do next.

    Each node's GPUs come from its inventory (`applctl cluster inventory --json` run
    on it) or from --gpus. One partition holds every node: [cluster] partition, or
    "gpu". Root only (a root login, not sudo applctl).
    """
    try:
        names = slurm_conf.parse_nodes(nodes)
        counts = slurm_conf.parse_gpu_counts(gpu_counts) if gpu_counts else {}
        head = slurm_conf.check_host(controller or short_hostname(),
                                     "--controller" if controller else "this host's name")
    except ClusterConfError as e:
        raise Failure(str(e) + ("" if controller else "; give --controller NAME")) from None
    directory = Path(os.path.abspath(output))
    if any(ord(c) < 32 for c in output):
        raise Failure("--output: give a directory's path, e.g. /etc/slurm")
    need_root("cluster init")
    if privilege.sudo_uid() is not None:
        raise Failure("cluster init writes Slurm's configuration, which decides what runs as root on every node, so "
                      "only root may run it (a root login, not sudo applctl); nothing written")
    try:
        node_list = slurm_conf.nodes_from(names, counts, read_inventories(inventories))
    except ClusterConfError as e:
        raise Failure(str(e)) from None
    partition = load_config()["cluster"]["partition"] or DEFAULT_PARTITION
    written = write_files(directory, slurm_conf.files(head, node_list, partition), force)
    guessed = [n.name for n in node_list if n.cpus is None]
    steps = next_steps(directory, head, node_list, guessed)
    summary = ", ".join(f"{n.name} ({len(n.gpu_minors)} GPU{'s' if len(n.gpu_minors) != 1 else ''})"
                        for n in node_list)
    emit(as_json, {"files": [str(p) for p in written], "controller": head, "partition": partition,
                   "nodes": [{"name": n.name, "gpus": len(n.gpu_minors), "cpus": n.cpus, "memory_mb": n.memory_mb}
                             for n in node_list], "next_steps": steps},
         "\n".join([f"wrote {', '.join(map(str, written))}",
                    f"controller {head}, partition {partition}: {summary}", "next:", *steps]))


def sinfo(*args: str) -> subprocess.CompletedProcess:
    """sinfo from the system's directories, with nothing of the caller's environment
    (SLURM_* variables would change what it reads)."""
    return subprocess.run([tool("sinfo"), *args], capture_output=True, text=True, timeout=SINFO_TIMEOUT,
                          env={"PATH": SAFE_PATH, "LC_ALL": "C"}, stdin=subprocess.DEVNULL, check=False)


def ask_slurm() -> tuple[dict, str | None]:
    """({version, partitions, nodes}, None) or ({}, why Slurm does not answer)."""
    def said(proc: subprocess.CompletedProcess) -> str:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else f"exit status {proc.returncode}"
    try:
        version = sinfo(*slurm_state.VERSION_ARGS)
        if version.returncode != 0:
            return {}, (f"Slurm has no configuration on this host ({said(version)}): /etc/slurm/slurm.conf, "
                        "e.g. from sudo applctl cluster init")
        parts = sinfo(*slurm_state.PARTITION_ARGS)
        if parts.returncode != 0:
            return {}, (f"slurmctld does not answer: {said(parts)}; is it running on the controller "
                        "(systemctl status slurmctld), with munge running and the same munge key here?")
        found = sinfo(*slurm_state.NODE_ARGS)
    except FileNotFoundError:
        return {}, (f"slurm-wlm is not installed on this host (no sinfo in {SAFE_PATH}): apt-get install "
                    "slurm-client (or slurm-wlm on the head)")
    except subprocess.TimeoutExpired:
        return {}, f"slurmctld does not answer: sinfo gave no answer in {SINFO_TIMEOUT} s"
    if found.returncode != 0:
        return {}, f"slurmctld does not answer: {said(found)}"
    return {"version": version.stdout.strip(), "partitions": slurm_state.parse_partitions(parts.stdout),
            "nodes": slurm_state.parse_nodes(found.stdout)}, None


@cluster_group.command()
@json_option
@example("applctl cluster check")
def check(as_json: bool) -> None:
    """Whether Slurm answers, its partitions and nodes, each node's state and GPUs,
    and what stops servers from running there; exit 1 if anything does."""
    cfg = load_config()
    answer, down = ask_slurm()
    if down:
        emit(as_json, {"answers": False, "problems": [down], "not_checked": [NOT_CHECKED]}, f"problem: {down}")
        raise SystemExit(1)
    wanted = [cfg["cluster"]["partition"]] + [p["partition"] for p in cfg["profiles"].values() if p["partition"]]
    used, problems = slurm_state.used_partitions(answer["partitions"], wanted)
    problems += slurm_state.node_problems(answer["nodes"], used)
    data = {"answers": True, "version": answer["version"], "engine": cfg["cluster"]["engine"], "used_partitions": used,
            "partitions": [{"name": p.name, "available": p.available, "default": p.default}
                           for p in answer["partitions"]],
            "nodes": [{"name": n.name, "partitions": n.partitions, "state": n.state, "gpus": n.gpus, "gres": n.gres,
                       "reason": n.reason} for n in answer["nodes"]],
            "problems": problems, "not_checked": [NOT_CHECKED]}
    human = [f"Slurm answers ({answer['version']}); servers use partition {', '.join(used) or '(none)'}",
             "partitions: " + (", ".join(f"{p.name} ({p.available}{', default' if p.default else ''})"
                                         for p in answer["partitions"]) or "none"),
             table(["NODE", "PARTITIONS", "STATE", "GPUS", "REASON"],
                   [[n.name, ",".join(n.partitions), n.state, n.gpus, n.reason] for n in answer["nodes"]])
             if answer["nodes"] else "nodes: none"]
    human += [f"problem: {p}" for p in problems] or ["ok: no problem found"]
    if cfg["cluster"]["engine"] != "slurm":
        human.append('note: cluster.engine is "local": servers start on this host, not through Slurm')
    human.append(NOT_CHECKED)
    emit(as_json, data, "\n".join(human))
    if problems:
        raise SystemExit(1)
