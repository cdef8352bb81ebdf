"""applctl's requests to the root daemon (list, stop, gpus), with its failures as applctl's."""

from __future__ import annotations

from .. import daemon_client as client
from ..protocol import GpuReport
from .output import Failure


def call(request: dict, timeout: float = 60) -> dict:
    try:
        return client.call_sync(request, timeout=timeout)
    except client.DaemonError as e:
        raise Failure(str(e)) from None
    except OSError as e:  # e.g. the daemon stopped mid-answer
        raise Failure(f"the appliance daemon did not answer ({e}); "
                      "check: systemctl status jupyterhub-appliance") from None


def servers() -> dict[str, dict]:
    """Running servers by user name: unit, state, GPU UUIDs."""
    return {s["user"]: s for s in call({"op": "list"})["servers"]}


def stop(name: str) -> None:
    call({"op": "stop", "user": name})


def gpus() -> GpuReport:
    return GpuReport.read(call({"op": "gpus"}))


def gpu_labels(report: GpuReport) -> dict[str, str]:
    """GPU UUID -> how people know it: its NVML index, or for a MIG device its
    parent's index and its place among the parent's MIG devices (nvidia-smi -L's order)."""
    out: dict[str, str] = {}
    seen: dict[int, int] = {}
    for g in report.gpus:
        if g.get("parent"):
            n = seen[g["index"]] = seen.get(g["index"], -1) + 1
            out[g["uuid"]] = f"{g['index']}.{n}"
        else:
            out[g["uuid"]] = str(g["index"])
    return out


def gpu_list(uuids: list[str], index: dict[str, str]) -> str:
    """'#0,#2' ('#3.1' a MIG device): the GPUs as people know them, told apart from a count."""
    return ",".join(f"#{index[u]}" if u in index else u for u in uuids)


def summary(report: GpuReport) -> str:
    if not report.available:
        return report.reason or "no usable NVIDIA GPU: running CPU-only"
    total = len(report.gpus)
    text = f"{report.free} of {total} GPU{'s' if total != 1 else ''} free (driver {report.driver_version})"
    if report.unusable:
        text += f"; {len(report.unusable)} unusable"
    if report.waiting:
        text += f"; {len(report.waiting)} waiting in the queue"
    return text
