"""applctl's requests to the root daemon (list, stop, gpus)."""

from __future__ import annotations

from .. import daemon_client as client
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


def gpus() -> dict:
    """The daemon's GPU report."""
    reply = call({"op": "gpus"})
    reply.pop("ok", None)
    return reply


def gpu_index(report: dict) -> dict[str, int]:
    """GPU UUID -> NVML index, to show GPUs as people know them."""
    return {g["uuid"]: g["index"] for g in report.get("gpus", [])}


def gpu_list(uuids: list[str], index: dict[str, int]) -> str:
    """'#0,#2': the GPUs' indices, told apart from a count."""
    return ",".join(f"#{index[u]}" if u in index else u for u in uuids)


def summary(report: dict) -> str:
    if not report["available"]:
        return report.get("reason") or "no usable NVIDIA GPU: running CPU-only"
    total = len(report["gpus"])
    free = client.free_gpus(report)
    text = f"{free} of {total} GPU{'s' if total != 1 else ''} free (driver {report.get('driver_version')})"
    if report.get("unusable"):
        text += f"; {len(report['unusable'])} unusable"
    waiting = queued(report)
    if waiting:
        text += f"; {len(waiting)} waiting in the queue"
    return text


def queued(report: dict) -> list[dict]:
    """Spawns waiting for a GPU, in queue order (not those granted and starting)."""
    return [q for q in report.get("queue", []) if not q.get("granted")]
