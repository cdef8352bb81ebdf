"""GPU device files 0660 to gpu.device_group, on the booted appliance with the fake
NVML and fake device nodes (test_4_gpu, TESTING.md).

With the driver's default 0666, a local user outside any unit (ssh, cron) opens a
GPU node: ENXIO here, the driver's answer, since no driver is behind the fake node.
Made 0660 to a group that only servers holding GPUs get, the same open is refused
(EACCES), a GPU server still opens its own GPU, and a CPU-only server has no group.
"""

from __future__ import annotations

import json

import pytest
from gpus import GPUS, PASSWORD, device_access, fake_config, install_fake_gpus, spawn

GROUP = "jupyterhub-gpu"
NODES = "/dev/nvidia[0-9]* /dev/nvidiactl"
OPEN = ("python3 -c \"import errno, os\ntry:\n    os.close(os.open('/dev/nvidia{m}', os.O_RDWR)); print('OPEN')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\"")


@pytest.fixture(scope="module")
def gpu(appliance, tmp_path_factory):
    appliance.sh("applctl stop --all >/dev/null")  # servers other modules left hold GPUs
    install_fake_gpus(appliance, tmp_path_factory, fake_config())
    appliance.ct.write("/etc/jupyterhub/appliance.toml", appliance.config_text("[gpu]\nqueue = false\n"))
    for name in ("gdev", "cdev", "plain"):
        appliance.sh(f"id {name} >/dev/null 2>&1 || useradd -m {name}; echo {name}:{PASSWORD} | chpasswd")
    appliance.sh("applctl adduser gdev >/dev/null && applctl adduser cdev >/dev/null")
    appliance.sh("systemctl daemon-reload && systemctl stop jupyterhub-appliance.service && systemctl restart jupyterhub")
    appliance.wait_hub()
    yield appliance
    appliance.sh("applctl stop --all", check=False)
    appliance.sh(f"chgrp root {NODES}; chmod 0666 {NODES}; applctl config unset gpu.device_group; "
                 "applctl deluser gdev; applctl deluser cdev", check=False)
    appliance.sh("applctl reload", check=False)
    appliance.wait_hub()


def doctor_check(app) -> dict:
    r = app.sh("applctl doctor --json", check=False)
    return next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "GPU device files")


def plain_user_opens(app, minor: int) -> str:
    """A local user with a shell (ssh, cron), outside any server's unit."""
    return app.sh(OPEN.format(m=minor), user="plain").stdout.strip()


def test_world_accessible_nodes_are_reachable_outside_the_units_and_doctor_warns(gpu):
    assert gpu.sh("stat -c %a /dev/nvidia0").stdout.strip() == "666"
    assert plain_user_opens(gpu, 0) == "ENXIO"  # past every check, to the (absent) driver
    check = doctor_check(gpu)
    assert check["ok"] and check["warning"] and "/dev/nvidia0 0666" in check["detail"], check
    assert "nvidia-device-files.conf" in check["fix"]
    assert gpu.sh("grep -c '^# options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=.* NVreg_DeviceFileMode=0660' "
                  "/usr/share/doc/jupyterhub-appliance/examples/nvidia-device-files.conf").stdout.strip() == "1"


def test_a_group_that_no_server_gets_is_refused_or_named(gpu):
    r = gpu.sh("applctl config set gpu.device_group no-such-group", check=False)
    assert r.returncode != 0 and "there is no group no-such-group" in r.stderr and "Traceback" not in r.stderr
    r = gpu.sh("applctl config set gpu.device_group sudo", check=False)
    assert r.returncode != 0 and "not one of daemon.privileged_groups" in r.stderr, r.stderr


def test_nodes_0660_to_the_device_group_reach_only_gpu_servers(gpu):
    gpu.sh(f"getent group {GROUP} >/dev/null || groupadd --system {GROUP}")
    gpu.sh(f"chgrp {GROUP} {NODES} && chmod 0660 {NODES}")
    check = doctor_check(gpu)
    assert not check["ok"] and "gpu.device_group is not set" in check["detail"], check
    gpu.sh(f"applctl config set gpu.device_group {GROUP} && applctl reload")
    gpu.wait_hub()
    check = doctor_check(gpu)
    assert check["ok"] and not check["warning"], check
    # The attack of the first test now fails.
    assert plain_user_opens(gpu, 0) == "EACCES"

    b, ready, messages = spawn(gpu, "gdev", {"gpus": "1"})
    assert ready, messages
    assert gpu.unit_props("jupyter-gdev.service", "SupplementaryGroups")["SupplementaryGroups"] == GROUP
    dev = device_access(b, "gdev")["dev"]
    own = [m for m, r in dev.items() if r == "ENXIO"]
    assert len(own) == 1 and all(r == "EPERM" for m, r in dev.items() if m not in own), dev

    b, ready, messages = spawn(gpu, "cdev", {"gpus": "0"})
    assert ready, messages
    assert gpu.unit_props("jupyter-cdev.service", "SupplementaryGroups")["SupplementaryGroups"] == ""
    dev = device_access(b, "cdev")["dev"]
    assert set(dev) == {m for _, m in GPUS} and not any(r in ("ENXIO", "OPEN") for r in dev.values()), dev
