"""Prometheus metrics of the appliance, served by the hub beside JupyterHub's own.

Per GPU, under the names of NVIDIA's DCGM exporter where the meaning is the same
(DCGM_FI_DEV_GPU_UTIL, _FB_USED, _FB_FREE, _FB_TOTAL, _GPU_TEMP, _POWER_USAGE) with
its labels (gpu, UUID, device, modelName, pci_bus_id, Hostname, and a MIG device's
GPU_I_PROFILE) and the holder as `user`; the rest with an `appliance_` prefix. GPU values come from the hub's copy
of the daemon's report (gpu_report.py), so a scrape never waits on NVML.

Where they are served is [metrics] access: "loopback" (a listener on 127.0.0.1,
serve_loopback), "token" (JupyterHub's /hub/metrics, which wants a token with
read:metrics) or "off".
"""

from __future__ import annotations

import socket
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web
from tornado.httpserver import HTTPServer

from .gpu_report import REPORT, LastGpuReport
from .stop_reasons import REASONS

SPAWNS = Counter("appliance_spawns", "Servers started and answering")
SPAWN_FAILURES = Counter("appliance_spawn_failures", "Spawns that failed, by reason: the daemon's refusal "
                         "(capacity, quota, queue_timeout, ...), invalid_options, cancelled, crashed (the "
                         "server ended while starting), or error",
                         ["reason"])
STOPS = Counter("appliance_server_stops", "Servers stopped without their owner asking, by reason: idle and "
                "max-age (the idle culler), gpu-idle (the GPU reclaimer), admin, oom, crashed", ["reason"])
for _reason in REASONS:
    STOPS.labels(_reason)  # every series exists from the start, at 0

MiB = 2**20
DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "pci_bus_id", "Hostname", "GPU_I_PROFILE", "user"]


class GpuCollector:
    """Gauges from the last GPU report, made at each scrape."""

    def __init__(self, report: LastGpuReport = REPORT, hostname: str | None = None, clock=time.time):
        self.report = report
        self.hostname = hostname or socket.gethostname()
        self.clock = clock

    def collect(self):
        report = self.report.data
        up = GaugeMetricFamily("appliance_gpu_report_up", "1 if the hub's last read of the daemon's GPU report "
                               "succeeded")
        up.add_metric([], 0 if report is None or self.report.error else 1)
        yield up
        if report is None:
            return
        age = GaugeMetricFamily("appliance_gpu_report_age_seconds", "Age of the GPU values below")
        age.add_metric([], max(0.0, self.clock() - self.report.at))
        yield age
        families = {
            "util": GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=DCGM_LABELS),
            "used": GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels=DCGM_LABELS),
            "free": GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=DCGM_LABELS),
            "total": GaugeMetricFamily("DCGM_FI_DEV_FB_TOTAL", "Total framebuffer memory (in MiB).",
                                       labels=DCGM_LABELS),
            "temp": GaugeMetricFamily("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", labels=DCGM_LABELS),
            "power": GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", labels=DCGM_LABELS),
            "held": GaugeMetricFamily("appliance_gpu_held", "1 while a user's server holds the GPU (user label)",
                                      labels=DCGM_LABELS),
            "idle": GaugeMetricFamily("appliance_gpu_idle_seconds", "How long the holder's GPUs have all been "
                                      "idle ([gpu] idle_threshold); absent while busy or free", labels=DCGM_LABELS),
        }
        for g in report.gpus:
            labels = [str(g["index"]), g["uuid"], f"nvidia{g['minor']}", g["name"], g["pci_bus_id"], self.hostname,
                      g.get("profile") or "", ",".join(g.get("holders") or [g.get("holder") or ""])]
            for key, value in (("util", g.get("utilization")), ("used", g["memory_used"] / MiB),
                               ("free", g["memory_free"] / MiB), ("total", g["memory_total"] / MiB),
                               ("temp", g.get("temperature")), ("power", g.get("power_watts")),
                               ("held", 1 if g.get("holder") else 0), ("idle", g.get("idle_seconds"))):
                if value is not None:  # a reading the board does not give is absent, not 0
                    families[key].add_metric(labels, value)
        yield from families.values()
        queue = GaugeMetricFamily("appliance_gpu_queue_length", "Spawns waiting in the GPU queue")
        queue.add_metric([], len(report.waiting))
        yield queue
        kills = CounterMetricFamily("appliance_gpu_share_kills", "GPU processes killed for being over their "
                                    "server's GPU memory share (a shared GPU's seat), since the daemon started")
        kills.add_metric([], report.raw.get("share_kills", 0))
        yield kills


def register(registry=REGISTRY) -> None:
    """Add the GPU collector to the registry JupyterHub's metrics live in (once)."""
    if not getattr(register, "done", False):
        registry.register(GpuCollector())
        register.done = True


class _LoopbackMetrics(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(REGISTRY))


def serve_loopback(port: int) -> HTTPServer:
    """http://127.0.0.1:PORT/metrics, for a Prometheus on this machine; nothing else."""
    server = HTTPServer(web.Application([(r"/metrics", _LoopbackMetrics)]), xheaders=False)
    server.listen(port, "127.0.0.1")
    return server


class MetricsOff(web.RequestHandler):
    """In place of JupyterHub's /hub/metrics unless [metrics] access = "token"."""

    def get(self):
        self.set_status(404)
        self.write("metrics are not served here: see [metrics] access in /etc/jupyterhub/appliance.toml\n")
