"""A one-machine Slurm cluster on the booted appliance (issue 31's foundation): Debian's
slurm-wlm, configured by `applctl cluster init` from the node's own inventory (the
fake NVML's four GPUs and their device files), and `applctl cluster check` on what
the real slurmctld and slurmd say.

One change to init's files, for this container only: slurmd with cgroup v2 dies here
("Hybrid mode is not supported": /proc/PID/cgroup inside the container also lists the
host's v1 hierarchies; TESTING.md), even with proctrack/linuxproc and task/none as
long as its cgroup plugin loads. So the test runs it with ProctrackType=
proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/linux and
CgroupPlugin=disabled (Slurm 24.11). Device confinement by Slurm is not proven here:
that needs the real-kernel VM tier, or TESTING.md's LD_PRELOAD.
"""

from __future__ import annotations

import json
import time

import pytest
from booted import HUB_PY
from gpus import GPUS, fake_config, install_fake_gpus

INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge"
# Debian 13's slurmd starts at install and, with no slurm.conf yet, holds apt for its
# 90 s start timeout: nothing starts during the install (policy-rc.d), ~7 s instead.
NO_START = "/usr/sbin/policy-rc.d"
CONTAINER_ONLY = ("-e 's#^ProctrackType=.*#ProctrackType=proctrack/linuxproc#' -e 's#^TaskPlugin=.*#TaskPlugin=task/none#' "
                  "-e 's#^JobAcctGatherType=.*#JobAcctGatherType=jobacct_gather/linux#'")


def check(app, toml_extra: str = "") -> tuple[int, dict]:
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(toml_extra))
    proc = app.sh("applctl cluster check --json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def wait_node(app, node: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        said = app.sh(f"sinfo --noheader --Node --nodes={node} --format=%T", check=False)
        if said.stdout.strip() == state:
            return
        assert time.monotonic() < deadline, (
            f"{node} is not {state} after {timeout} s: {said.stdout}{said.stderr}\n"
            + app.sh("journalctl -u slurmctld -u slurmd -n 30 --no-pager", check=False).stdout)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(appliance, tmp_path_factory):
    app = appliance
    install_fake_gpus(app, tmp_path_factory, fake_config())
    app.sh(f"test ! -e {NO_START} && printf '#!/bin/sh\\nexit 101\\n' > {NO_START} && chmod 755 {NO_START}")
    try:
        if app.sh(INSTALL, check=False).returncode != 0:  # the base's package lists may be older than the archive
            app.sh(f"apt-get update -q && {INSTALL}")
    finally:
        app.sh(f"rm {NO_START}")
    node = app.sh("hostname -s").stdout.strip()
    app.sh(f"grep -q ' {node}$' /etc/hosts || echo '127.0.0.1 {node}' >> /etc/hosts")  # it does not resolve here
    # The node's inventory, as an administrator runs it on each node. The fake NVML
    # needs FAKE_NVML_CONFIG, which applctl's entry point drops: applctl's module instead.
    app.sh(f"FAKE_NVML_CONFIG=/etc/fake-nvml.conf {HUB_PY} -m appliance.applctl cluster inventory --json "
           f"> /root/{node}.json")
    init = app.sh(f"applctl cluster init --nodes {node} --inventory /root/{node}.json")
    app.sh(f"cp /etc/slurm/slurm.conf /root/slurm.conf.init && sed -i {CONTAINER_ONLY} /etc/slurm/slurm.conf && "
           "cp /etc/slurm/cgroup.conf /root/cgroup.conf.init && echo CgroupPlugin=disabled >> /etc/slurm/cgroup.conf")
    app.sh("systemctl restart munge && systemctl restart slurmctld slurmd")
    try:
        wait_node(app, node, "idle")
        yield app, node, init.stdout
    finally:
        app.sh("systemctl stop slurmd slurmctld", check=False)
        app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())


def test_init_writes_slurms_files_from_the_nodes_inventory(cluster):
    app, node, said = cluster
    inventory = json.loads(app.sh(f"cat /root/{node}.json").stdout)
    assert sorted(g["minor"] for g in inventory["gpus"]) == sorted(m for _, m in GPUS)
    slurm = app.sh("cat /root/slurm.conf.init").stdout.splitlines()
    assert f"SlurmctldHost={node}" in slurm and "ProctrackType=proctrack/cgroup" in slurm
    assert (f"NodeName={node} CPUs={inventory['cpus']} RealMemory={inventory['memory_mb']} Gres=gpu:4 "
            "State=UNKNOWN") in slurm
    assert app.sh("stat -c '%U %a' /etc/slurm/gres.conf /etc/slurm/cgroup.conf").stdout.split() == ["root", "644"] * 2
    assert "ConstrainDevices=yes" in app.sh("cat /root/cgroup.conf.init").stdout
    assert said.startswith("wrote /etc/slurm/slurm.conf, /etc/slurm/gres.conf, /etc/slurm/cgroup.conf\n")
    assert "chmod 0400 /etc/munge/munge.key" in said and "does not exist yet" in said
    again = app.sh(f"applctl cluster init --nodes {node} --gpus {node}=4", check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("applctl: /etc/slurm/slurm.conf, /etc/slurm/gres.conf, /etc/slurm/cgroup.conf "
                                   "already exist: compare them")


def test_check_reports_the_node_and_its_gpus(cluster):
    app, node, _ = cluster
    code, report = check(app)
    assert code == 0 and report["problems"] == [], report
    assert report["answers"] and report["used_partitions"] == ["gpu"]
    assert [(n["name"], n["state"], n["gpus"]) for n in report["nodes"]] == [(node, "idle", 4)]
    text = app.sh("applctl cluster check").stdout
    assert "ok: no problem found" in text and "not checked yet: whether the user environment" in text


def test_check_names_a_missing_partition_and_a_drained_node(cluster):
    app, node, _ = cluster
    code, report = check(app, '[cluster]\npartition = "gpus"\n')
    assert code == 1 and report["problems"] == [
        "partition 'gpus' of appliance.toml is not a partition of this cluster; it has: gpu"]
    app.sh(f"scontrol update nodename={node} state=drain reason='GPU 3 fell off the bus'")
    try:
        code, report = check(app)
        assert code == 1 and report["problems"] == [f"node {node} is drained: Slurm's reason: GPU 3 fell off the bus"]
    finally:
        app.sh(f"scontrol update nodename={node} state=resume")
    wait_node(app, node, "idle")


def test_check_when_slurmctld_is_down(cluster):
    app, node, _ = cluster
    app.sh("systemctl stop slurmctld")
    try:
        code, report = check(app)
        assert code == 1 and not report["answers"]
        assert report["problems"][0].startswith("slurmctld does not answer: ")
    finally:
        app.sh("systemctl start slurmctld")
    wait_node(app, node, "idle")
