"""GPU utilization samples for the reclaim rule, taken by the daemon as long as it runs."""

from __future__ import annotations

import asyncio
import logging

from .gpus import GpuManager

log = logging.getLogger("jupyterhub-appliance")


async def sample_forever(gpus: GpuManager, gpu_cfg: dict) -> None:
    """One sample every [gpu] sample_interval."""
    while True:
        try:
            await gpus.sample(gpu_cfg["idle_threshold"])
        except Exception:  # a failing sample must not end the sampling
            log.exception("GPU utilization sample failed")
        await asyncio.sleep(gpu_cfg["sample_interval"])
