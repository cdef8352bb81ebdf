"""Which device files a server's device cgroup lets it open (DeviceAllow=), and
back: pure mapping between NVML minor numbers and DeviceAllow= rules."""

from __future__ import annotations

import re

# Every GPU server needs these besides its own /dev/nvidiaN.
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_GPU_NODE = re.compile(r"/dev/nvidia([0-9]+)")


def device_allow(minors: list[int]) -> list[tuple[str, str]]:
    if not minors:
        return []
    return [(f"/dev/nvidia{m}", "rw") for m in minors] + [(d, "rw") for d in CONTROL_DEVICES]


def minors_of(rules: list) -> list[int]:
    return [int(m.group(1)) for path, _perm in rules if (m := _GPU_NODE.fullmatch(path))]
