"""Read the host's GPUs through NVML (pynvml).

read_inventory() never raises: a host without a driver runs CPU-only, and one GPU
that fails (fell off the bus, a query error) is reported apart instead of hiding the
others.

A GPU in MIG mode is not allocatable itself: its MIG devices are, each confined by
its parent's /dev/nvidiaN plus the two nvidia-caps files of its GPU and compute
instance (NVIDIA's "MIG device nodes", minors listed in /proc/driver/nvidia-caps/mig-minors).
The appliance never changes MIG mode or creates instances: that is nvidia-smi's.
"""
from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but never crash without it
    pynvml = None  # type: ignore[assignment]

__all__ = ["GPU", "Inventory", "MIG_MINORS", "read_inventory", "read_processes"]

# What the driver lists as "gpu<minor>/gi<id>/access <minor>" and "…/ci<id>/access <minor>"
MIG_MINORS = Path("/proc/driver/nvidia-caps/mig-minors")
CAPS_DIR = "/dev/nvidia-caps"
_PROFILE = re.compile(r" MIG (\S+)$")  # the driver's MIG device names end with their profile

_T = TypeVar("_T")
# pynvml's init/shutdown reference count is process-wide: serialise readers so one
# reader's nvmlShutdown never lands in the middle of another's queries.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class GPU:
    index: int  # NVML index (not stable across cgroups, not the /dev minor)
    minor: int  # /dev/nvidia<minor>, what DeviceAllow needs
    uuid: str  # what CUDA_VISIBLE_DEVICES needs
    name: str
    memory_total: int  # bytes
    memory_free: int
    memory_used: int
    pci_bus_id: str
    utilization: int | None  # GPU %, None where the driver does not report it (MIG mode)
    mig_enabled: bool
    temperature: int | None = None  # degrees Celsius; None where the driver does not report it
    power_watts: float | None = None  # power draw; None where the board does not report it
    # A MIG device (uuid MIG-...): its parent GPU, its profile (1g.10gb) and the minors
    # of its GPU and compute instance's access files under /dev/nvidia-caps.
    parent: str | None = None
    profile: str | None = None
    caps: tuple[int, ...] = ()

    @property
    def device_nodes(self) -> tuple[str, ...]:
        """The device files that are this GPU, and that no other allocatable GPU shares
        all of: what DeviceAllow= grants and what tells who holds it."""
        return (f"/dev/nvidia{self.minor}", *(f"{CAPS_DIR}/nvidia-cap{c}" for c in self.caps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inventory:
    available: bool
    driver_version: str | None = None
    gpus: tuple[GPU, ...] = ()
    unusable: tuple[tuple[int, str], ...] = ()  # (NVML index, reason)
    reason: str | None = None  # why NVML is unavailable

    def by_uuid(self, uuid: str) -> GPU | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "driver_version": self.driver_version,
            "gpus": [g.to_dict() for g in self.gpus],
            "unusable": [{"index": i, "reason": r} for i, r in self.unusable],
            "reason": self.reason,
        }


def _cpu_only(why: str) -> Inventory:
    return Inventory(available=False, reason=f"NVML not available ({why}): running CPU-only")


def _query(what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call an NVML function; on failure say which query failed and why."""
    try:
        return fn(*args, **kwargs)
    except pynvml.NVMLError as e:
        raise _QueryFailed(f"{e} (reading {what})") from e


class _QueryFailed(Exception):
    pass


def _memory(handle: Any) -> tuple[int, int, int]:
    # v2 separates driver-reserved memory from "used"; drivers before 510 lack it.
    try:
        m = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_NotSupported,
            pynvml.NVMLError_ArgumentVersionMismatch):
        m = _query("memory", pynvml.nvmlDeviceGetMemoryInfo, handle)
    except pynvml.NVMLError as e:
        raise _QueryFailed(f"{e} (reading memory)") from e
    return int(m.total), int(m.free), int(m.used)


def _utilization(handle: Any) -> int | None:
    try:
        return int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except pynvml.NVMLError_NotSupported:  # e.g. MIG mode
        return None
    except pynvml.NVMLError as e:
        raise _QueryFailed(f"{e} (reading utilization)") from e


def _optional(fn: Callable[..., _T], *args: Any) -> _T | None:
    """A reading for the dashboard only: many boards (and vGPUs) report no temperature
    or power, and a failing sensor must not take the GPU out of allocation."""
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _mig_enabled(handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:  # GPU without MIG
        return False
    except pynvml.NVMLError as e:
        raise _QueryFailed(f"{e} (reading MIG mode)") from e
    return current == pynvml.NVML_DEVICE_MIG_ENABLE


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read_gpu(index: int, handle: Any) -> GPU:
    total, free, used = _memory(handle)
    pci = _query("PCI info", pynvml.nvmlDeviceGetPciInfo_v3, handle)
    return GPU(
        index=index,
        minor=int(_query("minor number", pynvml.nvmlDeviceGetMinorNumber, handle)),
        uuid=_text(_query("UUID", pynvml.nvmlDeviceGetUUID, handle)),
        name=_text(_query("name", pynvml.nvmlDeviceGetName, handle)),
        memory_total=total,
        memory_free=free,
        memory_used=used,
        pci_bus_id=_text(pci.busId),
        utilization=_utilization(handle),
        mig_enabled=_mig_enabled(handle),
        temperature=_optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        power_watts=None if (mw := _optional(pynvml.nvmlDeviceGetPowerUsage, handle)) is None else mw / 1000,
    )


def read_mig_minors(path: Path = MIG_MINORS) -> dict[str, int]:
    """"gpu0/gi1/access" -> its nvidia-caps minor; empty without the file."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    return {f[0]: int(f[1]) for line in text.splitlines() if len(f := line.split()) == 2 and f[1].isdigit()}


def _mig_device(parent: GPU, handle: Any, minors: dict[str, int], caps_dir: Path) -> GPU:
    uuid = _text(_query("MIG device UUID", pynvml.nvmlDeviceGetUUID, handle))
    name = _text(_query(f"{uuid} name", pynvml.nvmlDeviceGetName, handle))
    gi = int(_query(f"{uuid} GPU instance id", pynvml.nvmlDeviceGetGpuInstanceId, handle))
    ci = int(_query(f"{uuid} compute instance id", pynvml.nvmlDeviceGetComputeInstanceId, handle))
    files = (f"gpu{parent.minor}/gi{gi}/access", f"gpu{parent.minor}/gi{gi}/ci{ci}/access")
    caps = tuple(minors.get(f, -1) for f in files)
    if -1 in caps:
        missing = files[caps.index(-1)]
        raise _QueryFailed(f"MIG device {uuid}: {missing} is not in {MIG_MINORS}, so it cannot be confined "
                           "to its own instance")
    for c in caps:
        if not (caps_dir / f"nvidia-cap{c}").exists():
            raise _QueryFailed(f"MIG device {uuid}: no {caps_dir}/nvidia-cap{c}; create it with "
                               f"nvidia-modprobe -f /proc/driver/nvidia/capabilities/{files[caps.index(c)]}")
    total, free, used = _memory(handle)
    m = _PROFILE.search(name)
    return GPU(index=parent.index, minor=parent.minor, uuid=uuid, name=name, memory_total=total,
               memory_free=free, memory_used=used, pci_bus_id=parent.pci_bus_id, utilization=_utilization(handle),
               mig_enabled=True, temperature=parent.temperature, power_watts=parent.power_watts,
               parent=parent.uuid, profile=m.group(1) if m else None, caps=caps)


def _read_devices(index: int, minors: dict[str, int], caps_dir: Path) -> tuple[list[GPU], list[str]]:
    """The allocatable devices of one GPU (itself, or its MIG devices), and what
    keeps any of them out of allocation."""
    handle = _query("handle", pynvml.nvmlDeviceGetHandleByIndex, index)
    gpu = _read_gpu(index, handle)
    if not gpu.mig_enabled:
        return [gpu], []
    devices: list[GPU] = []
    problems: list[str] = []
    for slot in range(int(_query("MIG device count", pynvml.nvmlDeviceGetMaxMigDeviceCount, handle))):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError_NotFound:
            continue  # an empty slot
        except pynvml.NVMLError as e:
            problems.append(f"{e} (reading MIG device {slot})")
            continue
        try:
            devices.append(_mig_device(gpu, mig, minors, caps_dir))
        except _QueryFailed as e:
            problems.append(str(e))
    if not devices and not problems:
        problems.append("in MIG mode with no MIG devices: create them with nvidia-smi mig -cgi PROFILES -C, "
                        "or turn MIG mode off (nvidia-smi -mig 0)")
    return devices, problems


def _read_all(mig_minors: Path, caps_dir: Path) -> Inventory:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return _cpu_only("libnvidia-ml.so.1 not found")
    except pynvml.NVMLError as e:
        return _cpu_only(f"nvmlInit failed: {e}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        count = pynvml.nvmlDeviceGetCount()
        gpus: list[GPU] = []
        unusable: list[tuple[int, str]] = []
        minors = read_mig_minors(mig_minors)
        for index in range(count):
            try:
                devices, problems = _read_devices(index, minors, caps_dir)
                gpus += devices
                unusable += [(index, p) for p in problems]
            except _QueryFailed as e:
                unusable.append((index, str(e)))
        return Inventory(True, driver, tuple(gpus), tuple(unusable))
    except pynvml.NVMLError as e:
        return _cpu_only(f"reading the GPU list failed: {e}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def read_inventory(mig_minors: Path = MIG_MINORS, caps_dir: Path = Path(CAPS_DIR)) -> Inventory:
    """The driver version and allocatable GPUs as NVML sees them now. Never raises."""
    if pynvml is None:
        return _cpu_only("the nvidia-ml-py package is not installed")
    with _LOCK:
        try:
            return _read_all(mig_minors, caps_dir)
        except Exception as e:  # a broken library must not take the daemon down
            return _cpu_only(f"unexpected error: {type(e).__name__}: {e}")


def read_processes(uuids: list[str]) -> dict[str, list[tuple[int, int]]]:
    """UUID -> (pid, bytes of GPU memory) of each compute process on that GPU, as
    NVML counts them (the daemon's PID namespace is the host's). A GPU that cannot
    be read is left out; never raises."""
    if pynvml is None or not uuids:
        return {}
    out: dict[str, list[tuple[int, int]]] = {}
    with _LOCK:
        try:
            pynvml.nvmlInit()
        except Exception:
            return {}
        try:
            for uuid in uuids:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                except pynvml.NVMLError:
                    continue
                # usedGpuMemory is None where the driver cannot tell (Windows WDDM, some vGPUs)
                out[uuid] = [(int(p.pid), int(p.usedGpuMemory or 0)) for p in procs]
        except Exception:
            return {}
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
    return out
