"""GPU samples taken by the daemon as long as it runs: utilization for the reclaim
rule, and the memory of shared GPUs' seats (gpu_share.py)."""

from __future__ import annotations

import asyncio
import logging

from .gpus import GpuManager

log = logging.getLogger("jupyterhub-appliance")


async def sample_forever(gpus: GpuManager, gpu_cfg: dict) -> None:
    """One sample every [gpu] sample_interval: utilization, and shared GPUs' memory."""
    while True:
        try:
            await gpus.sample(gpu_cfg["idle_threshold"])
        except Exception:  # a failing sample must not end the sampling
            log.exception("GPU utilization sample failed")
        try:
            await gpus.check_shares(gpu_cfg)
        except Exception:
            log.exception("GPU memory share check failed")
        await asyncio.sleep(gpu_cfg["sample_interval"])
