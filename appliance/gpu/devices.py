"""Which device files a server's device cgroup lets it open (DeviceAllow=), and
back: pure mapping between allocatable GPUs (whole, or MIG devices) and DeviceAllow= rules."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from .inventory import GPU

# Every GPU server needs these besides its own /dev/nvidiaN.
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_GPU_NODE = re.compile(r"/dev/nvidia([0-9]+)")


def device_allow(gpus: Iterable[GPU]) -> list[tuple[str, str]]:
    """The rules for these GPUs; two MIG devices of one parent list its node once."""
    nodes = list(dict.fromkeys(n for g in gpus for n in g.device_nodes))
    if not nodes:
        return []
    return [(n, "rw") for n in nodes] + [(d, "rw") for d in CONTROL_DEVICES]


def held(rules: list, gpus: Sequence[GPU]) -> list[str]:
    """The UUIDs of the GPUs whose every device file the rules allow, and "minor:N"
    for a /dev/nvidiaN no known GPU accounts for (one gone from the inventory)."""
    allowed = {path for path, _perm in rules}
    out = [g.uuid for g in gpus if allowed.issuperset(g.device_nodes)]
    known = {g.minor for g in gpus}
    out += [f"minor:{m}" for path in allowed if (m := _minor(path)) is not None and m not in known]
    return out


def _minor(path: str) -> int | None:
    m = _GPU_NODE.fullmatch(path)
    return int(m.group(1)) if m else None
