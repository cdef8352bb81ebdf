"""MIG devices as allocatable GPUs, on the booted appliance with the fake NVML.

The fake puts one GPU (NVML index 3, minor 1) in MIG mode with two 1g.10gb MIG
devices. What the driver would add is made by hand, as TESTING.md does for GPUs:
the nvidia-caps device nodes (fake majors, so an open that the device cgroup lets
through answers ENXIO, and one it refuses answers EPERM), and the driver's
/proc/driver/nvidia-caps/mig-minors, bound into the daemon's view of /proc by a
drop-in (the appliance itself reads the real path).
"""

from __future__ import annotations

import re
import threading

import pytest
import requests
from booted import TOP
from browser import Browser, login
from gpus import GPUS, PASSWORD, UUID, api_status, holders, install_fake_gpus, opens, report, spawn, wait_until

MIG_GPU = 3  # NVML index; its minor is 1
MINOR = dict(GPUS)[MIG_GPU]
MIGS = {"MIG-00000000-0000-0000-0000-0000000000a1": (1, 39, 40),  # uuid: GPU instance, its caps minors
        "MIG-00000000-0000-0000-0000-0000000000a2": (2, 48, 49)}
PEOPLE = ["mig1", "mig2", "mig3"]
CAPS_MAJOR = 508  # none of the fake majors of gpus.py


def nvml() -> str:
    lines = ["driver 550.54.14"]
    for index, minor in GPUS:
        lines.append(f"gpu index={index} minor={minor} uuid={UUID.format(index)} name=NVIDIA_A100-SXM4-80GB "
                     f"mem_total={80 * 2**30} pci=00000000:0{index + 1}:00.0 mig={int(index == MIG_GPU)}")
    lines += [f"mig gpu={MIG_GPU} gi={gi} ci=0 profile=1g.10gb uuid={uuid} mem_total={10 * 2**30}"
              for uuid, (gi, _, _) in MIGS.items()]
    return "\n".join(lines) + "\n"


def mig_minors() -> str:
    lines = ["config 1", "monitor 2"]
    for gi, gi_cap, ci_cap in MIGS.values():
        lines += [f"gpu{MINOR}/gi{gi}/access {gi_cap}", f"gpu{MINOR}/gi{gi}/ci0/access {ci_cap}"]
    return "\n".join(lines) + "\n"


def caps_access(b: Browser, name: str) -> dict:
    """From inside the user's server: what opening each nvidia-caps file gives, by minor."""
    caps = sorted(c for _, g, ci in MIGS.values() for c in (g, ci)) + [1, 2]
    data = opens(b, name, [f"/dev/nvidia-caps/nvidia-cap{c}" for c in caps])
    data["caps"] = {int(p.rsplit("nvidia-cap", 1)[1]): v for p, v in data.pop("dev").items()}
    return data


@pytest.fixture(scope="module")
def mig(appliance, tmp_path_factory):
    app = appliance
    app.sh("applctl stop --all >/dev/null")
    install_fake_gpus(app, tmp_path_factory, nvml())
    app.ct.write("/etc/fake-nvidia-caps/mig-minors", mig_minors())
    minors = sorted({1, 2} | {c for _, g, ci in MIGS.values() for c in (g, ci)})
    app.sh("mkdir -p -m 755 /dev/nvidia-caps; " + "".join(
        f"[ -e /dev/nvidia-caps/nvidia-cap{m} ] || mknod -m 444 /dev/nvidia-caps/nvidia-cap{m} c {CAPS_MAJOR} {m}; "
        for m in minors))
    app.ct.write("/etc/systemd/system/jupyterhub-appliance.service.d/fake-mig.conf",
                 "[Service]\nTemporaryFileSystem=/proc/driver\n"
                 "BindReadOnlyPaths=/etc/fake-nvidia-caps:/proc/driver/nvidia-caps\n")
    app.sh("".join(f"id {n} >/dev/null 2>&1 || useradd -m {n}; echo {n}:{PASSWORD} | chpasswd; "
                   f"applctl adduser {n} >/dev/null\n" for n in PEOPLE) + "applctl admin add mig3 >/dev/null")
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text(
        "[gpu]\nquota = 1\nsample_interval = 1\n"
        "[profiles.slice]\ndisplay_name = \"A MIG slice\"\ngpus = 1\nmig = \"1g.10gb\"\n"
        "[profiles.whole]\ndisplay_name = \"A whole GPU\"\ngpus = 1\n"))
    app.sh("systemctl daemon-reload && systemctl stop jupyterhub-appliance.service && applctl reload >/dev/null")
    app.wait_hub()
    yield app
    app.sh("applctl stop --all >/dev/null; applctl admin remove mig3 >/dev/null", check=False)
    app.sh("rm -f /etc/systemd/system/jupyterhub-appliance.service.d/fake-mig.conf", check=False)
    app.ct.write("/etc/jupyterhub/appliance.toml", app.config_text())
    app.sh("systemctl daemon-reload && systemctl stop jupyterhub-appliance.service && applctl reload", check=False)
    app.wait_hub()


def test_a_gpu_in_mig_mode_is_listed_as_its_mig_devices(mig):
    gpus = {g["uuid"]: g for g in report(mig)["gpus"]}
    assert UUID.format(MIG_GPU) not in gpus  # the parent is not allocatable itself
    assert report(mig)["unusable"] == []
    for uuid, (_, gi_cap, ci_cap) in MIGS.items():
        g = gpus[uuid]
        assert (g["profile"], g["parent"], g["caps"], g["minor"]) == ("1g.10gb", UUID.format(MIG_GPU),
                                                                      [gi_cap, ci_cap], MINOR)
        assert g["name"] == "NVIDIA A100-SXM4-80GB MIG 1g.10gb" and g["memory_total"] == 10 * 2**30
    out = mig.sh("applctl gpus").stdout
    assert {line.split()[0] for line in out.splitlines() if "MIG 1g.10gb" in line} == {"3.0", "3.1"}, out


def test_two_people_get_different_mig_devices_and_cannot_open_each_others(mig):
    b1, ready, messages = spawn(mig, "mig1", {"profile": "slice"})
    assert ready, messages
    b2, ready, messages = spawn(mig, "mig2", {"profile": "slice"})
    assert ready, messages
    held = holders(mig)
    mine = {name: next(u for u, h in held.items() if h == name) for name in ("mig1", "mig2")}
    assert sorted(mine.values()) == sorted(MIGS), held  # one each, both MIG devices, no whole GPU
    allow = mig.unit_props("jupyter-mig1.service", "DeviceAllow")["DeviceAllow"]
    _, gi_cap, ci_cap = MIGS[mine["mig1"]]
    assert f"/dev/nvidia{MINOR} rw" in allow and f"/dev/nvidia-caps/nvidia-cap{gi_cap} rw" in allow, allow

    for name, b in (("mig1", b1), ("mig2", b2)):
        _, gi_cap, ci_cap = MIGS[mine[name]]
        got = caps_access(b, name)
        assert got["cuda"] == mine[name]
        # Its own instance's two files pass the device cgroup (ENXIO: no driver behind
        # the fake node); the other's, and the config and monitor files, do not.
        assert {c for c, r in got["caps"].items() if r == "ENXIO"} == {gi_cap, ci_cap}, got
        assert all(r == "EPERM" for c, r in got["caps"].items() if c not in (gi_cap, ci_cap)), got

    # The admins' dashboard and the metrics show each MIG device with its holder.
    shown = {g["uuid"]: g for g in api_status(login(mig, "mig3", PASSWORD)).json()["gpus"]}
    assert {u: (shown[u]["holder"], shown[u]["profile"]) for u in MIGS} == {
        u: (name, "1g.10gb") for name, u in mine.items()}

    def both_held_in_metrics() -> bool:
        held = [line for line in requests.get(f"http://127.0.0.1:{mig.metrics_port}/metrics", timeout=30)
                .text.splitlines() if line.startswith("appliance_gpu_held{") and line.endswith("} 1.0")]
        return all(any(all(f'{k}="{v}"' in line for k, v in (("UUID", u), ("GPU_I_PROFILE", "1g.10gb"),
                                                               ("user", name))) for line in held)
                   for name, u in mine.items())
    wait_until("both MIG devices held, in the metrics", both_held_in_metrics)


def test_a_slice_profile_waits_for_a_slice_while_whole_gpus_are_free(mig):
    freed = next(u for u, h in holders(mig).items() if h == "mig1")
    b = login(mig, "mig3", PASSWORD)
    threading.Thread(target=b.spawn_with_form, args=("mig3", {"profile": "slice"}), daemon=True).start()
    wait_until("mig3 in the queue", lambda: "mig3" in [q["user"] for q in report(mig)["queue"]])
    assert [u for u, h in holders(mig).items() if h is None] == [UUID.format(i) for i in (0, 1, 2)]
    mig.sh("applctl stop mig1 >/dev/null")
    b.wait_for_server("mig3")
    assert holders(mig)[freed] == "mig3"


def test_real_gpu_check_runs_through_a_kernel_and_finds_other_devices_refused(mig):
    # scripts/real-gpu-check is for a real GPU; with the fake one it still shows its
    # own part: the server, a kernel run as its user, the other devices' files refused.
    for name in ("real-gpu-check", "real_gpu_check.py"):
        mig.ct.copy_in(TOP / "scripts" / name, f"/root/rgc/scripts/{name}")
    r = mig.sh("/root/rgc/scripts/real-gpu-check --user mig2 --profile slice", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mig2's server holds: MIG-" in r.stdout and "CUDA_VISIBLE_DEVICES=MIG-" in r.stdout, r.stdout
    assert re.search(r"other GPUs' files: \d+ tried, all refused \(EPERM\)", r.stdout), r.stdout
    assert "libcuda.so.1 not loadable" in r.stdout  # no driver here: no CUDA
    assert "mig2's server stopped" in r.stdout and not holders(mig).get("mig2")
