"""GPU device files: gpu.device_group, the servers that get it, and doctor's check."""

from __future__ import annotations

import grp
import os
import stat

import pytest

from appliance import config
from appliance.cli import doctor
from appliance.daemon import units, validate

from .daemon_fakes import USER, DaemonThread, patch_users

GROUP = "users"  # exists on Debian and Arch, and is nobody's privilege
GID = grp.getgrnam(GROUP).gr_gid


def gpu_cfg(**gpu):
    return config.validate({"daemon": {"min_uid": 1}, "gpu": {"quota": 4, **gpu}})


def test_device_group_is_an_existing_group_of_its_own():
    assert gpu_cfg()["gpu"]["device_group"] == ""
    assert gpu_cfg(device_group=GROUP)["gpu"]["device_group"] == GROUP
    for value, says in [("no-such-group-x", "there is no group no-such-group-x"), ("Bad Name", "an existing group"),
                        (7, "an existing group"), ("root", "not one of daemon.privileged_groups")]:
        with pytest.raises(config.ConfigError) as e:
            gpu_cfg(device_group=value)
        assert "gpu.device_group" in str(e.value) and says in str(e.value), str(e.value)
    with pytest.raises(config.ConfigError, match="not one of daemon.privileged_groups"):
        config.validate({"daemon": {"privileged_groups": ["sudo", GROUP]}, "gpu": {"device_group": GROUP}})


def test_only_a_unit_with_gpus_gets_the_group(tmp_path, monkeypatch):
    spec = validate.SpawnSpec(user="alice", uid=1000, gid=1000, home="/home/alice", device_group=GROUP)
    assert dict(units.properties("jupyter-alice.service", spec, tmp_path / "x.env"))["SupplementaryGroups"].value \
        == [GROUP]
    spec.device_group = ""
    assert "SupplementaryGroups" not in dict(units.properties("jupyter-alice.service", spec, tmp_path / "x.env"))
    # The daemon decides it from its configuration and the GPUs it gave.
    patch_users(monkeypatch, tmp_path)
    with DaemonThread(tmp_path) as d:
        d.daemon.spawns.cfg = gpu_cfg(device_group=GROUP)
        unit = f"jupyter-{USER}.service"
        assert d.request({"op": "spawn", "user": USER, "gpus": 1})["ok"]
        assert d.systemd.units[unit].props["SupplementaryGroups"].value == [GROUP]
        assert d.request({"op": "stop", "user": USER})["ok"]
        assert d.request({"op": "spawn", "user": USER, "gpus": 0})["ok"]
        assert "SupplementaryGroups" not in d.systemd.units[unit].props


def node(mode: int, gid: int = 0) -> os.stat_result:
    return os.stat_result((stat.S_IFCHR | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


PARAMS = "ResmanDebugLevel: 4294967295\nDeviceFileUID: 0\nDeviceFileGID: 990\nDeviceFileMode: 438\n"


def test_the_drivers_parameters_are_read(tmp_path):
    (tmp_path / "params").write_text(PARAMS)
    assert doctor.nvidia_params(tmp_path / "params") == {"DeviceFileUID": 0, "DeviceFileGID": 990,
                                                          "DeviceFileMode": 0o666}
    assert doctor.nvidia_params(tmp_path / "missing") == {}


def test_doctor_on_gpu_device_files(monkeypatch):
    check = doctor.check_gpu_devices
    assert check(gpu_cfg(), {}, {}).ok and "no NVIDIA device files" in check(gpu_cfg(), {}, {}).detail
    c = check(gpu_cfg(), {"DeviceFileMode": 0o666}, {"/dev/nvidia0": node(0o666), "/dev/nvidiactl": node(0o666)})
    assert c.ok and c.warning and "/dev/nvidia0 0666" in c.detail and "ssh" in c.detail and c.fix
    # Closed to a group, but no server gets it: GPU servers would fail.
    c = check(gpu_cfg(), {}, {"/dev/nvidia0": node(0o660, GID)})
    assert not c.ok and "gpu.device_group is not set" in c.detail and f"device_group {GROUP}" in c.fix
    # The group servers get is not the files' group.
    c = check(gpu_cfg(device_group=GROUP), {}, {"/dev/nvidia0": node(0o660, 0)})
    assert not c.ok and "cannot open their GPUs" in c.detail
    monkeypatch.setattr(doctor.users, "members", lambda g: set())
    c = check(gpu_cfg(device_group=GROUP), {}, {"/dev/nvidia0": node(0o660, GID), "/dev/nvidiactl": node(0o660, GID)})
    assert c.ok and not c.warning and GROUP in c.detail
    # A person in the group reaches every GPU outside the units.
    monkeypatch.setattr(doctor.users, "members", lambda g: {"mallory"})
    c = check(gpu_cfg(device_group=GROUP), {}, {"/dev/nvidia0": node(0o660, GID)})
    assert c.ok and c.warning and "mallory" in c.detail
