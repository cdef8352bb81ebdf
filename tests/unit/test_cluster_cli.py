"""`applctl cluster init | inventory | check` as an administrator meets them: the files
init writes and where it refuses, and what check says from sinfo's answers (a stand-in
sinfo prints outputs captured from Slurm 22.05; tests/unit/test_cluster_state.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from appliance import config
from appliance.cli import cluster
from appliance.cluster import slurm_conf

from .cli_run import run
from .fake_nvml_fixture import FakeGPU, fake_nvml, fake_nvml_library  # noqa: F401


@pytest.fixture
def cfgfile(tmp_path, monkeypatch):
    path = tmp_path / "appliance.toml"
    path.write_text("")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    return path


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("SUDO_UID", raising=False)
    if os.getuid() != 0:  # the temporary directories are not root's: only root's own check is left out
        monkeypatch.setattr(cluster.root_only, "replaceable", lambda paths, itself: None)


@pytest.fixture
def head(monkeypatch):
    monkeypatch.setattr(cluster, "short_hostname", lambda: "head")


def init(capsys, out, *args):
    return run(capsys, "cluster", "init", "--output", str(out), *args)


def test_init_writes_the_three_files_and_says_what_is_next(capsys, tmp_path, cfgfile, as_root, head):
    inv = tmp_path / "gpu1.json"
    inv.write_text(json.dumps(slurm_conf.inventory("gpu1", 32, 128 * 1024 * 1024,
                                                   [{"minor": 0, "uuid": "GPU-a", "name": "A100"}])))
    out = tmp_path / "slurm"
    code, stdout, err = init(capsys, out, "--nodes", "gpu1,gpu2", "--gpus", "gpu2=4", "--inventory", str(inv))
    assert (code, err) == (0, "")
    assert sorted(os.listdir(out)) == ["cgroup.conf", "gres.conf", "slurm.conf"]
    for name in os.listdir(out):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    slurm = (out / "slurm.conf").read_text()
    assert "SlurmctldHost=head\n" in slurm and "PartitionName=gpu Nodes=gpu1,gpu2 " in slurm
    assert f"NodeName=gpu1 CPUs=32 RealMemory={128 * 1024 * 95 // 100} Gres=gpu:1 State=UNKNOWN" in slurm
    assert "NodeName=gpu2 Gres=gpu:4 State=UNKNOWN" in slurm
    assert "NodeName=gpu2 Name=gpu File=/dev/nvidia3" in (out / "gres.conf").read_text()
    lines = stdout.splitlines()
    assert lines[:2] == [f"wrote {out}/slurm.conf, {out}/gres.conf, {out}/cgroup.conf",
                         "controller head, partition gpu: gpu1 (1 GPU), gpu2 (4 GPUs)"]
    for says in ("mounts the head's /home (NFS)", "apt-get install slurm-wlm munge",
                 "chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key",
                 f"ssh gpu1 mkdir -p /etc/slurm && scp {out}/slurm.conf {out}/gres.conf {out}/cgroup.conf "
                 "gpu1:/etc/slurm/", "systemctl enable slurmd && systemctl restart slurmd",
                 "the node package (jupyterhub-appliance-node) does not exist yet", "applctl cluster check",
                 "note: gpu2's GPUs are taken to be /dev/nvidia0..N-1"):
        assert says in stdout, says
    assert "note: gpu1" not in stdout


def test_init_takes_the_partition_and_controller_it_is_given(capsys, tmp_path, cfgfile, as_root, head):
    cfgfile.write_text('[cluster]\npartition = "lab"\n')
    code, stdout, _ = init(capsys, tmp_path / "s", "--nodes", "gpu1", "--gpus", "gpu1=2", "--controller", "ctl",
                           "--json")
    data = json.loads(stdout)
    assert code == 0 and (data["controller"], data["partition"]) == ("ctl", "lab")
    assert "SlurmctldHost=ctl\n" in (tmp_path / "s/slurm.conf").read_text()


def test_init_never_overwrites_without_force_and_never_follows_a_link(capsys, tmp_path, cfgfile, as_root, head):
    out = tmp_path / "slurm"
    out.mkdir()
    (out / "gres.conf").write_text("mine\n")
    code, stdout, err = init(capsys, out, "--nodes", "gpu1", "--gpus", "gpu1=1")
    assert code == 1 and stdout == ""
    assert err == (f"applctl: {out}/gres.conf already exists: compare them with what this would write, or give "
                   "--force to replace them; nothing written\n")
    assert os.listdir(out) == ["gres.conf"] and (out / "gres.conf").read_text() == "mine\n"
    # --force replaces a link in the file's place; what it pointed to is untouched
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (out / "slurm.conf").symlink_to(victim)
    assert init(capsys, out, "--nodes", "gpu1", "--gpus", "gpu1=1", "--force")[0] == 0
    assert victim.read_text() == "keep\n" and not (out / "slurm.conf").is_symlink()
    assert "Gres=gpu:1" in (out / "slurm.conf").read_text()
    # the directory itself a link: refused
    link = tmp_path / "link"
    link.symlink_to(out)
    code, _, err = init(capsys, link, "--nodes", "gpu1", "--gpus", "gpu1=1", "--force")
    assert code == 1 and f"--output {link}: {link} is a link: root does not write through links" in err


@pytest.mark.parametrize("args, says", [
    (["--nodes", "gpu1,gpu1", "--gpus", "gpu1=1"], "names a node twice"),
    (["--nodes", "gpu[1-2]", "--gpus", "gpu1=1"], "--nodes: the node 'gpu[1-2]' is not accepted: a short host name"),
    (["--nodes", "gpu1", "--gpus", "gpu1=many"], "--gpus 'gpu1=many' is not accepted: NODE=COUNT pairs"),
    (["--nodes", "gpu1,gpu2", "--gpus", "gpu1=1"], "how many GPUs has gpu2?"),
    (["--nodes", "gpu1", "--gpus", "gpu1=1", "--controller", "head.lab.org"], "--controller 'head.lab.org' is not"),
    (["--nodes", "gpu1", "--inventory", "/nonexistent.json"], "--inventory /nonexistent.json: cannot read it"),
])
def test_init_refuses_bad_input_in_one_line(capsys, tmp_path, cfgfile, as_root, head, args, says):
    code, stdout, err = init(capsys, tmp_path / "s", *args)
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1, err
    assert err.startswith("applctl: ") and says in err
    assert not (tmp_path / "s").exists()


def test_init_is_root_only_and_not_for_sudo(capsys, tmp_path, cfgfile, as_root, head, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "1234")
    code, _, err = init(capsys, tmp_path / "s", "--nodes", "gpu1", "--gpus", "gpu1=1")
    assert code == 1 and "only root may run it (a root login, not sudo applctl); nothing written" in err
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = init(capsys, tmp_path / "s", "--nodes", "gpu1", "--gpus", "gpu1=1")
    assert code == 1 and "cluster init needs root" in err
    assert not (tmp_path / "s").exists()


def test_inventory_json_is_what_init_reads(capsys, fake_nvml, monkeypatch):  # noqa: F811
    fake_nvml.write([FakeGPU(0, minor=3), FakeGPU(1, minor=1)])
    monkeypatch.setattr(cluster, "short_hostname", lambda: "gpu7")
    code, stdout, _ = run(capsys, "cluster", "inventory", "--json")
    data = json.loads(stdout)
    assert code == 0 and data["node"] == "gpu7" and data["cpus"] == os.cpu_count()
    assert slurm_conf.node_from_inventory(data, "-").gpu_minors == (1, 3)
    code, stdout, _ = run(capsys, "cluster", "inventory")
    assert "NodeName=gpu7 Name=gpu File=/dev/nvidia1\nNodeName=gpu7 Name=gpu File=/dev/nvidia3" in stdout


@pytest.fixture
def sinfo(tmp_path, monkeypatch):
    """A stand-in sinfo: answers[ARGS] = (exit status, output)."""
    answers = {}

    def write():
        lines = ["#!/bin/sh", 'case "$*" in']
        for args, (code, text) in answers.items():
            lines += [f'"{args}") printf %s \'{text}\'; exit {code};;']
        lines += ["esac", "exit 99"]
        script.write_text("\n".join(lines) + "\n")

    script = tmp_path / "sinfo"
    script.touch(mode=0o755)
    monkeypatch.setattr(cluster, "tool", lambda name: str(script))
    answers.update({"--version": (0, "slurm-wlm 22.05.8\n"), "--noheader --format=%P|%a": (0, "gpu*|up\n"),
                    "--noheader --Node --format=%N|%P|%T|%G|%E": (0, "vm|gpu*|idle|gpu:2|none\n")})
    answers["write"] = write
    return answers


def check(capsys, sinfo, *args):
    sinfo.pop("write")()
    return run(capsys, "cluster", "check", *args)


def test_check_reports_nodes_and_gpus(capsys, cfgfile, sinfo):
    code, stdout, _ = check(capsys, sinfo)
    assert code == 0
    assert stdout.splitlines()[:4] == ["Slurm answers (slurm-wlm 22.05.8); servers use partition gpu",
                                       "partitions: gpu (up, default)", "NODE  PARTITIONS  STATE  GPUS  REASON",
                                       "vm    gpu         idle   2     -"]
    assert "ok: no problem found" in stdout and "not checked yet: whether the user environment is installed" in stdout


def test_check_names_a_missing_partition_and_a_drained_node(capsys, cfgfile, sinfo):
    cfgfile.write_text('[cluster]\npartition = "gpus"\n[profiles.x]\ndisplay_name = "x"\npartition = "gpu"\n')
    sinfo["--noheader --Node --format=%N|%P|%T|%G|%E"] = (0, "vm|gpu*|drained|(null)|GPU 1 fell off the bus\n")
    code, stdout, _ = check(capsys, sinfo, "--json")
    data = json.loads(stdout)
    assert code == 1 and data["used_partitions"] == ["gpu"]
    assert data["problems"] == [
        "partition 'gpus' of appliance.toml is not a partition of this cluster; it has: gpu",
        "node vm is drained: Slurm's reason: GPU 1 fell off the bus",
        "node vm has no gpu gres: servers with GPUs never start there (Gres=gpu:N on its NodeName line in "
        "slurm.conf, and its GPUs in gres.conf)"]


@pytest.mark.parametrize("answers, says", [
    ({"--version": (1, "sinfo: fatal: Could not establish a configuration source\n")},
     "problem: Slurm has no configuration on this host (sinfo: fatal: Could not establish a configuration source)"),
    ({"--noheader --format=%P|%a": (1, "slurm_load_partitions: Unable to contact slurm controller (connect "
                                       "failure)\n")},  # captured, after about 9 s
     "problem: slurmctld does not answer: slurm_load_partitions: Unable to contact slurm controller (connect "
     "failure); is it running on the controller"),
])
def test_check_says_why_slurm_does_not_answer(capsys, cfgfile, sinfo, answers, says):
    sinfo.update(answers)
    code, stdout, _ = check(capsys, sinfo)
    assert code == 1 and stdout.startswith(says)


def test_check_without_slurm_installed(capsys, cfgfile, monkeypatch, tmp_path):
    monkeypatch.setattr(cluster, "tool", lambda name: str(tmp_path / "no-sinfo"))
    code, stdout, _ = run(capsys, "cluster", "check")
    assert code == 1
    assert stdout == ("problem: slurm-wlm is not installed on this host (no sinfo in /usr/sbin:/usr/bin:/sbin:/bin): "
                      "apt-get install slurm-client (or slurm-wlm on the head)\n")


def test_init_refuses_a_directory_someone_but_root_could_change(capsys, tmp_path, cfgfile, as_root, head,
                                                                monkeypatch):
    """Root writes there: a directory (or one above it) that another uid could change
    is refused before anything is written (root_only.replaceable decides; its own
    tests are in test_root_only)."""
    out = tmp_path / "slurm"
    monkeypatch.setattr(cluster.root_only, "replaceable",
                        lambda paths, itself: (tmp_path, "owned by uid 1000, not root") if itself else None)
    code, stdout, err = init(capsys, out, "--nodes", "gpu1", "--gpus", "gpu1=1")
    assert code == 1 and stdout == ""
    assert err == (f"applctl: --output {out}: {tmp_path} is owned by uid 1000, not root: only root may be able to "
                   "change where Slurm's configuration goes; nothing written\n")
    assert not out.exists()


def test_init_never_reads_an_inventory_through_a_link(capsys, tmp_path, cfgfile, as_root, head):
    real = tmp_path / "real.json"
    real.write_text(json.dumps(slurm_conf.inventory("gpu1", 32, 128 * 1024 * 1024,
                                                    [{"minor": 0, "uuid": "GPU-a", "name": "A100"}])))
    link = tmp_path / "gpu1.json"
    link.symlink_to(real)
    out = tmp_path / "slurm"
    code, stdout, err = init(capsys, out, "--nodes", "gpu1", "--inventory", str(link))
    assert code == 1 and stdout == "" and not out.exists()
    assert f"--inventory {link}: it is a link; root does not read through links" in err and str(real) in err
